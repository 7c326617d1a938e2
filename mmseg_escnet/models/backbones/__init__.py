"""Backbones: CLIP (ViT, ConvNeXt) and SAM's image encoder (LMSeg's second visual encoder)."""
from .clip import CLIPBackbone
from .clip_convnext import CLIPConvNeXtBackbone
from .sam_image_encoder import SAMImageEncoder

__all__ = ['CLIPBackbone', 'CLIPConvNeXtBackbone', 'SAMImageEncoder']
