"""Fused attention (F.scaled_dot_product_attention) equals the explicit matmul-softmax-matmul."""
import copy

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock
from torch.utils.flop_counter import FlopCounterMode

from mmseg_escnet.models.layers.fused_sam_attention import FusedSAMAttention, fuse_sam_attention
from mmseg_escnet.models.layers.guided_swin import GuidedWindowAttention


def _explicit_window_attention(attn, x, mask, guidance_q, guidance_k):
    """The attention as the official CAT-Seg code writes it: logits, mask, softmax, matmul."""
    bw, n, c = x.shape
    q = F.linear(x, attn.q.weight[:, :attn.dim], attn.q.bias)
    k = F.linear(x, attn.k.weight[:, :attn.dim], attn.k.bias)
    if guidance_q is not None:
        b, nw = guidance_q.shape[:2]
        q = (q.view(b, -1, nw, n, c) + guidance_q[:, None]).view(bw, n, c)
        k = (k.view(b, -1, nw, n, c) + guidance_k[:, None]).view(bw, n, c)
    heads = attn.num_heads
    q, k, v = (t.view(bw, n, heads, -1).transpose(1, 2) for t in (q, k, attn.v(x)))
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    if mask is not None:
        nw = mask.shape[0]
        logits = (logits.view(bw // nw, nw, heads, n, n) + mask[None, :, None]).view(
            bw, heads, n, n)
    return attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c))


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('guided', [False, True])
def test_window_attention_equals_the_explicit_computation(masked, guided):
    torch.manual_seed(0)
    b, t, nw, n, c = 2, 3, 4, 16, 32
    attn = GuidedWindowAttention(dim=c, guidance_dim=8 if guided else 0, num_heads=4)
    x = torch.randn(b * t * nw, n, c)
    mask = torch.where(torch.rand(nw, n, n) < 0.3, -100.0, 0.0) if masked else None
    terms = attn.guidance_terms(torch.randn(b, nw, n, 8)) if guided else (None, None)
    with torch.no_grad():
        fused = attn(x, mask, *terms)
        reference = _explicit_window_attention(attn, x, mask, *terms)
    torch.testing.assert_close(fused, reference, atol=1e-6, rtol=1e-5)


def test_sam_attention_is_segment_anythings_with_the_same_parameters():
    torch.manual_seed(0)
    official = Attention(embedding_dim=32, num_heads=4, downsample_rate=2)
    fused = copy.deepcopy(official)
    fused.__class__ = FusedSAMAttention
    q, k = torch.randn(6, 7, 32), torch.randn(6, 50, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(q, k, k), official(q, k, k), atol=1e-6, rtol=1e-5)
    block = TwoWayAttentionBlock(embedding_dim=32, num_heads=4, mlp_dim=64)
    keys = list(block.state_dict())
    assert fuse_sam_attention(block) is block and list(block.state_dict()) == keys
    kinds = {type(m) for m in block.modules() if isinstance(m, Attention)}
    assert kinds == {FusedSAMAttention}


def test_fused_attention_is_counted_with_the_math_backend():
    """tools/analysis/get_flops.py counts fused attention as the two matmuls it fuses."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q = torch.randn(2, 4, 16, 8)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * (2 * 2 * 4 * 16 * 16 * 8)
