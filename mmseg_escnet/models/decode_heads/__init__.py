"""Decode heads: the U-Net upsampling decoder of CAT-Seg, which ESC-Net uses with bilinear
upsampling (a config, ``upsample_mode='bilinear'``), SED's gradual fusion decoder and ERR-Seg's
up-decoder."""
from .catseg_head import CATSegHead
from .errseg_head import ERRSegHead
from .sed_head import SEDHead

__all__ = ['CATSegHead', 'ERRSegHead', 'SEDHead']
