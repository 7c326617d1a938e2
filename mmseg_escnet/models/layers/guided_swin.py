"""Swin Transformer blocks whose queries and keys also see a guidance map.

This is the spatial half of CAT-Seg's cost aggregation (Cho et al., "CAT-Seg: Cost
Aggregation for Open-Vocabulary Semantic Segmentation", CVPR 2024, arXiv:2303.11797).
Compared with a plain Swin block (Liu et al., arXiv:2103.14030):

* a guidance feature map (e.g. projected CLIP image features) is concatenated to the
  normalised tokens and enters the query and key projections only; the value path and the
  residual stream see the tokens alone;
* there is no relative position bias;
* dropout and drop-path are absent.

The parameter names (``norm1``, ``attn.{q,k,v,proj}``, ``norm2``, ``mlp.{fc1,fc2}``,
``block_1``, ``block_2``, ``guidance_norm``) follow the official CAT-Seg code so that
checkpoints convert with a prefix map.  mmpretrain's ``WindowMSA``/``ShiftWindowMSA`` pack
q/k/v into one projection and always add a relative position bias, and mmcv's ``FFN`` names
its layers ``layers.0.0``/``layers.1``; neither fits, hence the small modules below.
"""
from functools import partial
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .class_chunks import map_class_chunks
from .official_cost import guidance_for_classes

__all__ = [
    'window_partition', 'window_reverse', 'shifted_window_mask', 'GuidedWindowAttention',
    'GuidedSwinBlock', 'GuidedSwinBlockPair'
]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """Cut a feature map into non-overlapping square windows.

    Args:
        x (torch.Tensor): (B, H, W, C) feature map; H and W must be multiples of
            ``window_size``.
        window_size (int): side of a window.

    Returns:
        torch.Tensor: (B * nH * nW, window_size * window_size, C) tokens per window, windows
        ordered row-major within each batch element.
    """
    b, h, w, c = x.shape
    # (B, H, W, C) -> (B, nH, ws, nW, ws, C) -> (B, nH, nW, ws, ws, C) -> (B*nH*nW, ws*ws, C)
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, height: int,
                   width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows (torch.Tensor): (B * nH * nW, window_size * window_size, C).
        window_size (int): side of a window.
        height (int): H of the feature map.
        width (int): W of the feature map.

    Returns:
        torch.Tensor: (B, H, W, C).
    """
    n_h, n_w = height // window_size, width // window_size
    c = windows.shape[-1]
    # (B*nH*nW, ws*ws, C) -> (B, nH, nW, ws, ws, C) -> (B, nH, ws, nW, ws, C) -> (B, H, W, C)
    x = windows.view(-1, n_h, n_w, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def shifted_window_mask(height: int, width: int, window_size: int, shift_size: int,
                        masked_value: float = -100.0) -> torch.Tensor:
    """Additive attention mask of shifted-window attention (SW-MSA).

    After the cyclic roll by ``-shift_size``, windows at the bottom/right border contain
    tokens from regions that were not adjacent; pairs of tokens from different regions get
    ``masked_value`` (the official code uses -100, not -inf), all other pairs 0.

    Args:
        height (int): H of the feature map.
        width (int): W of the feature map.
        window_size (int): side of a window.
        shift_size (int): cyclic shift, 0 < shift_size < window_size.
        masked_value (float): value added to the logits of masked pairs.

    Returns:
        torch.Tensor: (nH * nW, window_size**2, window_size**2) float mask.
    """
    region = torch.zeros(1, height, width, 1)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            region[:, rows, cols, :] = label
            label += 1
    region_windows = window_partition(region, window_size).squeeze(-1)  # (nW, ws*ws)
    diff = region_windows[:, None, :] - region_windows[:, :, None]  # (nW, ws*ws, ws*ws)
    return torch.zeros_like(diff).masked_fill(diff != 0, masked_value)


class GuidedWindowAttention(nn.Module):
    """Multi-head window self-attention with guidance in the queries and keys.

    Args:
        dim (int): channels C of the tokens (and of the output).
        guidance_dim (int): channels G of the guidance concatenated after the tokens;
            0 for plain window attention.
        num_heads (int): number of heads; ``dim`` must be divisible by it.
        qkv_bias (bool): whether q, k, v projections have a bias.
    """

    def __init__(self, *, dim: int, guidance_dim: int, num_heads: int,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads)**-0.5
        self.q = nn.Linear(dim + guidance_dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim + guidance_dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def guidance_terms(self, guidance: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The guidance's share of the queries and keys, computed once per image.

        ``q([x ; g]) = W_x x + W_g g + b``: the ``W_g g`` part is the same for every class of an
        image, so it is computed on the per-image guidance and added to every class.

        Args:
            guidance (torch.Tensor): (..., G) guidance tokens.

        Returns:
            tuple: the query and key terms, (..., C) each.
        """
        return (F.linear(guidance, self.q.weight[:, self.dim:]),
                F.linear(guidance, self.k.weight[:, self.dim:]))

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                guidance_q: Optional[torch.Tensor] = None,
                guidance_k: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend within each window.

        Args:
            x (torch.Tensor): (B*T*nW, N, C) window tokens of B images x T classes (images
                major, windows minor).
            mask (torch.Tensor, optional): (nW, N, N) additive mask shared by the batch.
            guidance_q (torch.Tensor, optional): (B, nW, N, C) per-image query terms of the
                guidance (:meth:`guidance_terms`, windowed like ``x``); None without guidance.
            guidance_k (torch.Tensor, optional): the key terms, as ``guidance_q``.

        Returns:
            torch.Tensor: (B*T*nW, N, C).
        """
        bw, n, _ = x.shape
        q = F.linear(x, self.q.weight[:, :self.dim], self.q.bias)  # (nW*B*T, N, C)
        k = F.linear(x, self.k.weight[:, :self.dim], self.k.bias)
        if guidance_q is not None:
            # (B*T*nW, N, C) -> (B, T, nW, N, C) + the per-image terms (B, 1, nW, N, C)
            b, nw = guidance_q.shape[:2]
            q = (q.view(b, -1, nw, n, q.shape[-1]) + guidance_q[:, None]).view(bw, n, -1)
            k = (k.view(b, -1, nw, n, k.shape[-1]) + guidance_k[:, None]).view(bw, n, -1)
        # softmax(q k^T * scale + mask) v, fused (F.scaled_dot_product_attention: the same
        # result within float rounding). Its fast CPU kernel takes 4-D inputs only (5-D ones fall
        # back to the unfused math), so the (nW, N, N) mask is laid out per window sequence.
        # (B*T*nW, N, C) -> (B*T*nW, heads, N, C/heads)
        q, k, v = (t.view(bw, n, self.num_heads, -1).transpose(1, 2) for t in (q, k, self.v(x)))
        attn_mask = None
        if mask is not None:  # (nW, N, N) -> (B*T, nW, N, N) -> (B*T*nW, 1, N, N)
            num_windows = mask.shape[0]
            attn_mask = mask.expand(bw // num_windows, -1, -1, -1).reshape(bw, 1, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        # (B*T*nW, heads, N, C/heads) -> (B*T*nW, N, C)
        out = out.transpose(1, 2).reshape(bw, n, self.dim)
        return self.proj(out)


class _Mlp(nn.Module):
    """Two-layer perceptron ``fc2(act(fc1(x)))`` (timm's ``Mlp`` naming).

    Args:
        in_dim (int): input and output channels.
        hidden_dim (int): hidden channels.
        act_layer (type): activation class.
    """

    def __init__(self, *, in_dim: int, hidden_dim: int, act_layer: type = nn.GELU) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to (..., C) tokens; returns (..., C)."""
        return self.fc2(self.act(self.fc1(x)))


class GuidedSwinBlock(nn.Module):
    """One (shifted-)window transformer block with guided queries/keys.

    ``x = x + proj(WindowAttn([LN1(x); g])); x = x + MLP(LN2(x))``

    Args:
        dim (int): token channels C.
        guidance_dim (int): guidance channels G (0: no guidance).
        input_resolution (tuple[int, int]): fixed (H, W) of the token grid.
        num_heads (int): attention heads.
        window_size (int): window side.  If it is not smaller than min(H, W), one window
            covers the whole map and the shift is disabled (as in Swin/CAT-Seg).
        shift_size (int): cyclic shift (0 for W-MSA, typically window_size // 2 for SW-MSA).
        mlp_ratio (float): MLP hidden channels = mlp_ratio * C.
        act_layer (type): MLP activation.
    """

    #: compute the guidance's share per class, as the official code does (:func:`.official_cost`)
    official_cost: bool = False

    def __init__(self, *, dim: int, guidance_dim: int, input_resolution: Tuple[int, int],
                 num_heads: int, window_size: int, shift_size: int = 0,
                 mlp_ratio: float = 4.0, act_layer: type = nn.GELU) -> None:
        super().__init__()
        height, width = input_resolution
        if min(height, width) <= window_size:
            window_size, shift_size = min(height, width), 0
        if height % window_size or width % window_size:
            raise ValueError(f'input_resolution {tuple(input_resolution)} must be divisible by '
                             f'window_size {window_size}')
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size must be in [0, window_size), got {shift_size}')
        self.dim = dim
        self.guidance_dim = guidance_dim
        self.input_resolution = (height, width)
        self.window_size = window_size
        self.shift_size = shift_size

        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim=dim, guidance_dim=guidance_dim,
                                          num_heads=num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(in_dim=dim, hidden_dim=int(dim * mlp_ratio), act_layer=act_layer)
        mask = (shifted_window_mask(height, width, window_size, shift_size)
                if shift_size > 0 else None)
        # Recomputed at construction; the official checkpoint's copy is dropped on load.
        self.register_buffer('attn_mask', mask, persistent=False)

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H*W, C) tokens -> (N*nW, ws*ws, C) (shifted) windows."""
        height, width = self.input_resolution
        x = x.view(x.shape[0], height, width, -1)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        return window_partition(x, self.window_size)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """Run the block.

        Args:
            x (torch.Tensor): (B*T, H*W, C) tokens of B images x T classes (images major),
                row-major grid.
            guidance (torch.Tensor, optional): (B, H*W, G) guidance of the B images (already
                normalised), or None when ``guidance_dim == 0``.

        Returns:
            torch.Tensor: (B*T, H*W, C).
        """
        height, width = self.input_resolution
        n, length, c = x.shape
        assert length == height * width and (guidance is None) == (self.guidance_dim == 0)
        guidance_q = guidance_k = None
        if guidance is not None:
            # per image: (B, H*W, G) -> query / key terms (B, H*W, C) -> (B, nW, ws*ws, C)
            guidance = guidance_for_classes(guidance, n // guidance.shape[0], self.official_cost)
            guidance_q, guidance_k = [self._windows(term).unflatten(0, (guidance.shape[0], -1))
                                      for term in self.attn.guidance_terms(guidance)]

        shortcut = x
        windows = self._windows(self.norm1(x))  # (B*T*nW, ws*ws, C)
        windows = self.attn(windows, mask=self.attn_mask, guidance_q=guidance_q,
                            guidance_k=guidance_k)  # (B*T*nW, ws*ws, C)
        x = window_reverse(windows, self.window_size, height, width)  # (B*T, H, W, C)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + x.reshape(n, length, c)
        return x + self.mlp(self.norm2(x))


class GuidedSwinBlockPair(nn.Module):
    """W-MSA block followed by SW-MSA block, applied to every class slice of a cost volume.

    This is CAT-Seg's ``SwinTransformerBlockWrapper`` (spatial aggregation): each class's
    (H, W) cost slice is processed independently; the appearance guidance is shared by all
    classes and passes through ``guidance_norm`` (LayerNorm) first.

    Args:
        dim (int): cost-volume channels C.
        guidance_dim (int): appearance-guidance channels G (0: no guidance).
        input_resolution (tuple[int, int]): (H, W) of the cost volume.
        num_heads (int): attention heads.
        window_size (int): window side; ``block_2`` shifts by window_size // 2.
        mlp_ratio (float): MLP expansion of both blocks.
    """

    def __init__(self, *, dim: int, guidance_dim: int, input_resolution: Tuple[int, int],
                 num_heads: int, window_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        common = dict(dim=dim, guidance_dim=guidance_dim, input_resolution=input_resolution,
                      num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio)
        self.block_1 = GuidedSwinBlock(shift_size=0, **common)
        self.block_2 = GuidedSwinBlock(shift_size=window_size // 2, **common)
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor],
                class_chunk_size: Optional[int] = None, with_cp: bool = False) -> torch.Tensor:
        """Aggregate spatially, class by class.

        Args:
            x (torch.Tensor): (B, C, T, H, W) cost volume.
            guidance (torch.Tensor, optional): (B, G, H, W) appearance guidance.
            class_chunk_size (int, optional): classes per chunk (None: all at once; at inference
                on CPU the chunks stay under :data:`~.class_chunks.INFERENCE_CHUNK_BYTES`).
            with_cp (bool): checkpoint every chunk in training.

        Returns:
            torch.Tensor: (B, C, T, H, W).
        """
        b, c, t, h, w = x.shape
        if guidance is not None:
            assert guidance.shape[0] == b and guidance.shape[2:] == (h, w), guidance.shape
            # (B, G, H, W) -> (B, H*W, G), normalised per token once per image (the official
            # code repeats it for every class first: the same values)
            guidance = self.guidance_norm(guidance.flatten(2).transpose(1, 2))
        # the widest activation of one class: the MLP's hidden tokens (B, H*W, hidden)
        item_bytes = b * h * w * self.block_1.mlp.fc1.out_features * x.element_size()
        return map_class_chunks(partial(self._aggregate, guidance=guidance), x,
                                class_chunk_size, dim=2, with_cp=with_cp, item_bytes=item_bytes)

    def _aggregate(self, x: torch.Tensor, guidance: Optional[torch.Tensor]) -> torch.Tensor:
        """Both blocks on (B, C, t, H, W) with the normalised (B, H*W, G) guidance."""
        b, c, t, h, w = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)  # (B,C,t,H,W) -> (B*t, H*W, C)
        x = self.block_1(x, guidance)
        x = self.block_2(x, guidance)
        return x.view(b, t, h, w, c).permute(0, 4, 1, 2, 3)  # -> (B, C, t, H, W)
