"""CATSegAggregator + CATSegHead: pruning, equivariance, loss, mmseg API, sizes."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_escnet.models.structures import DecodeInputs
from mmseg_escnet.models.decode_heads.catseg_head import CATSegHead
from mmseg_escnet.models.necks.catseg_aggregator import CATSegAggregator

C, CLIP_W, HID, RES = 16, 24, 16, 8


def _tiny(pad_len=256, seed=0):
    """Tiny neck + head on an 8x8 grid, with all parameters randomised."""
    neck = CATSegAggregator(embed_dim=C, text_guidance_dim=8, appearance_guidance_dim=8,
                            num_layers=2, num_heads=2, hidden_dim=HID, pooling_size=(2, 2),
                            test_pooling_size=(1, 1), feature_resolution=(RES, RES),
                            window_size=4, pad_len=pad_len)
    head = CATSegHead(clip_width=CLIP_W, upsample_dims=(12, 6), decoder_guidance_proj_dims=(8, 4),
                      decoder_dims=(32, 16), hidden_dim=HID, num_classes=7)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*neck.parameters(), *head.parameters()]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return neck.eval(), head.eval()


def _inputs(b=2, t=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(b, C, RES, RES, generator=gen)
    text = F.normalize(torch.randn(b, t, 1, C, generator=gen), dim=-1)
    clip = [torch.randn(b, CLIP_W, RES, RES, generator=gen) for _ in range(2)]
    return img, text, clip


def _predict(neck, head, img, text, clip):
    with torch.no_grad():
        out = neck(img, text, img)
        return head(DecodeInputs.from_cost(out, clip, text.shape[1])), \
            out.class_index


def test_forward_shapes():
    neck, head = _tiny()
    img, text, clip = _inputs(t=3)
    with torch.no_grad():
        out = neck(img, text, img)
        assert out.cost.shape == (2, HID, 3, RES, RES) and out.class_index is None
        guidance = head.upsample_clip_features(clip)
    assert [g.shape for g in guidance] == [(2, 12, 16, 16), (2, 6, 32, 32)]
    logits, _ = _predict(neck, head, img, text, clip)
    assert logits.shape == (2, 3, 4 * RES, 4 * RES)


def test_class_pruning_keeps_top_classes_and_fills_minus_100():
    neck, head = _tiny(pad_len=4)
    img, text, clip = _inputs(t=7)
    logits, class_index = _predict(neck, head, img, text, clip)
    assert logits.shape == (2, 7, 32, 32)
    # expected kept classes: top-4 by max cosine similarity over pixels
    score = torch.einsum('bchw,btc->bthw', F.normalize(img, dim=1), text[:, :, 0]).amax((2, 3))
    expected = score.topk(4, dim=1).indices.sort(dim=1).values
    assert torch.equal(class_index, expected)
    for b in range(2):
        dropped = [t for t in range(7) if t not in expected[b]]
        assert (logits[b, dropped] == -100).all()
        # kept classes: same as running on those 4 classes only (T = pad_len: no pruning)
        sub, _ = _predict(neck, head, img[b:b + 1], text[b:b + 1, expected[b]],
                          [c[b:b + 1] for c in clip])
        torch.testing.assert_close(logits[b, expected[b]], sub[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('pad_len', [256, 4])
def test_permutation_equivariance(pad_len):
    neck, head = _tiny(pad_len=pad_len)
    neck.train()  # also exercise the 2x2 training pooling
    img, text, clip = _inputs(t=7)
    perm = torch.tensor([5, 2, 6, 0, 3, 1, 4])
    logits, _ = _predict(neck, head, img, text, clip)
    logits_perm, _ = _predict(neck, head, img, text[:, perm], clip)
    torch.testing.assert_close(logits_perm, logits[:, perm], atol=1e-5, rtol=1e-5)


def _samples(labels):
    return [SegDataSample(gt_sem_seg=PixelData(data=lab[None])) for lab in labels]


def test_loss_matches_hand_computation():
    head = CATSegHead(clip_width=8, upsample_dims=(16, 16), decoder_guidance_proj_dims=(8, 4),
                      decoder_dims=(32, 16), hidden_dim=16, ignore_index=255)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 8, 8), generator=gen)
    labels[0, :3] = 255
    labels[1, 5, 2:6] = 255
    loss = head.loss_by_feat(logits, _samples(labels))
    assert set(loss) == {'loss_bce'}

    up = F.interpolate(logits, size=(8, 8), mode='bilinear', align_corners=False)
    total = 0.0
    for t in range(3):
        y = (labels == t).float()  # ignored pixels: negative for every class
        p = torch.sigmoid(up[:, t])
        total = total - (y * torch.log(p) + (1 - y) * torch.log(1 - p)).sum()
    expected = total / up.numel()
    torch.testing.assert_close(loss['loss_bce'], expected, atol=1e-5, rtol=1e-5)
    # ignored pixels do count: changing them to class 0 changes the loss
    relabelled = labels.where(labels != 255, 0)
    assert not torch.allclose(head.loss_by_feat(logits, _samples(relabelled))['loss_bce'],
                              loss['loss_bce'])


def test_mmseg_loss_and_predict_api():
    neck, head = _tiny()
    head.train()
    img, text, clip = _inputs(t=3)
    inputs = DecodeInputs.from_cost(neck(img, text, img), clip, 3)
    labels = torch.randint(0, 3, (2, 40, 40))
    loss = head.loss(inputs, _samples(labels), train_cfg=None)
    loss['loss_bce'].backward()
    assert head.decoder1.up.weight.grad is not None and neck.conv1.weight.grad is not None
    with torch.no_grad():
        seg = head.predict(inputs, [dict(img_shape=(40, 40))] * 2, test_cfg=None)
    assert seg.shape == (2, 3, 40, 40)


def test_registry_and_input_errors():
    neck = MODELS.build(dict(type='CATSegAggregator', embed_dim=C, hidden_dim=HID, num_heads=2,
                             feature_resolution=(RES, RES), window_size=4))
    head = MODELS.build(dict(type='CATSegHead', clip_width=CLIP_W, hidden_dim=HID,
                             upsample_dims=(12, 6), decoder_guidance_proj_dims=(8, 4),
                             decoder_dims=(32, 16)))
    assert isinstance(neck, CATSegAggregator) and isinstance(head, CATSegHead)
    assert not hasattr(head, 'conv_seg')
    with pytest.raises(ValueError, match='same non-zero length'):
        CATSegHead(decoder_dims=(64, 32, 16))
    with pytest.raises(TypeError, match='loss_decode'):
        CATSegHead(loss_decode=dict(type='CrossEntropyLoss'))


@pytest.mark.parametrize('clip_dim, clip_width, expected, expected_up', [
    (512, 768, 2_308_961, 2_359_680),  # ViT-B/16
    (768, 1024, 2_636_641, 3_146_112),  # ViT-L/14
])
def test_parameter_counts_at_paper_dims(clip_dim, clip_width, expected, expected_up):
    neck = CATSegAggregator(embed_dim=clip_dim)
    head = CATSegHead(clip_width=clip_width)
    up = sum(p.numel() for n, p in head.named_parameters() if n.startswith('upsample'))
    rest = sum(p.numel() for n, p in head.named_parameters() if not n.startswith('upsample'))
    assert rest + sum(p.numel() for p in neck.parameters()) == expected
    assert up == expected_up
