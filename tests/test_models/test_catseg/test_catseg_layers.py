"""Tests of the CAT-Seg building blocks in mmseg_escnet.models.layers."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from mmseg_escnet.models.layers.official_cost import official_cost
from mmseg_escnet.models.layers.guided_swin import (GuidedSwinBlock, GuidedSwinBlockPair,
                                                    GuidedWindowAttention, shifted_window_mask,
                                                    window_partition, window_reverse)
from mmseg_escnet.models.layers.linear_class_attention import (ClassTransformerLayer,
                                                               GuidedLinearAttention,
                                                               LinearAttention)
from mmseg_escnet.models.layers.upsampling import DoubleConv, Up



def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (incl. LayerNorm affine and zero-init padding) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return module


# ----------------------------------------------------------------------------- Swin part


def test_shift_mask_equals_official_buffer(conformance):
    official = conformance('catseg_aggregator_pool1.pt')['state_dict_official']
    key = 'sem_seg_head.predictor.transformer.layers.0.swin_block.block_2.attn_mask'
    mask = shifted_window_mask(24, 24, 12, 6)
    assert mask.shape == (4, 144, 144)
    assert torch.equal(mask, official[key])
    block = GuidedSwinBlock(dim=8, guidance_dim=4, input_resolution=(24, 24), num_heads=2,
                            window_size=12, shift_size=6)
    assert torch.equal(block.attn_mask, official[key])
    assert 'attn_mask' not in block.state_dict()  # rebuilt, never loaded


def test_window_partition_layout_and_round_trip():
    x = torch.randn(2, 6, 9, 5)
    windows = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 9, 5)
    # window 4 of image 1 is row-block 1, column-block 1 of that image
    assert torch.equal(windows[6 + 4], x[1, 3:6, 3:6].reshape(9, 5))
    assert torch.equal(window_reverse(windows, 3, 6, 9), x)


def _reference_block(block: GuidedSwinBlock, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Token-by-token Swin block: windows by index arithmetic, masking by wrap status."""
    h, w = block.input_resolution
    ws, s = block.window_size, block.shift_size
    heads = block.attn.num_heads
    n, _, c = x.shape
    y = torch.cat([block.norm1(x), g], dim=-1).view(n, h, w, -1)
    out = torch.zeros(n, h, w, c)
    for wi, wj in itertools.product(range(h // ws), range(w // ws)):
        # rolled-grid cell (i, j) holds the original token ((i + s) % h, (j + s) % w)
        cells = [(wi * ws + a, wj * ws + b) for a in range(ws) for b in range(ws)]
        orig = [((i + s) % h, (j + s) % w) for i, j in cells]
        tokens = torch.stack([y[:, i, j] for i, j in orig], dim=1)  # (n, ws*ws, C+G)
        wrap = torch.tensor([(i >= h - s, j >= w - s) for i, j in cells]) if s else None
        allowed = (None if wrap is None else
                   (wrap[:, None, :] == wrap[None, :, :]).all(-1))  # (N, N) bool
        q = block.attn.q(tokens).unflatten(-1, (heads, -1)).transpose(1, 2)
        k = block.attn.k(tokens).unflatten(-1, (heads, -1)).transpose(1, 2)
        v = block.attn.v(tokens[..., :c]).unflatten(-1, (heads, -1)).transpose(1, 2)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        att = block.attn.proj(att.transpose(1, 2).flatten(2))
        for t, (i, j) in enumerate(orig):
            out[:, i, j] = att[:, t]
    x = x + out.view(n, h * w, c)
    return x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.norm2(x))))


@pytest.mark.parametrize('shift', [0, 2])
@pytest.mark.parametrize('classes', [1, 3])
def test_guided_swin_block_matches_token_level_reference(shift, classes):
    """The per-image guidance terms give the official concatenation of the guidance to the
    tokens of every class (the reference concatenates, per token)."""
    torch.manual_seed(0)
    block = _randomize(GuidedSwinBlock(dim=8, guidance_dim=4, input_resolution=(8, 8),
                                       num_heads=2, window_size=4, shift_size=shift))
    x, g = torch.randn(2 * classes, 64, 8), torch.randn(2, 64, 4)  # B = 2 images
    with torch.no_grad():
        expected = _reference_block(block, x, g.repeat_interleave(classes, dim=0))
        torch.testing.assert_close(block(x, g), expected, atol=1e-5, rtol=1e-5)


def test_guided_swin_block_window_covers_map_disables_shift():
    block = GuidedSwinBlock(dim=8, guidance_dim=0, input_resolution=(4, 4), num_heads=2,
                            window_size=4, shift_size=2)
    assert block.shift_size == 0 and block.attn_mask is None
    assert block(torch.randn(2, 16, 8), None).shape == (2, 16, 8)


def test_guided_swin_pair_processes_classes_independently():
    torch.manual_seed(0)
    pair = _randomize(GuidedSwinBlockPair(dim=8, guidance_dim=4, input_resolution=(8, 8),
                                          num_heads=2, window_size=4))
    x, g = torch.randn(2, 8, 3, 8, 8), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        out = pair(x, g)
        for t in range(3):
            torch.testing.assert_close(out[:, :, t:t + 1], pair(x[:, :, t:t + 1], g))
        # the guidance matters (it enters q/k)
        assert not torch.allclose(out, pair(x, g + 1))


def test_swin_bad_arguments_raise():
    with pytest.raises(ValueError, match='divisible by num_heads'):
        GuidedWindowAttention(dim=10, guidance_dim=0, num_heads=4)
    with pytest.raises(ValueError, match='divisible by'):
        GuidedSwinBlock(dim=8, guidance_dim=0, input_resolution=(10, 10), num_heads=2,
                        window_size=4)


# ----------------------------------------------------------------------------- class part


def test_linear_attention_matches_dense_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 3, 4), torch.randn(2, 7, 3, 4), torch.randn(2, 7, 3, 6)
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    scores = torch.einsum('nlhd,nshd->nhls', phi_q, phi_k)  # un-normalised weights
    expected = torch.einsum('nhls,nshv->nlhv', scores, v) / (
        scores.sum(-1).transpose(1, 2)[..., None] + 1e-6)
    torch.testing.assert_close(LinearAttention()(q, k, v), expected, atol=1e-5, rtol=1e-5)


def test_guided_linear_attention_uses_guidance_in_qk_only():
    torch.manual_seed(0)
    attn = _randomize(GuidedLinearAttention(hidden_dim=8, guidance_dim=4, num_heads=2))
    assert attn.q.in_features == 12 and attn.k.in_features == 12 and attn.v.in_features == 8
    x, g = torch.randn(3, 5, 8), torch.randn(3, 5, 4)
    with torch.no_grad():
        q = attn.q(torch.cat([x, g], -1)).view(3, 5, 2, 4)
        k = attn.k(torch.cat([x, g], -1)).view(3, 5, 2, 4)
        v = attn.v(x).view(3, 5, 2, 4)
        torch.testing.assert_close(attn(x, g), LinearAttention()(q, k, v).reshape(3, 5, 8))


@pytest.mark.parametrize('pool', [(1, 1), (2, 2)])
def test_class_layer_padding_equals_explicit_pad_tokens(pool):
    """pad_len pads with the learnt token/guidance; same as appending them by hand."""
    torch.manual_seed(0)
    padded = _randomize(ClassTransformerLayer(hidden_dim=8, guidance_dim=4, num_heads=2,
                                              pooling_size=pool, pad_len=6))
    plain = ClassTransformerLayer(hidden_dim=8, guidance_dim=4, num_heads=2,
                                  pooling_size=pool, pad_len=0)
    plain.load_state_dict(padded.state_dict(), strict=False)
    x, g = torch.randn(2, 8, 4, 6, 6), torch.randn(2, 4, 4)
    x_ext = torch.cat([x, padded.padding_tokens.detach().view(1, 8, 1, 1, 1).expand(
        2, 8, 2, 6, 6)], dim=2)
    g_ext = torch.cat([g, padded.padding_guidance.detach().expand(2, 2, 4)], dim=1)
    with torch.no_grad():
        out = padded(x, g)
        ref = plain(x_ext, g_ext)[:, :, :4]
        # after pooling the padded map is constant per token, so the sliced classes agree
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        # T >= pad_len: no padding at all
        torch.testing.assert_close(padded(x_ext, g_ext), plain(x_ext, g_ext))


def test_class_layer_double_residual():
    """With a zero update, the layer returns x + upsample(pool(x)) (2x without pooling)."""
    layer = _randomize(ClassTransformerLayer(hidden_dim=8, guidance_dim=4, num_heads=2,
                                             pooling_size=(2, 2), pad_len=5))
    with torch.no_grad():
        for lin in (layer.attention.v, layer.MLP[2]):
            lin.weight.zero_()
            lin.bias.zero_()
    x, g = torch.randn(2, 8, 3, 6, 6), torch.randn(2, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, g, pooling_size=1), 2 * x)
        flat = x.transpose(1, 2).reshape(6, 8, 6, 6)
        up = F.interpolate(F.avg_pool2d(flat, 2), size=(6, 6), mode='bilinear',
                           align_corners=True).view(2, 3, 8, 6, 6).transpose(1, 2)
        torch.testing.assert_close(layer(x, g), x + up)


def test_class_layer_permutation_equivariant():
    torch.manual_seed(0)
    layer = _randomize(ClassTransformerLayer(hidden_dim=8, guidance_dim=4, num_heads=2,
                                             pooling_size=(2, 2), pad_len=8))
    x, g = torch.randn(2, 8, 5, 6, 6), torch.randn(2, 5, 4)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(layer(x[:, :, perm], g[:, perm]), layer(x, g)[:, :, perm],
                                   atol=1e-5, rtol=1e-5)


def test_class_layer_bad_arguments_raise():
    with pytest.raises(ValueError, match='pooling size'):
        ClassTransformerLayer(hidden_dim=8, guidance_dim=4, num_heads=2, pooling_size=(0, 2))


# ----------------------------------------------------------------------------- decoder stage


def test_double_conv_structure():
    conv = DoubleConv(in_channels=128, out_channels=64)
    names = [k for k, _ in conv.named_parameters()]
    assert names == ['double_conv.0.weight', 'double_conv.1.weight', 'double_conv.1.bias',
                     'double_conv.3.weight', 'double_conv.4.weight', 'double_conv.4.bias']
    assert conv.double_conv[1].num_groups == 4 and conv.double_conv[4].num_groups == 4
    assert conv.double_conv[0].bias is None
    with pytest.raises(ValueError, match='channels_per_group'):
        DoubleConv(in_channels=8, out_channels=24)


def test_up_adds_the_guidance_once_per_image():
    """The guidance's share of the first conv, computed once per image, equals the official
    concatenation of the guidance to every class."""
    torch.manual_seed(0)
    up = _randomize(Up(in_channels=32, out_channels=16, guidance_channels=8))
    assert up.up.out_channels == 24
    x, g = torch.randn(2 * 3, 32, 5, 5), torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        out = up(x, g)
        concatenated = up.conv(torch.cat([up.up(x), g.repeat_interleave(3, dim=0)], dim=1))
        with official_cost(up):  # the official cost: the guidance repeated per class
            torch.testing.assert_close(up(x, g), concatenated, atol=1e-5, rtol=1e-5)
        assert out.shape == (6, 16, 10, 10)
        torch.testing.assert_close(out, concatenated, atol=1e-5, rtol=1e-5)
        for b, t in itertools.product(range(2), range(3)):
            torch.testing.assert_close(out[b * 3 + t:b * 3 + t + 1],
                                       up(x[b * 3 + t:b * 3 + t + 1], g[b:b + 1]))
    with pytest.raises(ValueError, match='guidance_channels'):
        Up(in_channels=16, out_channels=16, guidance_channels=16)
