"""Decode heads: the U-Net upsampling decoder of CAT-Seg, which ESC-Net uses with bilinear
upsampling (a config, ``upsample_mode='bilinear'``)."""
from .catseg_head import CATSegHead

__all__ = ['CATSegHead']
