"""Decode heads: the U-Net upsampling decoder of CAT-Seg, which ESC-Net uses with bilinear
upsampling (a config, ``upsample_mode='bilinear'``), and SED's gradual fusion decoder."""
from .catseg_head import CATSegHead
from .sed_head import SEDHead

__all__ = ['CATSegHead', 'SEDHead']
