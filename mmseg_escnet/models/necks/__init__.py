"""Necks: CAT-Seg's cost aggregation, ESC-Net's ESC blocks (PPG, SAM block, VLF), SED's cost map."""
from .catseg_aggregator import CATSegAggregator, CATSegAggregatorLayer
from .cost_opening import CostOpening, CostVolumeNeck
from .esc_neck import ESCNeck
from .ppg import PseudoPromptGenerator, PseudoPrompts
from .sam_block import SAMBlock, build_prompt_encoder, encode_prompts
from .sed_cost import SEDCostNeck
from .vlf import VisionLanguageFusion

__all__ = [
    'CATSegAggregator', 'CATSegAggregatorLayer', 'CostOpening', 'CostVolumeNeck', 'ESCNeck',
    'PseudoPromptGenerator', 'PseudoPrompts', 'SAMBlock', 'build_prompt_encoder', 'encode_prompts',
    'VisionLanguageFusion', 'SEDCostNeck'
]
