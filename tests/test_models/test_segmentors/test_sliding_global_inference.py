"""CAT-Seg's sliding + global inference protocol, against a literal reading of the official code.

``official_protocol`` below follows ``CATSeg.inference_sliding_window`` step by step (nn.Unfold /
nn.Fold, as the official code does); our implementation places crops by offsets instead, so the
two are independent formulations of the same numbers.
"""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.structures import PRUNED_LOGIT
from mmseg_escnet.models.segmentors.sliding_global_inference import (crop_offsets,
                                                                     sliding_global_inference)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def official_protocol(forward, image, kernel, overlap, out_res):
    """The official algorithm on one (1, 3, H, W) image, up to the final resize."""
    stride = int(kernel * (1 - overlap))
    unfold = nn.Unfold(kernel_size=kernel, stride=stride)
    fold = nn.Fold(out_res, kernel_size=kernel, stride=stride)
    squashed = F.interpolate(image, size=out_res, mode='bilinear', align_corners=False)[0]
    crops = unfold(squashed).T.reshape(-1, 3, kernel, kernel)          # (L, 3, k, k)
    global_image = F.interpolate(image, size=(kernel, kernel), mode='bilinear',
                                 align_corners=False)
    views = torch.cat((crops, global_image))
    outputs = F.interpolate(forward(views), size=kernel, mode='bilinear', align_corners=False)
    outputs = outputs.sigmoid()
    global_output = F.interpolate(outputs[-1:], size=out_res, mode='bilinear',
                                  align_corners=False)
    outputs = outputs[:-1]
    outputs = fold(outputs.flatten(1).T) / fold(unfold(torch.ones([1] + list(out_res))))
    return (outputs + global_output) / 2


class TinyNet(nn.Module):
    """Stand-in network: (V, 3, k, k) -> logits (V, T, k/4, k/4), position dependent."""

    def __init__(self, num_classes=6):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, num_classes, 3, padding=1)

    def forward(self, x):
        return self.conv(F.avg_pool2d(x, 4))


@pytest.mark.parametrize('kernel,overlap,out_res,size', [
    (384, 0.333, (640, 640), (480, 700)),   # the official setting: 2 x 2 crops + global view
    (48, 0.5, (96, 120), (70, 50)),         # 3 x 4 crops, non-square canvas
])
def test_matches_the_official_algorithm(kernel, overlap, out_res, size):
    net = TinyNet()
    torch.manual_seed(1)
    image = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = official_protocol(net, image, kernel, overlap, out_res)
        ours, classes = sliding_global_inference(net, image, kernel=kernel, overlap=overlap,
                                                 out_size=out_res)
        chunked, _ = sliding_global_inference(net, image, kernel=kernel, overlap=overlap,
                                              out_size=out_res, views_per_batch=2)
    assert ours.shape == (1, 6, *out_res) and classes.tolist() == list(range(6))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked, ours, rtol=0, atol=1e-6)
    assert ours.min() >= 0 and ours.max() <= 1


class PruningNet(TinyNet):
    """TinyNet whose class 2 is pruned in every view and class 4 in the global view only."""

    def forward(self, x):
        logits = super().forward(x)
        logits[:, 2] = PRUNED_LOGIT
        logits[-1:, 4] = PRUNED_LOGIT
        return logits


def test_only_classes_kept_in_some_view_are_averaged():
    net = PruningNet()
    image = torch.randn(1, 3, 70, 50, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = official_protocol(net, image, 48, 0.5, (96, 120))        # (1, 6, 96, 120)
        probs, classes = sliding_global_inference(net, image, kernel=48, overlap=0.5,
                                                  out_size=(96, 120))
    assert classes.tolist() == [0, 1, 3, 4, 5]
    torch.testing.assert_close(probs, expected[:, classes], rtol=0, atol=1e-6)
    assert expected[:, 2].max() < 1e-40  # what the dense canvas held for the dropped class


def test_crop_offsets_and_errors():
    assert crop_offsets(640, 384, 256) == [0, 256]
    assert crop_offsets(384, 384, 256) == [0]
    with pytest.raises(ValueError, match='uncovered'):
        crop_offsets(600, 384, 256)
    with pytest.raises(ValueError, match='do not fit'):
        crop_offsets(300, 384, 256)


@pytest.fixture(scope='module')
def model():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'))
    cfg.model.test_cfg = dict(mode='sliding_global', kernel=48, overlap=0.333, out_size=(80, 80))
    cfg.model.data_preprocessor.test_cfg = dict(size_divisor=32)   # pads 70 x 50 to 96 x 64
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def test_segmentor_mode_unpads_and_resizes_to_the_original_size(model):
    image = torch.randint(0, 256, (3, 70, 50), dtype=torch.uint8)
    sample = SegDataSample(metainfo=dict(ori_shape=(140, 100), img_shape=(70, 50)))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), training=False)
    assert data['inputs'].shape[-2:] == (96, 64)   # padded by the preprocessor
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])[0]
        unpadded = data['inputs'][..., :70, :50]
        probs = official_protocol(model._forward, unpadded, 48, 0.333, (80, 80))
    expected = F.interpolate(probs, size=(140, 100), mode='bilinear', align_corners=False)[0]
    assert out.seg_logits.data.shape == (5, 140, 100)
    # logits in every mode: the logit of the protocol's averaged probabilities
    torch.testing.assert_close(out.seg_logits.data.sigmoid(), expected, rtol=0, atol=1e-6)
    assert torch.equal(out.pred_sem_seg.data, expected.argmax(0, keepdim=True))
