"""U-Net style upsampling stage of the cost-volume decoders (x2 upsampling + skip + DoubleConv).

CAT-Seg upsamples with a transposed convolution; ESC-Net (paper §3.6) with bilinear
interpolation followed by 3x3 convolutions; ERR-Seg (:class:`UpDecoder`) with a transposed
convolution to the output width.  The cost volume is decoded per class: inputs are
(B*T, C, H, W), and the per-image skip guidance (B, G, 2H, 2W) is concatenated to every class
of its image. The guidance's share of the first convolution is computed once per image and
added to every class, the same result without the per-class work.
Parameter names (``up``, ``conv.double_conv.{0,1,3,4}``) follow the official CAT-Seg code, those of
:class:`UpDecoder` (``up_conv``, ``textual_fusion``) ERR-Seg's.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .official_cost import guidance_for_classes

__all__ = ['DoubleConv', 'Up', 'UpDecoder', 'fuse_guidance', 'UPSAMPLE_MODES']

#: Supported ``Up.upsample_mode`` values.
UPSAMPLE_MODES = ('transposed', 'bilinear')


class DoubleConv(nn.Module):
    """``[Conv3x3 (no bias) -> GroupNorm -> ReLU] x 2``.

    The group count is channels // ``channels_per_group`` (CAT-Seg: 16 channels per group,
    e.g. GN(4, 64) and GN(2, 32)).

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        mid_channels (int, optional): channels after the first conv (default out_channels).
        channels_per_group (int): GroupNorm channels per group.
    """

    def __init__(self, *, in_channels: int, out_channels: int,
                 mid_channels: Optional[int] = None, channels_per_group: int = 16) -> None:
        super().__init__()
        mid_channels = mid_channels or out_channels
        for ch in (mid_channels, out_channels):
            if ch % channels_per_group != 0:
                raise ValueError(f'channels ({ch}) must be a multiple of channels_per_group '
                                 f'({channels_per_group})')
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(mid_channels // channels_per_group, mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.GroupNorm(out_channels // channels_per_group, out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (N, in_channels, H, W) to (N, out_channels, H, W)."""
        return self.double_conv(x)


class Up(nn.Module):
    """x2 upsampling, concat of a skip guidance, then :class:`DoubleConv`.

    * ``'transposed'`` (CAT-Seg): ``up`` is a 2x2 stride-2 ConvTranspose2d mapping
      ``in_channels`` to ``in_channels - guidance_channels``, so that after the concatenation
      the DoubleConv again sees ``in_channels`` channels.
    * ``'bilinear'`` (ESC-Net): ``up`` is a parameter-free bilinear x2 resize
      (align_corners=False) of the input; the DoubleConv sees
      ``in_channels + guidance_channels`` channels.

    Args:
        in_channels (int): input channels C_in.
        out_channels (int): output channels C_out.
        guidance_channels (int): channels G of the skip guidance (0: no guidance).
        channels_per_group (int): GroupNorm channels per group in the DoubleConv.
        upsample_mode (str): ``'transposed'`` or ``'bilinear'``.
    """

    #: compute the guidance's share per class, as the official code does (:func:`.official_cost`)
    official_cost: bool = False

    def __init__(self, *, in_channels: int, out_channels: int, guidance_channels: int,
                 channels_per_group: int = 16, upsample_mode: str = 'transposed') -> None:
        super().__init__()
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(f'upsample_mode must be one of {UPSAMPLE_MODES}, got '
                             f'{upsample_mode!r}')
        if upsample_mode == 'transposed' and not 0 <= guidance_channels < in_channels:
            raise ValueError(f'guidance_channels ({guidance_channels}) must be in '
                             f'[0, in_channels={in_channels}) with transposed upsampling')
        if guidance_channels < 0:
            raise ValueError(f'guidance_channels must be >= 0, got {guidance_channels}')
        self.guidance_channels = guidance_channels
        self.upsample_mode = upsample_mode
        if upsample_mode == 'transposed':
            self.up = nn.ConvTranspose2d(in_channels, in_channels - guidance_channels,
                                         kernel_size=2, stride=2)
            conv_in = in_channels
        else:
            self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
            conv_in = in_channels + guidance_channels
        self.conv = DoubleConv(in_channels=conv_in, out_channels=out_channels,
                               channels_per_group=channels_per_group)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Upsample and fuse (:func:`fuse_guidance`).

        Args:
            x (torch.Tensor): (B*T, C_in, H, W), images major, classes minor.
            guidance (torch.Tensor, optional): (B, G, 2H, 2W) skip features of the B images.

        Returns:
            torch.Tensor: (B*T, C_out, 2H, 2W).
        """
        x = self.up(x)  # (B*T, C_in - G, 2H, 2W) transposed; (B*T, C_in, 2H, 2W) bilinear
        assert (guidance is None) == (self.guidance_channels == 0)
        if guidance is None:
            return self.conv(x)
        return fuse_guidance(self.conv, x, guidance, self.official_cost)


class UpDecoder(nn.Module):
    """ERR-Seg's decoder stage: ``up_conv``, concat of a skip guidance, then a DoubleConv.

    ``up_conv`` maps C_in to C_out channels: a 2 x 2 stride-2 ConvTranspose2d (``scale=2``) or a
    1 x 1 conv (``scale=1``, the first stage); ``textual_fusion`` is the DoubleConv of
    ``C_out + G`` to C_out channels (official ``UpDecoder`` of lchen1019/ERR-Seg,
    ``err_seg/modeling/modules/up_decoder.py``; its ``textual_fusion.{0,1,3,4}`` are our
    ``textual_fusion.double_conv.{0,1,3,4}``).

    Args:
        in_channels (int): input channels C_in.
        out_channels (int): output channels C_out.
        guidance_channels (int): channels G of the skip guidance, >= 1.
        scale (int): 2 (transposed conv) or 1 (1 x 1 conv).
        channels_per_group (int): GroupNorm channels per group (ERR-Seg: 8).
    """

    #: compute the guidance's share per class, as the official code does (:mod:`.official_cost`)
    official_cost: bool = False

    def __init__(self, *, in_channels: int, out_channels: int, guidance_channels: int,
                 scale: int = 2, channels_per_group: int = 8) -> None:
        super().__init__()
        if scale not in (1, 2) or guidance_channels < 1:
            raise ValueError(f'UpDecoder needs scale 1 or 2 and guidance_channels >= 1, got '
                             f'scale={scale}, guidance_channels={guidance_channels}')
        self.scale = scale
        self.up_conv = (nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
                        if scale == 2 else nn.Conv2d(in_channels, out_channels, kernel_size=1))
        self.textual_fusion = DoubleConv(in_channels=out_channels + guidance_channels,
                                         out_channels=out_channels,
                                         channels_per_group=channels_per_group)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """Upsample and fuse (:func:`fuse_guidance`).

        Args:
            x (torch.Tensor): (B*T, C_in, H, W), images major, classes minor.
            guidance (torch.Tensor): (B, G, s*H, s*W) skip features of the B images.

        Returns:
            torch.Tensor: (B*T, C_out, s*H, s*W).
        """
        return fuse_guidance(self.textual_fusion, self.up_conv(x), guidance, self.official_cost)


def fuse_guidance(conv: DoubleConv, x: torch.Tensor, guidance: torch.Tensor,
                  official: bool = False) -> torch.Tensor:
    """``conv([x ; guidance])``, the guidance of an image concatenated to each of its classes.

    The first 3x3 convolution of the DoubleConv is linear (and has no bias), so its output is
    ``conv_x(x) + conv_g(guidance)``, and ``conv_g(guidance)`` is computed once per image and added
    to all its classes (:mod:`~mmseg_escnet.models.layers.official_cost`; ``official`` repeats the
    guidance per class instead).

    Args:
        conv (DoubleConv): its first conv takes ``C_x + G`` channels.
        x (torch.Tensor): (B*T, C_x, H, W), images major, classes minor.
        guidance (torch.Tensor): (B, G, H, W).
        official (bool): compute per class, as the official codes do.

    Returns:
        torch.Tensor: (B*T, C_out, H, W).
    """
    assert guidance.shape[2:] == x.shape[2:] and x.shape[0] % guidance.shape[0] == 0, \
        (x.shape, guidance.shape)
    guidance = guidance_for_classes(guidance, x.shape[0] // guidance.shape[0], official)
    layers = conv.double_conv
    weight = layers[0].weight  # (C_mid, C_x + G, 3, 3)
    y = F.conv2d(x, weight[:, :x.shape[1]], padding=1)  # (B*T, C_mid, H, W)
    g = F.conv2d(guidance, weight[:, x.shape[1]:], padding=1)  # (B, C_mid, H, W)
    # (B*T, C_mid, H, W) -> (B, T, C_mid, H, W) + the per-image term -> (B*T, ...)
    y = (y.view(g.shape[0], -1, *y.shape[1:]) + g[:, None]).flatten(0, 1)
    return layers[1:](y)
