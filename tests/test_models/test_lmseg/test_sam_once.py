"""LMSeg under CAT-Seg's sliding + global protocol: SAM once per image, views read their boxes."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.segmentors.lmseg_encoder_decoder import crop_canvas_features

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def test_crops_sample_the_box_at_the_canvas_cell_centres():
    """A feature map linear in the cell coordinates is sampled exactly where the box's grid lies:
    output cell i of a box [x0, x1) (fractions of the canvas side) with G cells reads the canvas
    cell coordinate (x0 + (i + 0.5) (x1 - x0) / G) G - 0.5."""
    g, canvas = 16, 64.0
    cols = torch.arange(g, dtype=torch.float64)
    feats = torch.stack([cols.expand(g, g), cols[:, None].expand(g, g)])[None]  # (1, 2, G, G)
    boxes = torch.tensor([[0, 0, 64, 64], [8, 16, 40, 48], [24, 4, 56, 36]], dtype=torch.float64)
    out = crop_canvas_features(feats, boxes / canvas)
    assert out.shape == (3, 2, g, g)
    torch.testing.assert_close(out[0], feats[0])  # the whole canvas: the features themselves
    centres = (torch.arange(g, dtype=torch.float64) + 0.5) / g
    for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        expect_x = ((x0 + centres * (x1 - x0)) * g / canvas - 0.5).clamp(0, g - 1)
        expect_y = ((y0 + centres * (y1 - y0)) * g / canvas - 0.5).clamp(0, g - 1)
        torch.testing.assert_close(out[k, 0], expect_x.expand(g, g))
        torch.testing.assert_close(out[k, 1], expect_y[:, None].expand(g, g))


def _model(**kwargs):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'lmseg_tiny_synthetic.py'))
    init_default_scope('mmseg')
    cfg.model.update(kwargs)
    cfg.model.test_cfg = dict(mode='sliding_global', kernel=96, overlap=0.333, out_size=(160, 160))
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


@pytest.mark.parametrize('per_view', [False, True])
def test_sam_runs_once_per_image_unless_per_view(per_view):
    model = _model(sam_per_view=per_view)
    inputs = []
    model.sam_encoder.register_forward_pre_hook(lambda m, args: inputs.append(args[0].shape))
    with torch.no_grad():
        sample = model.predict(torch.randn(1, 3, 120, 140))[0]
    assert sample.pred_sem_seg.data.shape == (1, 120, 140)
    # 2 x 2 crops of 96 px and the global view, at once; or the 160 x 160 canvas once
    assert inputs == ([(5, 3, 96, 96)] if per_view else [(1, 3, 160, 160)])
    assert model._view_sam_feats is None  # nothing left behind for the next forward


def test_views_read_their_boxes_of_the_canvas_features():
    """Every view's fused features come from its box of the canvas's SAM features: the global
    view's from all of them, a crop's from its 96 px window."""
    model = _model()
    seen = []
    model.fusion.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    image = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        model.predict(image)
        canvas = model.sam_encoder(image)  # the canvas equals the image at 160 x 160
    sam = seen[0]  # (5, S, G, G): 4 crops, then the global view
    torch.testing.assert_close(sam[-1:], canvas)
    boxes = torch.tensor([[0, 0, 96, 96], [64, 64, 160, 160]], dtype=canvas.dtype)
    expected = crop_canvas_features(canvas, boxes / 160)
    torch.testing.assert_close(sam[[0, 3]], expected)


def test_whole_mode_and_training_run_sam_on_their_inputs():
    model = _model()
    model.test_cfg = dict(mode='whole')
    inputs = []
    model.sam_encoder.register_forward_pre_hook(lambda m, args: inputs.append(args[0].shape))
    with torch.no_grad():
        model.predict(torch.randn(2, 3, 96, 96))
    assert inputs == [(2, 3, 96, 96)]
