"""One stage of SED's gradual fusion decoder: feature aggregation, then skip-layer fusion.

Xie et al., "SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation",
CVPR 2024 (arXiv:2311.15537); official code https://github.com/xb534/SED
(``sed/modeling/transformer/model.py``: ``Up``; ``convnext.py``: ``ConvNextBlock``).

A stage takes the per-class cost features of every class and image in the cost-volume layout
(B, C, T, h, w) of :mod:`mmseg_escnet.models.structures`, and

* aggregates them spatially with a ConvNeXt block (dwconv k x k, LN eps 1e-6, C -> 4C, GELU,
  4C -> C, layer scale initialised to 1.0, residual), applied to every class alone;
* aggregates them across classes with CAT-Seg's class transformer layer without text guidance
  or padding (:class:`~.linear_class_attention.ClassTransformerLayer`);
* upsamples x2 with a 2 x 2 transposed convolution to C - G channels, concatenates the image's
  projected encoder skip (G channels) and the class's cost-map skip (Gc channels) and fuses them
  with a :class:`~.upsampling.DoubleConv`.

The spatial and fusion parts act on every class independently and can run on chunks of classes
(``class_chunk_size``); the class attention sees all classes at once.
Parameter names (``cnext``, ``attention``, ``up``, ``conv.double_conv``) follow the official
code, except inside the ConvNeXt block, mmpretrain's (``depthwise_conv``, ``pointwise_conv1/2``
for the official ``dwconv``, ``pwconv1/2``).
"""
from functools import partial
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.convnext import ConvNeXtBlock
from torch import Tensor

from .class_chunks import class_bytes, map_class_chunks, on_class_maps
from .linear_class_attention import ClassTransformerLayer, PoolSize
from .official_cost import guidance_for_classes
from .upsampling import DoubleConv

__all__ = ['sed_convnext_block', 'SEDUp']


def sed_convnext_block(channels: int, kernel_size: int) -> ConvNeXtBlock:
    """SED's decoder ConvNeXt block: mmpretrain's block with a k x k depthwise conv, LN eps 1e-6,
    GELU (erf), MLP ratio 4, layer scale initialised to 1.0 and no drop path.

    Args:
        channels (int): channels C.
        kernel_size (int): odd depthwise kernel size (SED: 9).
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'kernel_size must be a positive odd int, got {kernel_size}')
    return ConvNeXtBlock(channels,
                         dw_conv_cfg=dict(kernel_size=kernel_size, padding=kernel_size // 2),
                         norm_cfg=dict(type='LN2d', eps=1e-6), act_cfg=dict(type='GELU'),
                         mlp_ratio=4., linear_pw_conv=True, drop_path_rate=0.,
                         layer_scale_init_value=1.0)


class SEDUp(nn.Module):
    """A gradual-fusion stage (the official ``Up``): ConvNeXt block, class attention, x2 up,
    fusion with an encoder skip and a cost-map skip.

    Args:
        in_channels (int): input channels C.
        out_channels (int): output channels (a multiple of 16: GroupNorm with 16 channels per
            group).
        guidance_channels (int): channels G of the projected encoder skip; 0 < G < C (the
            transposed conv outputs C - G channels).
        corr_guidance_channels (int): channels Gc of the cost-map skip (> 0; official: G).
        num_heads (int): class-attention heads (C must be divisible by it).
        kernel_size (int): ConvNeXt depthwise kernel size.
        pooling_size (tuple[int, int] | int): default class-attention pooling.
    """

    #: compute the guidance's share per class, as the official code does (:func:`.official_cost`)
    official_cost: bool = False

    def __init__(self, *, in_channels: int, out_channels: int, guidance_channels: int,
                 corr_guidance_channels: int, num_heads: int, kernel_size: int,
                 pooling_size: PoolSize = (2, 2)) -> None:
        super().__init__()
        if not 0 < guidance_channels < in_channels:
            raise ValueError(f'guidance_channels ({guidance_channels}) must be in '
                             f'(0, in_channels={in_channels})')
        if corr_guidance_channels < 1:
            raise ValueError(f'corr_guidance_channels must be >= 1, got {corr_guidance_channels}')
        self.guidance_channels = guidance_channels
        self.corr_guidance_channels = corr_guidance_channels
        self.cnext = sed_convnext_block(in_channels, kernel_size)
        self.attention = ClassTransformerLayer(hidden_dim=in_channels, guidance_dim=0,
                                               num_heads=num_heads, pooling_size=pooling_size,
                                               pad_len=0)
        self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels,
                                     kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels=in_channels + corr_guidance_channels,
                               out_channels=out_channels)

    def forward(self, x: Tensor, guidance: Tensor, corr_guidance: Tensor,
                pooling_size: PoolSize = None, class_chunk_size: Optional[int] = None
                ) -> Tensor:
        """Aggregate, upsample and fuse.

        Args:
            x (Tensor): (B, C, T, h, w) per-class features.
            guidance (Tensor): (B, G, 2h, 2w) projected encoder skip of the B images.
            corr_guidance (Tensor): (B, Gc, T, 2h, 2w) cost-map skip of every class.
            pooling_size (tuple[int, int] | int, optional): class-attention pooling override.
            class_chunk_size (int, optional): classes per chunk of the per-class parts.

        Returns:
            Tensor: (B, C_out, T, 2h, 2w).
        """
        assert guidance.shape[1] == self.guidance_channels, guidance.shape
        assert corr_guidance.shape[:3] == (x.shape[0], self.corr_guidance_channels, x.shape[2])
        # (B, C, T, h, w) -> ConvNeXt block per class -> class attention -> (B, C, T, h, w)
        # per class, the ConvNeXt block's hidden activation is 4x its input
        x = map_class_chunks(lambda xc: on_class_maps(self.cnext, xc), x, class_chunk_size,
                             item_bytes=class_bytes(x, 4))
        x = self.attention(x, None, pooling_size=pooling_size)
        # (B, C, T, h, w), (B, Gc, T, 2h, 2w) -> (B, C_out, T, 2h, 2w)
        fuse = partial(self._fuse, guidance=guidance)
        # per class, the fused maps have 4x the pixels
        return map_class_chunks(lambda xc, cc: on_class_maps(fuse, xc, cc), (x, corr_guidance),
                                class_chunk_size, item_bytes=class_bytes(x, 4))

    def _fuse(self, x: Tensor, corr_guidance: Tensor, *, guidance: Tensor) -> Tensor:
        """Upsample class maps and fuse them with the skips.

        The first conv of the DoubleConv sees ``[up(x) ; encoder skip ; cost skip]`` (the
        official order). It is linear without bias, so the encoder skip's share is computed once
        per image and added to its classes (see :mod:`.official_cost`).

        Args:
            x (Tensor): (B*t, C, h, w), images major.
            corr_guidance (Tensor): (B*t, Gc, 2h, 2w).
            guidance (Tensor): (B, G, 2h, 2w).

        Returns:
            Tensor: (B*t, C_out, 2h, 2w).
        """
        x = self.up(x)  # (B*t, C - G, 2h, 2w)
        c_up, g = x.shape[1], self.guidance_channels
        layers = self.conv.double_conv
        weight = layers[0].weight  # (C_mid, C - G + G + Gc, 3, 3)
        y = F.conv2d(torch.cat([x, corr_guidance], dim=1),
                     torch.cat([weight[:, :c_up], weight[:, c_up + g:]], dim=1),
                     padding=1)  # (B*t, C_mid, 2h, 2w)
        guidance = guidance_for_classes(guidance, x.shape[0] // guidance.shape[0],
                                        self.official_cost)
        share = F.conv2d(guidance, weight[:, c_up:c_up + g], padding=1)  # (B, C_mid, 2h, 2w)
        # (B*t, C_mid, 2h, 2w) -> (B, t, C_mid, 2h, 2w) + the per-image share -> (B*t, ...)
        y = (y.view(share.shape[0], -1, *y.shape[1:]) + share[:, None]).flatten(0, 1)
        return layers[1:](y)
