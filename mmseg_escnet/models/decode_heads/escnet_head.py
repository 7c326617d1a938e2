"""ESC-Net's mask prediction decoder (paper §3.6) as an mmseg decode head.

Lee et al., "Effective SAM Combination for Open-Vocabulary Semantic Segmentation"
(ESC-Net), §3.6: "the simple upsampling layers of a U-Net architecture, composed
of bilinear interpolation and 3x3 convolution layers ... employs CLIP image encoder features as
skip connections".  This is CAT-Seg's decoder (:class:`CATSegHead`: the same skip layers
``upsample1``/``upsample2``, skip projections, GroupNorm DoubleConvs and BCE loss) with
bilinear x2 upsampling instead of transposed convolutions and the ESC-Net cost-volume width
(256 = the SAM dim; docs/escnet.md).
"""
from typing import Optional, Sequence

from mmseg.registry import MODELS

from mmseg_escnet.models.decode_heads.catseg_head import CATSegHead

__all__ = ['ESCNetHead']


@MODELS.register_module()
class ESCNetHead(CATSegHead):
    """U-Net decoder of ESC-Net's refined cost volume: bilinear x2 + CLIP skip + DoubleConv.

    Stage i upsamples the per-class maps (B*T, C, H, W) bilinearly to (2H, 2W), concatenates
    the projected CLIP skip feature of the image and applies [3x3 conv, GN, ReLU] x 2; a final
    3x3 conv gives one logit map per class.  Inputs, outputs and the loss are those of
    :class:`CATSegHead`: ``forward(dict(cost=(B, hidden_dim, T', h, w), class_index,
    num_classes, clip_features=[(B, clip_width, h, w)] * 2)) -> (B, T, 4h, 4w)``.

    Args:
        clip_width (int): channels of the intermediate CLIP block outputs (768 for ViT-B/16,
            1024 for ViT-L/14).
        upsample_dims (tuple[int, ...]): output channels of the skip layers ``upsample1``,
            ``upsample2`` (ConvTranspose2d clip_width -> dim, kernel = stride = scale).
        upsample_scales (tuple[int, ...]): kernel = stride of ``upsample1``, ``upsample2``.
        decoder_guidance_proj_dims (tuple[int, ...]): projected skip channels per stage.
        decoder_dims (tuple[int, ...]): output channels of ``decoder1``, ``decoder2``.
        hidden_dim (int): channels of the cost volume (ESC-Net: 256).
        upsample_mode (str): ``'bilinear'`` (ESC-Net) or ``'transposed'`` (CAT-Seg).
        class_chunk_size (int, optional): decode in chunks of this many classes.
        num_classes (int): nominal number of classes (the real T comes with the input).
        ignore_index (int): label value ignored by the loss.
        align_corners (bool): used when resizing logits to label / image size.
        init_cfg (dict, optional): mmengine initialisation config.
        **kwargs: other :class:`BaseDecodeHead` arguments.
    """

    def __init__(self, *, clip_width: int = 768, upsample_dims: Sequence[int] = (256, 128),
                 upsample_scales: Sequence[int] = (2, 4),
                 decoder_guidance_proj_dims: Sequence[int] = (32, 16),
                 decoder_dims: Sequence[int] = (64, 32), hidden_dim: int = 256,
                 upsample_mode: str = 'bilinear', class_chunk_size: Optional[int] = None,
                 num_classes: int = 171, ignore_index: int = 255, align_corners: bool = False,
                 init_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(clip_width=clip_width, upsample_dims=upsample_dims,
                         upsample_scales=upsample_scales,
                         decoder_guidance_proj_dims=decoder_guidance_proj_dims,
                         decoder_dims=decoder_dims, hidden_dim=hidden_dim,
                         upsample_mode=upsample_mode, class_chunk_size=class_chunk_size,
                         num_classes=num_classes, ignore_index=ignore_index,
                         align_corners=align_corners, init_cfg=init_cfg, **kwargs)
