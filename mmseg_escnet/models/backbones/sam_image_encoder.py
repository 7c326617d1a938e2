"""SAM's image encoder as a feature extractor for LMSeg (Tang et al., arXiv 2412.00364).

LMSeg supplements CLIP's dense features with those of Segment Anything's image encoder
(Kirillov et al., 2023). This runs segment_anything's own :class:`ImageEncoderViT` with the
official weights (``image_encoder.*`` of ``sam_vit_{b,l,h}_*.pth``, facebookresearch/
segment-anything) on the segmentor's CLIP-normalised images:

    images (B, 3, H, W), CLIP-normalised RGB
      -> SAM's normalisation (the same pixels, SAM's mean and std)
      -> bilinear resize to (img_size, img_size) (a square input, like CLIP's)
      -> ImageEncoderViT -> (B, out_chans, img_size / patch, img_size / patch)

Differences from SAM's own preprocessing (docs/lmseg.md): SAM resizes the longest side to 1024
and pads; here the image is resized to the square, as for CLIP, so that both feature grids cover
the same pixels. The segmentor's inputs are square crops in training and in CAT-Seg's protocol.
"""
from functools import partial
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from segment_anything.modeling import ImageEncoderViT

from ...checkpoints.sam_official import load_sam_image_encoder
from ...checkpoints.state_dict_fit import check_state_dict_fits

__all__ = ['SAMImageEncoder', 'SAM_ARCHS', 'resize_sam_encoder_weights']

#: The official encoders (segment_anything/build_sam.py): dims, depth, heads, global blocks.
SAM_ARCHS: Dict[str, dict] = {
    'vit_b': dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    'vit_l': dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    'vit_h': dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
#: SAM's pixel statistics (RGB, 0-255), segment_anything/build_sam.py.
SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)
#: CLIP's (OpenAI) pixel statistics (RGB, 0-255), what the segmentor's inputs are normalised with.
CLIP_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_STD = (68.5005327, 66.6321579, 70.323163)


def resize_sam_encoder_weights(state: Dict[str, torch.Tensor],
                               grid: int) -> Dict[str, torch.Tensor]:
    """Official encoder weights (64 x 64 tokens at 1024 px) for another token grid.

    ``pos_embed`` (1, 64, 64, D) is resized bicubically; the relative-position tables of the
    global-attention blocks (2 * 64 - 1, d) linearly, as segment_anything's ``get_rel_pos``
    itself resizes a table that does not fit. Windowed blocks' tables (window 14) are kept.

    Args:
        state (dict): ``ImageEncoderViT`` weights.
        grid (int): tokens per side of the new input (img_size / patch_size).

    Returns:
        dict: the weights, resized where needed.
    """
    out = dict(state)
    pos = state.get('pos_embed')
    if pos is None or pos.shape[1] == grid:
        return out
    # (1, g0, g0, D) -> (1, D, g0, g0) -> (1, D, g, g) -> (1, g, g, D)
    out['pos_embed'] = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=(grid, grid),
                                     mode='bicubic', align_corners=False).permute(
                                         0, 2, 3, 1).to(pos.dtype)
    old_grid = pos.shape[1]
    for name, table in state.items():
        if name.endswith(('rel_pos_h', 'rel_pos_w')) and table.shape[0] == 2 * old_grid - 1:
            # (2 g0 - 1, d) -> (1, d, 2 g0 - 1) -> (1, d, 2 g - 1) -> (2 g - 1, d)
            out[name] = F.interpolate(table.t()[None].float(), size=2 * grid - 1,
                                      mode='linear')[0].t().to(table.dtype)
    return out


@MODELS.register_module()
class SAMImageEncoder(BaseModule):
    """segment_anything's ``ImageEncoderViT`` on CLIP-normalised images, frozen by default.

    Args:
        arch (str | dict): ``'vit_b'``, ``'vit_l'``, ``'vit_h'`` (the official encoders) or a
            dict with ``embed_dim``, ``depth``, ``num_heads``, ``global_attn_indexes``.
        img_size (int): the square input side (SAM: 1024).
        patch_size (int): patch side (SAM: 16).
        window_size (int): windowed-attention side (SAM: 14).
        out_chans (int): output channels of SAM's neck (256).
        checkpoint (str, optional): an official SAM checkpoint (path or URL), read in
            :meth:`init_weights`; the position tables are resized for another ``img_size``.
        frozen (bool): no gradient, always in eval mode, run under ``torch.no_grad``.
        input_mean, input_std (sequence of 3 floats): the normalisation of the inputs (RGB,
            0-255); the segmentor's data preprocessor uses CLIP's.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self, *, arch: Union[str, dict] = 'vit_b', img_size: int = 1024,
                 patch_size: int = 16, window_size: int = 14, out_chans: int = 256,
                 checkpoint: Optional[str] = None, frozen: bool = True,
                 input_mean: Sequence[float] = CLIP_MEAN, input_std: Sequence[float] = CLIP_STD,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in SAM_ARCHS:
                raise ValueError(f'arch must be one of {sorted(SAM_ARCHS)} or a dict, got '
                                 f'{arch!r}')
            arch = SAM_ARCHS[arch]
        keys = {'embed_dim', 'depth', 'num_heads', 'global_attn_indexes'}
        if not isinstance(arch, dict) or set(arch) != keys:
            raise ValueError(f'arch as a dict needs exactly the keys {sorted(keys)}, got '
                             f'{arch!r}')
        if img_size % patch_size:
            raise ValueError(f'img_size {img_size} must be a multiple of patch_size '
                             f'{patch_size}')
        self.img_size = img_size
        self.checkpoint = checkpoint
        self.frozen = frozen
        self.image_encoder = ImageEncoderViT(
            img_size=img_size, patch_size=patch_size, embed_dim=arch['embed_dim'],
            depth=arch['depth'], num_heads=arch['num_heads'], mlp_ratio=4,
            out_chans=out_chans, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=window_size,
            global_attn_indexes=tuple(arch['global_attn_indexes']))
        # inputs * scale + shift = SAM-normalised inputs; not in the state dict
        mean_in, std_in = torch.tensor(input_mean), torch.tensor(input_std)
        mean_sam, std_sam = torch.tensor(SAM_MEAN), torch.tensor(SAM_STD)
        self.register_buffer('scale', (std_in / std_sam).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('shift', ((mean_in - mean_sam) / std_sam).view(1, 3, 1, 1),
                             persistent=False)
        if frozen:
            self.image_encoder.requires_grad_(False)

    @property
    def out_channels(self) -> int:
        """Channels of the output features."""
        return self.image_encoder.neck[0].out_channels

    @property
    def grid(self) -> int:
        """Output tokens per side."""
        return self.image_encoder.pos_embed.shape[1]

    def init_weights(self) -> None:
        """mmengine init, then the official weights if ``checkpoint`` is set."""
        super().init_weights()
        if self.checkpoint is None:
            return
        weights = resize_sam_encoder_weights(load_sam_image_encoder(self.checkpoint), self.grid)
        check_state_dict_fits(self.image_encoder, weights, source=str(self.checkpoint),
                              target='SAMImageEncoder.image_encoder',
                              hint='Give an official SAM checkpoint whose variant matches arch '
                              "('vit_b', 'vit_l' or 'vit_h')")
        self.image_encoder.load_state_dict(weights)
        print_log(f'SAMImageEncoder: weights from {self.checkpoint} at {self.img_size} px',
                  logger='current')

    def train(self, mode: bool = True) -> 'SAMImageEncoder':
        """Set the mode; a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.image_encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """SAM features of the images.

        Args:
            images (torch.Tensor): (B, 3, H, W) normalised with ``input_mean``/``input_std``.

        Returns:
            torch.Tensor: (B, out_chans, g, g), g = img_size / patch_size.
        """
        x = images * self.scale + self.shift                       # SAM's normalisation
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode='bilinear',
                              align_corners=False)                # (B, 3, S, S)
        if self.frozen:
            with torch.no_grad():
                return self.image_encoder(x)
        return self.image_encoder(x)
