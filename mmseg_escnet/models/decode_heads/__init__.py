"""decode_heads."""
from .catseg_head import CATSegHead

__all__ = ['CATSegHead']
