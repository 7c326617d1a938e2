"""ESC-Net's decoder (§3.6): CAT-Seg's U-Net head configured with bilinear upsampling; stages,
class chunking, mmseg API, sizes."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmengine.config import Config

from mmseg_escnet.models.decode_heads.catseg_head import CATSegHead
from mmseg_escnet.models.layers.upsampling import Up
from mmseg_escnet.models.structures import DecodeInputs

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def ESCNetHead(**kwargs) -> CATSegHead:  # noqa: N802  (reads like the model part it builds)
    """The decode head of ESC-Net's configs (CATSegHead, bilinear, 256-wide cost volume)."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'escnet_vitb16.py')).model.decode_head
    cfg.update(kwargs)
    return MODELS.build(cfg)

CLIP_W, HID, RES = 24, 16, 4


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module


def _tiny(cls=ESCNetHead, **kwargs):
    head = cls(clip_width=CLIP_W, upsample_dims=(12, 6), decoder_guidance_proj_dims=(8, 4),
               decoder_dims=(32, 16), hidden_dim=HID, num_classes=7, **kwargs)
    return _randomize(head).eval()


def _inputs(b=2, t=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    cost = torch.randn(b, HID, t, RES, RES, generator=gen)
    clip = [torch.randn(b, CLIP_W, RES, RES, generator=gen) for _ in range(2)]
    return cost, clip


def _double_conv_by_hand(x, seq):
    """[conv3x3 (no bias), GroupNorm, ReLU] x 2 with the weights of ``seq``."""
    for conv, gn in ((seq[0], seq[1]), (seq[3], seq[4])):
        x = F.conv2d(x, conv.weight, padding=1)
        x = F.relu(F.group_norm(x, gn.num_groups, gn.weight, gn.bias, eps=gn.eps))
    return x


def test_bilinear_stage_by_hand():
    up = _randomize(Up(in_channels=2, out_channels=16, guidance_channels=1,
                       upsample_mode='bilinear'))
    assert isinstance(up.up, nn.Upsample) and not list(up.up.parameters())
    assert up.conv.double_conv[0].in_channels == 3  # in + guidance
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2 * 2, 2, 2, 2, generator=gen)  # B=2 images x T=2 classes
    g = torch.randn(2, 1, 4, 4, generator=gen)
    # bilinear x2, align_corners=False, on a 2x2 map: out = W x W^T with edge clamping
    weights = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    upsampled = torch.einsum('ih,nchw,jw->ncij', weights, x, weights)  # (4, 2, 4, 4)
    fused = torch.cat([upsampled, g.repeat_interleave(2, dim=0)], dim=1)  # (4, 3, 4, 4)
    expected = _double_conv_by_hand(fused, up.conv.double_conv)
    with torch.no_grad():
        torch.testing.assert_close(up.up(x), upsampled)
        torch.testing.assert_close(up(x, g), expected, atol=1e-5, rtol=1e-5)


def test_up_modes_and_errors():
    up_t = Up(in_channels=32, out_channels=16, guidance_channels=8)
    assert up_t.upsample_mode == 'transposed' and isinstance(up_t.up, nn.ConvTranspose2d)
    assert up_t.conv.double_conv[0].in_channels == 32
    # bilinear allows guidance wider than the input (no channel split needed)
    up_b = Up(in_channels=16, out_channels=16, guidance_channels=32, upsample_mode='bilinear')
    g = torch.randn(1, 32, 10, 10)
    assert up_b(torch.randn(3, 16, 5, 5), g).shape == (3, 16, 10, 10)
    with pytest.raises(ValueError, match='upsample_mode'):
        Up(in_channels=16, out_channels=16, guidance_channels=8, upsample_mode='nearest')
    with pytest.raises(ValueError, match='guidance_channels'):
        Up(in_channels=16, out_channels=16, guidance_channels=-1, upsample_mode='bilinear')


def test_escnet_head_config():
    head = ESCNetHead(clip_width=1024)
    assert type(head) is CATSegHead
    assert head.hidden_dim == 256 and head.upsample_mode == 'bilinear'
    assert head.class_chunk_size is None and not hasattr(head, 'conv_seg')
    assert [m.upsample_mode for m in (head.decoder1, head.decoder2)] == ['bilinear'] * 2
    assert (head.upsample1.in_channels, head.upsample1.out_channels,
            head.upsample1.kernel_size) == (1024, 256, (2, 2))
    assert (head.upsample2.out_channels, head.upsample2.kernel_size) == (128, (4, 4))
    assert [p[0].out_channels for p in head.decoder_guidance_projection] == [32, 16]
    assert head.decoder1.conv.double_conv[0].in_channels == 256 + 32
    assert head.decoder2.conv.double_conv[0].in_channels == 64 + 16
    assert head.decoder1.conv.double_conv[1].num_groups == 4  # GN as CAT-Seg (16 ch/group)
    assert not any('.up.' in n for n, _ in head.named_parameters())


def test_forward_shapes_and_pruned_classes():
    head = _tiny()
    cost, clip = _inputs(t=3)
    with torch.no_grad():
        logits = head(DecodeInputs(cost, None, clip, 3))
        assert logits.shape == (2, 3, 4 * RES, 4 * RES)
        index = torch.tensor([[0, 2, 5], [1, 3, 6]])
        full = head(DecodeInputs(cost, index, clip, 7))
    assert full.shape == (2, 7, 16, 16)
    for b in range(2):
        torch.testing.assert_close(full[b, index[b]], logits[b])
        dropped = [t for t in range(7) if t not in index[b]]
        assert (full[b, dropped] == -100).all()


@pytest.mark.parametrize('cls', [ESCNetHead, CATSegHead], ids=['escnet', 'catseg'])
def test_chunked_equals_unchunked(cls):
    head = _tiny(cls)
    cost, clip = _inputs(t=7)
    index = torch.tensor([[0, 1, 2, 4, 5, 6, 8], [1, 2, 3, 4, 5, 7, 9]])
    with torch.no_grad():
        ref = head(DecodeInputs(cost, index, clip, 10))
        calls = []
        hook = head.head.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
        for chunk in (3, 1, 7):
            head.class_chunk_size = chunk
            out = head(DecodeInputs(cost, index, clip, 10))
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        hook.remove()
    # B*t maps per chunk: chunks of 3 -> 3, 3, 1 classes; then 7 x 1; then all 7
    assert calls == [6, 6, 2] + [2] * 7 + [14]


def test_mmseg_loss_and_predict_api():
    head = _tiny(class_chunk_size=2).train()
    cost, clip = _inputs(t=3)
    cost.requires_grad_(True)
    inputs = DecodeInputs(cost, None, clip, 3)
    labels = torch.randint(0, 3, (2, 24, 24), generator=torch.Generator().manual_seed(0))
    samples = [SegDataSample(gt_sem_seg=PixelData(data=lab[None])) for lab in labels]
    loss = head.loss(inputs, samples, train_cfg=None)
    loss['loss_bce'].backward()
    assert cost.grad.abs().sum() > 0 and head.upsample1.weight.grad is not None
    assert head.decoder1.conv.double_conv[0].weight.grad is not None
    with torch.no_grad():
        seg = head.predict(inputs, [dict(img_shape=(24, 24))] * 2, test_cfg=None)
    assert seg.shape == (2, 3, 24, 24)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='class_chunk_size'):
        ESCNetHead(class_chunk_size=0)
    with pytest.raises(ValueError, match='upsample_mode'):
        ESCNetHead(upsample_mode='bicubic')
    with pytest.raises(TypeError, match='loss_decode'):
        ESCNetHead(loss_decode=dict(type='CrossEntropyLoss'))


@pytest.mark.parametrize('clip_width, expected_up', [(1024, 3_146_112), (768, 2_359_680)])
def test_parameter_counts_at_escnet_dims(clip_width, expected_up):
    head = ESCNetHead(clip_width=clip_width)
    up = sum(p.numel() for n, p in head.named_parameters() if n.startswith('upsample'))
    rest = sum(p.numel() for n, p in head.named_parameters() if not n.startswith('upsample'))
    conv = lambda i, o, k=3, bias=True: i * o * k * k + (o if bias else 0)  # noqa: E731
    # skip layers: ConvT clip_width -> 256 (k2), clip_width -> 128 (k4)
    assert up == conv(clip_width, 256, 2) + conv(clip_width, 128, 4) == expected_up
    projections = conv(256, 32) + conv(128, 16)
    decoder1 = conv(256 + 32, 64, bias=False) + 2 * 64 + conv(64, 64, bias=False) + 2 * 64
    decoder2 = conv(64 + 16, 32, bias=False) + 2 * 32 + conv(32, 32, bias=False) + 2 * 32
    assert rest == projections + decoder1 + decoder2 + conv(32, 1) == 327_889
