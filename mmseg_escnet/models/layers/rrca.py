"""ERR-Seg's cost aggregation (RRCA): guided softmax attention over reduced sequences.

Chen et al., "Efficient Redundancy Reduction for Open-Vocabulary Semantic Segmentation"
(arXiv:2501.17642); official code https://github.com/lchen1019/ERR-Seg
(``err_seg/modeling/modules/{aggregator,spatial_fusion,class_fusion}.py``). One layer::

    x (B, C, K, H, W), image guidance g (B, C, H, W), text guidance t (B, K, C)
      -> spatial fusion, per (image, class), over the H*W pixels: SegFormer-style block whose
         keys and values live on the (H/2)*(W/2) grid (2 x 2 stride-2 convs), q and k from
         [LN(x), g]; MLP ReLU6(fc1) * fc2 -> fc3 -> depthwise 7 x 7 conv    (B, C, K, H, W)
      -> class fusion, per (image, 2 x 2-pooled pixel), over the K classes: the same block without
         reduction, q and k from [LN(x), t]; MLP ... -> fc3 -> ReLU6; the result upsampled
         (bilinear, align_corners=True) and added to the input                (B, C, K, H, W)

The attention is PyTorch's fused ``scaled_dot_product_attention``, as the official code uses on
torch >= 2.2. Parameter names equal the official ones below ``spatial_fusion.sa.`` and
``class_fusion.sa.``, except the depthwise conv: official ``mlp.dwconv.dwconv``, ours
``mlp.dwconv`` (:mod:`mmseg_escnet.checkpoints.errseg_official`).
"""
import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor

from .class_chunks import class_bytes, fold_classes, map_class_chunks, unfold_classes

__all__ = ['GuidedReducedAttention', 'GatedMlp', 'SpatialFusionBlock', 'ClassFusionBlock',
           'RRCALayer', 'init_like_official']


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(..., L, C) -> (..., heads, L, C / heads)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(-3, -2)


def _conv_on_tokens(conv: Callable[[Tensor], Tensor], tokens: Tensor,
                    hw: Tuple[int, int]) -> Tensor:
    """(B, S, H*W, C) tokens -> ``conv`` on the (H, W) maps -> (B, S, L', C') tokens."""
    b, s, length, channels = tokens.shape
    # (B, S, L, C) -> (B*S, C, H, W) -> conv -> (B*S, C', L') -> (B, S, L', C')
    maps = tokens.transpose(-1, -2).reshape(b * s, channels, *hw)
    out = conv(maps).flatten(2)
    return out.view(b, s, *out.shape[1:]).transpose(-1, -2)


def init_like_official(module: nn.Module) -> None:
    """The official RRCA initialisation (``_init_weights`` of lchen1019/ERR-Seg's ``MiTBlock``,
    ``Attention`` and ``Mlp``): linear weights truncated normal (std 0.02), LayerNorms 1 and 0,
    convs normal with std sqrt(2 / fan_out), fan_out = k_h * k_w * out / groups; biases 0.

    Args:
        module (nn.Module): one module (use with ``Module.apply``).
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
        nn.init.normal_(module.weight, std=math.sqrt(2.0 / (fan_out // module.groups)))
    else:
        return
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class GuidedReducedAttention(nn.Module):
    """Softmax attention whose queries and keys also see a guidance, with optional reduction.

    ``q = Linear([x, g])``; with ``sr_ratio`` > 1 the keys come from ``[x, g]`` and the values from
    ``x`` after an ``sr_ratio`` x ``sr_ratio`` stride-``sr_ratio`` conv and a LayerNorm each
    (``sr_k``, ``norm_k``, ``sr_v``, ``norm_v``), on the (H, W) grid of the tokens; else
    ``k = Linear([x, g])``, ``v = Linear(x)``. The guidance is the same for the S sequences of an
    image; it is concatenated to each of them, as in the official code (computing its share of
    the linear layers once per image saves an estimated 4% of ERR-Seg B's MACs, but rounds
    differently enough to miss the official stages' 1e-5 tolerance; docs/errseg.md).

    Args:
        dim (int): channels C of the tokens and of the guidance.
        num_heads (int): attention heads (C divisible by it).
        sr_ratio (int): key/value reduction (1: none).
        qkv_bias (bool): biases of q, k, v (official: True).
    """

    def __init__(self, *, dim: int, num_heads: int, sr_ratio: int = 1,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0 or sr_ratio < 1:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads}) and '
                             f'sr_ratio ({sr_ratio}) >= 1')
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(2 * dim, dim, bias=qkv_bias)
        self.k = nn.Linear(2 * dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr_k = nn.Conv2d(2 * dim, 2 * dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm_k = nn.LayerNorm(2 * dim)
            self.sr_v = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm_v = nn.LayerNorm(dim)

    def forward(self, x: Tensor, guidance: Tensor, hw: Optional[Tuple[int, int]] = None
                ) -> Tensor:
        """Attend.

        Args:
            x (Tensor): (B, S, L, C) tokens: S sequences of L tokens per image.
            guidance (Tensor): (B, 1, L, C), shared by the S sequences of an image.
            hw (tuple[int, int], optional): (H, W) with H*W = L, needed with ``sr_ratio`` > 1.

        Returns:
            Tensor: (B, S, L, C).
        """
        xg = torch.cat([x, guidance.expand_as(x)], dim=-1)  # (B, S, L, 2C)
        q = self.q(xg)
        if self.sr_ratio > 1:
            k = self.k(self.norm_k(_conv_on_tokens(self.sr_k, xg, hw)))  # (B, S, L', C)
            v = self.v(self.norm_v(_conv_on_tokens(self.sr_v, x, hw)))
        else:
            k, v = self.k(xg), self.v(x)
        # (B, S, L, C) -> (B*S, heads, L, d): the fused CPU kernel takes 4-D inputs
        q, k, v = (_heads(t.flatten(0, 1), self.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B*S, heads, L, d)
        # (B*S, heads, L, d) -> (B*S, L, C) -> (B, S, L, C)
        return self.proj(out.transpose(1, 2).flatten(2)).view(x.shape)


class GatedMlp(nn.Module):
    """``fc3(ReLU6(fc1(x)) * fc2(x))``, then a depthwise 7 x 7 conv on the (H, W) token grid
    (``dwconv``, spatial block) or a ReLU6 (class block).

    Args:
        dim (int): token channels C.
        hidden_dim (int): hidden channels (official: 3 C).
        dwconv (bool): end with the depthwise conv instead of the ReLU6.
    """

    def __init__(self, *, dim: int, hidden_dim: int, dwconv: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(dim, hidden_dim)
        self.fc3 = nn.Linear(hidden_dim, dim)
        self.dwconv = (nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim) if dwconv
                       else None)

    def forward(self, x: Tensor, hw: Optional[Tuple[int, int]] = None) -> Tensor:
        """(B, S, L, C) -> (B, S, L, C); ``hw`` = (H, W) of the tokens with ``dwconv``."""
        x = self.fc3(F.relu6(self.fc1(x)) * self.fc2(x))
        if self.dwconv is None:
            return F.relu6(x)
        return _conv_on_tokens(self.dwconv, x, hw)


class _GuidedBlock(nn.Module):
    """Pre-norm block: ``x + attention(LN1(x), g)``, then ``x + mlp(LN2(x))`` (official
    ``MiTBlock``; the guidance is not normalised)."""

    def __init__(self, *, dim: int, num_heads: int, sr_ratio: int, dwconv: bool,
                 mlp_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = GuidedReducedAttention(dim=dim, num_heads=num_heads, sr_ratio=sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GatedMlp(dim=dim, hidden_dim=mlp_ratio * dim, dwconv=dwconv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.apply(init_like_official)

    def tokens(self, x: Tensor, guidance: Tensor, hw: Optional[Tuple[int, int]] = None
               ) -> Tensor:
        """(B, S, L, C) tokens and (B, 1, L, C) guidance -> (B, S, L, C)."""
        x = x + self._drop(self.attention(self.norm1(x), guidance, hw))
        return x + self._drop(self.mlp(self.norm2(x), hw))

    def _drop(self, branch: Tensor) -> Tensor:
        """Stochastic depth per sequence (each of the B*S), as the official code drops per
        (image, class) or (image, pixel): (B, S, L, C) -> (B, S, L, C)."""
        return self.drop_path(branch.flatten(0, 1)).view_as(branch)


class SpatialFusionBlock(_GuidedBlock):
    """Spatial fusion: attention over the pixels of every class map, guided by the image.

    Args:
        dim (int): channels C.
        num_heads (int): attention heads.
        sr_ratio (int): key/value reduction of the pixel grid (ERR-Seg: 2).
        mlp_ratio (int): MLP hidden channels / C (official: 3).
        drop_path (float): stochastic depth of both residual branches.
    """

    def __init__(self, *, dim: int, num_heads: int, sr_ratio: int = 2, mlp_ratio: int = 3,
                 drop_path: float = 0.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, sr_ratio=sr_ratio, dwconv=True,
                         mlp_ratio=mlp_ratio, drop_path=drop_path)

    def forward(self, x: Tensor, guidance: Tensor) -> Tensor:
        """Fuse every class map with its image's guidance.

        Args:
            x (Tensor): (B, C, k, H, W) class maps.
            guidance (Tensor): (B, C, H, W) image guidance.

        Returns:
            Tensor: (B, C, k, H, W).
        """
        b, channels, k, height, width = x.shape
        tokens = x.flatten(3).permute(0, 2, 3, 1)  # (B, C, k, H, W) -> (B, k, H*W, C)
        g = guidance.flatten(2).transpose(1, 2)[:, None]  # (B, C, H, W) -> (B, 1, H*W, C)
        out = self.tokens(tokens, g, (height, width))
        return out.permute(0, 3, 1, 2).reshape(b, channels, k, height, width)


class ClassFusionBlock(_GuidedBlock):
    """Class fusion: attention over the classes of every pooled pixel, guided by the text.

    Args:
        dim (int): channels C.
        num_heads (int): attention heads.
        pooling_size (int): average pooling of the pixel grid before the attention (ERR-Seg: 2,
            in training and evaluation alike).
        mlp_ratio (int): MLP hidden channels / C (official: 3).
        drop_path (float): stochastic depth of both residual branches.
    """

    def __init__(self, *, dim: int, num_heads: int, pooling_size: int = 2, mlp_ratio: int = 3,
                 drop_path: float = 0.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, sr_ratio=1, dwconv=False,
                         mlp_ratio=mlp_ratio, drop_path=drop_path)
        self.pooling_size = pooling_size

    def forward(self, x: Tensor, guidance: Tensor, pixel_chunk_size: Optional[int] = None
                ) -> Tensor:
        """Fuse the classes of every pooled pixel; add the upsampled result to the input.

        Args:
            x (Tensor): (B, C, K, H, W).
            guidance (Tensor): (B, K, C) text guidance.
            pixel_chunk_size (int, optional): pooled pixels attended at once (None: all, or the
                CPU inference budget of :mod:`.class_chunks`).

        Returns:
            Tensor: (B, C, K, H, W).
        """
        b, channels, k, height, width = x.shape
        pooled = F.avg_pool2d(fold_classes(x), self.pooling_size)  # (B*K, C, h, w)
        h, w = pooled.shape[-2:]
        # (B*K, C, h, w) -> (B, K, C, h*w) -> (B, h*w, K, C)
        tokens = pooled.view(b, k, channels, h * w).permute(0, 3, 1, 2)
        g = guidance[:, None]  # (B, 1, K, C), the same for every pixel of an image

        def attend(chunk: Tensor) -> Tensor:  # (B, p, K, C) -> (B, p, K, C)
            return self.tokens(chunk, g)

        # per pooled pixel, the widest activations are the MLP's (3C per class)
        out = map_class_chunks(attend, tokens, pixel_chunk_size, dim=1,
                               item_bytes=b * k * channels * 3 * x.element_size())
        # (B, h*w, K, C) -> (B*K, C, h, w) -> (B*K, C, H, W)
        out = out.permute(0, 2, 3, 1).reshape(b * k, channels, h, w)
        out = F.interpolate(out, size=(height, width), mode='bilinear', align_corners=True)
        return x + unfold_classes(out, b)


class RRCALayer(nn.Module):
    """One aggregation layer: :class:`SpatialFusionBlock`, then :class:`ClassFusionBlock`
    (official ``Aggregator``).

    Args:
        dim (int): channels C of the cost volume and of both guidances.
        num_heads (int): attention heads (official: 4).
        sr_ratio (int): key/value reduction of the spatial fusion.
        pooling_size (int): pooling of the class fusion.
        drop_path (float): stochastic depth of both blocks.
        class_chunk_size (int, optional): classes the spatial fusion takes at once (None: all,
            or the CPU inference budget).
    """

    def __init__(self, *, dim: int, num_heads: int = 4, sr_ratio: int = 2,
                 pooling_size: int = 2, drop_path: float = 0.0,
                 class_chunk_size: Optional[int] = None) -> None:
        super().__init__()
        self.spatial_fusion = SpatialFusionBlock(dim=dim, num_heads=num_heads,
                                                 sr_ratio=sr_ratio, drop_path=drop_path)
        self.class_fusion = ClassFusionBlock(dim=dim, num_heads=num_heads,
                                             pooling_size=pooling_size, drop_path=drop_path)
        self.class_chunk_size = class_chunk_size

    def forward(self, x: Tensor, image_guidance: Tensor, text_guidance: Tensor) -> Tensor:
        """Aggregate.

        Args:
            x (Tensor): (B, C, K, H, W) cost volume.
            image_guidance (Tensor): (B, C, H, W).
            text_guidance (Tensor): (B, K, C).

        Returns:
            Tensor: (B, C, K, H, W).
        """
        def spatial(chunk: Tensor) -> Tensor:  # (B, C, k, H, W) -> (B, C, k, H, W)
            return self.spatial_fusion(chunk, image_guidance)

        # per class, the widest activations are the MLP's (3C)
        x = map_class_chunks(spatial, x, self.class_chunk_size, item_bytes=class_bytes(x, 3))
        return self.class_fusion(x, text_guidance)
