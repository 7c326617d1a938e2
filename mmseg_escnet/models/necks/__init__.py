"""Necks: CAT-Seg's cost aggregation, ESC-Net's ESC blocks (PPG, SAM block, VLF), SED's cost map,
ERR-Seg's hierarchical cost maps with RRCA."""
from .catseg_aggregator import CATSegAggregator, CATSegAggregatorLayer
from .cost_opening import CostOpening, CostVolumeNeck
from .errseg_neck import ERRSegNeck
from .esc_neck import ESCNeck
from .ppg import PseudoPromptGenerator, PseudoPrompts
from .sam_block import SAMBlock, build_prompt_encoder, encode_prompts
from .sed_cost import SEDCostNeck
from .vlf import VisionLanguageFusion

__all__ = [
    'CATSegAggregator', 'CATSegAggregatorLayer', 'CostOpening', 'CostVolumeNeck', 'ERRSegNeck',
    'ESCNeck',
    'PseudoPromptGenerator', 'PseudoPrompts', 'SAMBlock', 'build_prompt_encoder', 'encode_prompts',
    'VisionLanguageFusion', 'SEDCostNeck'
]
