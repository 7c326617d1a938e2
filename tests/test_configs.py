"""Every config builds without weights; the paper configs have the official parameter counts."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_escnet  # noqa: F401
from mmseg.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))

# catseg_reference.md §9: CLIP + aggregator/decoder + upsample1/2; trainable = CLIP Wq/Wv + the rest,
# less the last vision block's Wq, which the dense forward never uses (official: always zero gradient).
OFFICIAL_COUNTS = {
    'catseg_vitb16.py': (149_620_737 + 2_308_961 + 2_359_680, 20_447_232 - 768**2 + 2_308_961 + 2_359_680),
    'catseg_vitl14.py': (427_944_193 + 2_636_641 + 3_146_112, 64_487_424 - 1024**2 + 2_636_641 + 3_146_112),
}

# ESC-Net: paper Table 4 gives 451.3M for ViT-L/14; the issue allows 1 %.
PAPER_TOTALS = {'escnet_vitl14.py': 451.3e6}


def _build(path):
    cfg = Config.fromfile(path)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds_without_weights(path):
    model = _build(path)
    assert sum(p.numel() for p in model.parameters()) > 0
    name = osp.basename(path)
    if name in OFFICIAL_COUNTS:
        total, trainable = OFFICIAL_COUNTS[name]
        assert sum(p.numel() for p in model.parameters()) == total
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    if name in PAPER_TOTALS:
        total = sum(p.numel() for p in model.parameters())
        assert abs(total - PAPER_TOTALS[name]) / PAPER_TOTALS[name] < 0.01, total

