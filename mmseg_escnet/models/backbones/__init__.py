"""Backbones."""
from .clip import CLIPBackbone
from .clip_convnext import CLIPConvNeXtBackbone

__all__ = ['CLIPBackbone', 'CLIPConvNeXtBackbone']
