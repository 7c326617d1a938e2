"""decode_heads."""
from .catseg_head import CATSegHead
from .escnet_head import ESCNetHead

__all__ = ['CATSegHead', 'ESCNetHead']
