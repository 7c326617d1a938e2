"""The per-class work shared across classes (guidance shares, class-attention padding, see
:mod:`mmseg_escnet.models.layers.official_cost`) gives the official computation's logits."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.layers.official_cost import official_cost

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.parametrize('name', ['catseg_tiny_synthetic.py', 'escnet_tiny_synthetic.py'])
@pytest.mark.parametrize('training', [True, False])
def test_shared_work_equals_the_official_computation(name, training):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    cfg.model.vocabulary = ['sky', 'grass', 'sand', 'snow', 'brick']
    cfg.model.neck.pad_len = 8  # the tiny configs do not pad; the paper configs pad to 256
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train(training)
    for p in model.parameters():  # no zero-initialised padding or biases hiding a mistake
        p.data.normal_(0, 0.02 if p.dim() > 1 else 0.5)
    images = torch.randn(2, 3, *model.clip_resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        shared = model._forward(images)
        switched = [m for m in model.modules() if hasattr(m, 'official_cost')]
        assert len(switched) > 3
        with official_cost(model):
            assert all(m.official_cost for m in switched)
            official = model._forward(images)
    assert not any(m.official_cost for m in switched)
    assert shared.shape == (2, 5, *shared.shape[-2:])
    assert official.std() > 1e-3
    torch.testing.assert_close(shared, official, rtol=1e-5, atol=1e-6 * official.abs().max())
