"""Necks: CAT-Seg's cost aggregation and ESC-Net's ESC blocks (PPG, SAM block, VLF)."""
from .catseg_aggregator import CATSegAggregator, CATSegAggregatorLayer, prune_classes
from .esc_neck import ESCNeck
from .ppg import PseudoPromptGenerator, PseudoPrompts
from .sam_block import SAMBlock, build_prompt_encoder
from .vlf import VisionLanguageFusion

__all__ = [
    'CATSegAggregator', 'CATSegAggregatorLayer', 'prune_classes', 'ESCNeck', 'PseudoPromptGenerator',
    'PseudoPrompts', 'SAMBlock', 'build_prompt_encoder', 'VisionLanguageFusion'
]
