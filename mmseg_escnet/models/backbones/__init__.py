"""Backbones."""
from .clip import CLIPBackbone

__all__ = ['CLIPBackbone']
