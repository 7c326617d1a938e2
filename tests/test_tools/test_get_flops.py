"""``tools/analysis/get_flops.py`` against an independent count.

The tool counts on the ``meta`` device with PyTorch's dispatcher-level
:class:`~torch.utils.flop_counter.FlopCounterMode`. The reference traces the same forward on real
tensors with TorchScript and counts it with MMEngine's :class:`~mmengine.analysis.FlopAnalyzer`
(the fvcore counter: its own per-operator formulas, and here ESC-Net's real pseudo prompt
generator instead of the tool's shape-only stand-in). Both count multiply-accumulates; the
reference is restricted to the operators the tool counts (matrix products and convolutions).
"""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = ['catseg_tiny_synthetic.py', 'escnet_tiny_synthetic.py', 'errseg_tiny_synthetic.py']
#: the FlopAnalyzer operators that are matrix products or convolutions (the tool counts these)
PRODUCTS = ('conv', 'linear', 'matmul', 'bmm', 'einsum', 'addmm', 'scaled_dot_product_attention')


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/analysis/get_flops.py')


def _config(name: str) -> Config:
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def _sdpa_macs(inputs, outputs) -> int:
    """fvcore has no formula for fused attention: Q K^T and A V, (..., L, E) x (..., S, E)."""
    q, k, v = (get_shape(i) for i in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


class _Forward(torch.nn.Module):
    """The segmentor's logits of a batch, as a module FlopAnalyzer can trace."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model._forward(images)


def _reference(tool, name: str) -> dict:
    """GMACs of the backbone, neck (without the pseudo prompt generator) and decode head."""
    init_default_scope('mmseg')
    cfg = tool._prepare(_config(name), None)
    cfg.model.test_cfg = dict(mode='whole')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    model.text_embeddings()  # cached, as the tool counts it
    size = model.clip_resolution
    analyzer = FlopAnalyzer(_Forward(model), (torch.randn(1, 3, *size), ))
    analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_macs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    table = analyzer.by_module_and_operator()

    def gmacs(module):
        return sum(n for op, n in table.get(module, {}).items() if op in PRODUCTS) / 1e9

    return dict(backbone=gmacs('model.backbone'),
                neck=gmacs('model.neck') - gmacs('model.neck.ppg'),
                decode_head=gmacs('model.decode_head'))


@pytest.mark.parametrize('name', CONFIGS)
def test_counts_equal_an_independent_counter(name, tool):
    cfg = _config(name)
    cfg.model.test_cfg = dict(mode='whole')
    counted = tool.count(cfg)
    reference = _reference(tool, name)
    for part, expected in reference.items():
        assert expected > 0
        assert counted['modules'][part] == pytest.approx(expected, rel=1e-3), part
    assert counted['gmacs'] == pytest.approx(sum(reference.values()), rel=1e-3)
    assert counted['params'] == sum(
        p.numel() for p in MODELS.build(tool._prepare(_config(name), None).model).parameters())


def test_official_cost_vocabulary_size_views_and_json(tmp_path, tool):
    """The official computation costs more; per-class work grows with the vocabulary; CAT-Seg's
    sliding + global protocol counts its 5 views, mmseg's slide its crops; ``--json`` writes
    the documented keys."""
    out = str(tmp_path / 'flops.json')
    result = tool.main([osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'),
                        '--num-classes', '40', '--json', out])
    with open(out, encoding='utf-8') as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(result))
    assert {'params', 'gmacs', 'text_gmacs', 'modules'} <= set(written)
    assert written['num_classes'] == 40 and written['views'] == 1
    assert written['official_gmacs'] > written['gmacs']  # padding and guidance, per class
    small = tool.count(_config('catseg_tiny_synthetic.py'), 20)
    assert small['modules']['backbone'] == pytest.approx(result['modules']['backbone'])
    assert small['text_gmacs'] == pytest.approx(result['text_gmacs'] / 2)
    assert result['modules']['neck'] > 1.5 * small['modules']['neck']
    cfg = _config('catseg_tiny_synthetic.py')
    cfg.model.test_cfg = dict(mode='sliding_global')  # 640 px, 384 px crops
    sliding = tool.count(cfg, 20)
    assert sliding['views'] == 5  # 4 crops and the global view
    assert sliding['modules']['backbone'] == pytest.approx(5 * small['modules']['backbone'])
    cfg.model.test_cfg = dict(mode='slide', crop_size=(96, 96), stride=(64, 64))
    slide = tool.count(cfg, 20, shape=(160, 160))
    assert slide['views'] == 4  # mmseg's 2 x 2 crops
    assert slide['modules']['backbone'] == pytest.approx(4 * small['modules']['backbone'])


def test_topk_filter_counts_only_the_kept_classes_and_pixel_topk_is_refused(tool):
    cfg = _config('escnet_tiny_synthetic.py')
    cfg.model.test_cfg = dict(mode='whole', class_filter=dict(type='topk', k=4))
    filtered = tool.count(cfg, 40)
    four = tool.count(_config('escnet_tiny_synthetic.py'), 4)
    assert filtered['num_classes'] == 40
    assert filtered['gmacs'] == pytest.approx(four['gmacs'], rel=1e-2)
    cfg.model.test_cfg.class_filter = dict(type='pixel_topk', k=2)
    with pytest.raises(ValueError, match='pixel_topk'):
        tool.count(cfg)


@pytest.mark.parametrize('shape', [['0', '5'], ['-3', '5'], ['4', 'x']])
def test_a_shape_that_is_not_positive_is_refused(tool, shape, capsys):
    config = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
    with pytest.raises(SystemExit):
        tool.main([config, '--shape', *shape])
    assert 'argument --shape: expected a positive int' in capsys.readouterr().err
    with pytest.raises(ValueError, match=r'shape must be two positive ints \(H, W\), got \(0, 5\)'):
        tool.count(_config('catseg_tiny_synthetic.py'), 4, shape=(0, 5))
