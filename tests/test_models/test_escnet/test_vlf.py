"""VisionLanguageFusion (ESC-Net §3.5) and the class-chunking helper."""
import pytest
import torch

from mmseg_escnet.models.layers.class_chunks import check_class_chunk_size, map_class_chunks
from mmseg_escnet.models.necks.catseg_aggregator import CATSegAggregatorLayer
from mmseg_escnet.models.necks.vlf import VisionLanguageFusion

HID, VIS, GA, GT, RES = 16, 8, 8, 12, 8


def _vlf(pad_len=10, seed=0, **kwargs):
    """Tiny VLF on an 8x8 grid (window 4) with every parameter randomised."""
    cfg = dict(hidden_dim=HID, visual_dim=VIS, appearance_guidance_dim=GA, text_guidance_dim=GT,
               num_heads=2, input_resolution=(RES, RES), window_size=4, pooling_size=(2, 2),
               pad_len=pad_len)
    cfg.update(kwargs)
    vlf = VisionLanguageFusion(**cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vlf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return vlf


def _inputs(b=2, t=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    cost = torch.randn(b, HID, t, RES, RES, generator=gen)
    visual = torch.randn(b, VIS, RES, RES, generator=gen)
    text = torch.randn(b, t, GT, generator=gen)
    return cost, visual, text


def _catseg_layer(vlf: VisionLanguageFusion) -> CATSegAggregatorLayer:
    """CAT-Seg's aggregator layer holding the VLF's Swin pair and class attention."""
    layer = CATSegAggregatorLayer(hidden_dim=HID, appearance_guidance_dim=GA,
                                  text_guidance_dim=GT, num_heads=2, input_resolution=(RES, RES),
                                  window_size=4, pooling_size=(2, 2), pad_len=10)
    state = {k: v for k, v in vlf.state_dict().items() if not k.startswith('guidance_projection')}
    layer.load_state_dict(state, strict=True)  # same names: swin_block.*, attention.*
    return layer


def test_shapes_and_wiring_equal_catseg_layer_on_projected_visual():
    vlf = _vlf()
    cost, visual, text = _inputs()
    layer = _catseg_layer(vlf)
    with torch.no_grad():
        out = vlf(cost, visual, text)
        assert out.shape == (2, HID, 7, RES, RES)
        guidance = torch.relu(torch.nn.functional.conv2d(
            visual, vlf.guidance_projection[0].weight, vlf.guidance_projection[0].bias,
            padding=1))  # (B, GA, h, w)
        torch.testing.assert_close(out, layer(cost, guidance, text))
        # the pooling override reaches the class attention
        out1 = vlf(cost, visual, text, pooling_size=(1, 1))
        torch.testing.assert_close(out1, layer(cost, guidance, text, pooling_size=1))
        assert not torch.allclose(out, out1, atol=1e-3)


@pytest.mark.parametrize('chunk, pooling', [(None, (2, 2)), (3, (1, 1))])
def test_class_permutation_only_permutes_output(chunk, pooling):
    vlf = _vlf()
    cost, visual, text = _inputs()
    perm = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    with torch.no_grad():
        out = vlf(cost, visual, text, pooling_size=pooling, class_chunk_size=chunk)
        out_p = vlf(cost[:, :, perm], visual, text[:, perm], pooling_size=pooling,
                    class_chunk_size=chunk)
    torch.testing.assert_close(out_p, out[:, :, perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('pad_len', [10, 4])  # T=7 padded to 10 / T > pad_len: no padding
def test_chunked_equals_unchunked_forward_and_backward(pad_len):
    vlf = _vlf(pad_len=pad_len)
    cost, visual, text = _inputs(t=7)
    outs, grads = [], []
    for chunk in (None, 3, 1, 100):
        vlf.zero_grad()
        leaf = cost.clone().requires_grad_(True)
        out = vlf(leaf, visual, text, class_chunk_size=chunk)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        # unused padding parameters (T > pad_len) have no gradient
        grads.append([leaf.grad, *[p.grad for p in vlf.parameters() if p.grad is not None]])
    assert len(grads[0]) == 1 + sum(1 for _ in vlf.parameters()) - (2 if pad_len < 7 else 0)
    for out, grad in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=1e-5)
        assert len(grad) == len(grads[0])
        for g, g0 in zip(grad, grads[0]):
            torch.testing.assert_close(g, g0, atol=1e-4, rtol=1e-4)


def test_classes_interact_across_chunks_and_visual_guidance_matters():
    vlf = _vlf()
    cost, visual, text = _inputs(t=7)
    with torch.no_grad():
        out = vlf(cost, visual, text, class_chunk_size=3)
        bumped = cost.clone()  # class 0 is in chunk 0, class 6 in chunk 2
        gen = torch.Generator().manual_seed(5)
        bumped[:, :, 0] += torch.randn(bumped[:, :, 0].shape, generator=gen)
        out_b = vlf(bumped, visual, text, class_chunk_size=3)
        assert (out_b[:, :, 6] - out[:, :, 6]).abs().max() > 1e-3
        out_v = vlf(cost, visual.flip(-1), text, class_chunk_size=3)
        assert (out_v - out).abs().max() > 1e-3
        # no text guidance configured: the class attention runs without it
        plain = _vlf(text_guidance_dim=0)
        assert plain(cost, visual, None).shape == cost.shape


def test_parameter_count_at_escnet_dims():
    vlf = VisionLanguageFusion()  # hidden 256, visual 256, guidance 256/256, 4 heads, 24x24
    c = g = 256
    linear = lambda i, o: i * o + o  # noqa: E731
    swin_block = (2 * 2 * c + 2 * linear(c + g, c) + 2 * linear(c, c) + linear(c, 4 * c)
                  + linear(4 * c, c))
    swin_pair = 2 * swin_block + 2 * g  # + guidance_norm
    class_layer = (2 * c + 2 * linear(c + g, c) + linear(c, c) + linear(c, 4 * c)
                   + linear(4 * c, c) + 2 * 2 * c)  # pad tokens, q, k, v, MLP, 2 LayerNorms
    projection = 3 * 3 * 256 * g + g
    layer_count = sum(p.numel() for n, p in vlf.named_parameters()
                      if n.startswith(('swin_block.', 'attention.')))
    assert layer_count == swin_pair + class_layer == 2_697_728
    assert sum(p.numel() for p in vlf.parameters()) == layer_count + projection == 3_287_808


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='input_resolution'):
        VisionLanguageFusion(input_resolution=(24, 24, 1))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match='class_chunk_size'):
            check_class_chunk_size(bad)


def test_map_class_chunks_splits_and_concatenates():
    x = torch.arange(2 * 7 * 3, dtype=torch.float32).view(2, 7, 3)
    calls = []

    def centre(chunk):  # mixes the classes of a chunk, so chunking changes the result
        calls.append(chunk.shape[1])
        return (chunk - chunk.mean(dim=1, keepdim=True)).transpose(0, 1)  # class axis -> 0

    out = map_class_chunks(centre, x, 3, dim=1, out_dim=0)
    assert calls == [3, 3, 1] and out.shape == (7, 2, 3)
    expected = torch.cat([centre(x[:, i:i + 3]) for i in (0, 3, 6)], dim=0)
    torch.testing.assert_close(out, expected)
    calls.clear()
    torch.testing.assert_close(map_class_chunks(centre, x, None, dim=1, out_dim=0), centre(x))
    assert map_class_chunks(lambda c: c * 2, x, 7, dim=1).equal(x * 2)
    assert check_class_chunk_size(None) is None and check_class_chunk_size(4) == 4
