"""Converters from official checkpoints to mmseg_escnet parameter names."""
from .catseg_official import convert_catseg_state_dict, map_catseg_key, strip_prefix

__all__ = ['convert_catseg_state_dict', 'map_catseg_key', 'strip_prefix']
