"""Reusable building blocks of the cost-aggregation models (CAT-Seg, ESC-Net, SED, LMSeg)."""
from .class_chunks import check_class_chunk_size, map_class_chunks, on_class_maps
from .guidance_projection import (map_guidance_projection, map_guidance_projections,
                                  text_guidance_projection)
from .guided_swin import (GuidedSwinBlock, GuidedSwinBlockPair, GuidedWindowAttention,
                          shifted_window_mask, window_partition, window_reverse)
from .linear_class_attention import ClassTransformerLayer, GuidedLinearAttention, LinearAttention
from .sam_clip_fusion import SAMCLIPFusion
from .upsampling import DoubleConv, Up

__all__ = [
    'window_partition', 'window_reverse', 'shifted_window_mask', 'GuidedWindowAttention',
    'GuidedSwinBlock', 'GuidedSwinBlockPair', 'LinearAttention', 'GuidedLinearAttention',
    'ClassTransformerLayer', 'DoubleConv', 'Up', 'SAMCLIPFusion', 'map_class_chunks',
    'check_class_chunk_size', 'on_class_maps', 'map_guidance_projection',
    'map_guidance_projections', 'text_guidance_projection'
]
