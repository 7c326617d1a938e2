"""Test-time class filtering (``test_cfg.class_filter``): LMSeg's top-k and SED's per-pixel top-k
rules, for CAT-Seg and ESC-Net."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.layers.cost_volume import (check_class_filter, correlation,
                                                    filter_classes)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
CONFIGS = ['catseg_tiny_synthetic.py', 'escnet_tiny_synthetic.py']
VOCABULARY = ['sky', 'grass', 'sand', 'snow', 'brick', 'water', 'road', 'tree', 'wall']


def _model(name, **test_cfg):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    cfg.model.vocabulary = VOCABULARY
    cfg.model.test_cfg = dict(mode='whole', **test_cfg)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def _images():
    return torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))


def _initial_correlation(model, images):
    dense, *_ = model.backbone(images)
    return correlation(dense, model.text_embeddings()[None])  # (1, P, T, h, w)


@pytest.mark.parametrize('name', CONFIGS)
def test_a_filter_keeping_every_class_changes_nothing(name):
    model = _model(name)
    with torch.no_grad():
        reference = model._forward(_images())
        for rule in (dict(type='topk', k=len(VOCABULARY)), dict(type='pixel_topk', k=20)):
            model.test_cfg = dict(mode='whole', class_filter=rule)
            assert torch.equal(model._forward(_images()), reference), rule


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.parametrize('rule', [dict(type='topk', k=3), dict(type='pixel_topk', k=1)])
def test_filtered_out_classes_never_win(name, rule):
    model = _model(name, class_filter=rule)
    images = _images()
    with torch.no_grad():
        kept = filter_classes(_initial_correlation(model, images), rule)[0]
        logits = model._forward(images)  # (1, T, 96, 96)
        labels = model.predict(images)[0].pred_sem_seg.data
    dropped = sorted(set(range(len(VOCABULARY))) - set(kept.tolist()))
    assert 0 < len(kept) < len(VOCABULARY)
    assert (logits[0, dropped] == -100).all() and (logits[0, kept] > -100).all()
    assert set(labels.unique().tolist()) <= set(kept.tolist())


def test_filter_rules():
    corr = torch.zeros(1, 2, 5, 2, 2)
    corr[0, 0, 3] = 0.9   # class 3 is the best everywhere (template 0)
    corr[0, 1, 1, 0, 0] = 0.8  # class 1 peaks at one pixel (template 1)
    corr[0, :, 4, 1, 1] = 0.85  # class 4: second best at one pixel
    assert filter_classes(corr, dict(type='topk', k=2)).tolist() == [[3, 4]]
    # per pixel (templates averaged): pixel (0, 0): 3 (0.45), 1 (0.4); (1, 1): 4 (0.85), 3
    assert filter_classes(corr, dict(type='pixel_topk', k=1)).tolist() == [[3, 4]]
    assert filter_classes(corr, dict(type='topk', k=5)) is None
    assert filter_classes(corr, None) is None


@pytest.mark.parametrize('bad', [dict(type='top', k=3), dict(type='topk'), dict(type='topk', k=0),
                                 dict(type='topk', k=2, extra=1), 'topk'])
def test_bad_filters_are_refused_when_the_model_is_built(bad):
    with pytest.raises(ValueError, match='class_filter'):
        check_class_filter(bad)
    with pytest.raises(ValueError, match='class_filter'):
        _model('catseg_tiny_synthetic.py', class_filter=bad)
