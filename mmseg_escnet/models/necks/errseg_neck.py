"""ERR-Seg's neck: hierarchical cost maps on a per-image compact vocabulary (RRHC), aggregated by
RRCA layers.

Chen et al., "Efficient Redundancy Reduction for Open-Vocabulary Semantic Segmentation"
(arXiv:2501.17642); official code https://github.com/lchen1019/ERR-Seg
(``err_seg/modeling/modules/decoder.py``, ``Decoder.forward`` up to the up-decoder). In the
layout of :mod:`mmseg_escnet.models.structures` (C the CLIP width, P prompts, H x W the stride-16
grid)::

    dense16 (B, C, H, W), dense32 (B, C, H/2, W/2), text (B, T, P, C)
      -> correlations, cosine                               (B, P, T, H, W), (B, P, T, H/2, W/2)
      -> the K classes of every image (class filter 'rrhc' on the stride-16 correlation; in
         training K = sample_classes_num with the ground-truth classes first)
      -> per class: 7 x 7 conv of each level (corr_proj_convs), the stride-32 one resized to H x W,
         averaged, 1 x 1 conv (low_corr_fusion)                            (B, A, K, H, W)
    stage outputs os32 (B, c3, H/2, W/2), os16 (B, c2, H, W), clamped to [-16, 16]
      -> 3 x 3 conv + ReLU6 each (img_guidance_projection_agg), os32 resized, averaged,
         1 x 1 conv (low_img_fusion)                                       (B, A, H, W)
    the K classes' text -> mean over P, L2-normalised, Linear + GELU    (B, K, A)
      -> RRCA layers (aggregator_layers)                                   (B, A, K, H, W)

Parameter names equal the official ones below ``sem_seg_head.decoder.``, except inside the RRCA
layers (:mod:`~mmseg_escnet.models.layers.rrca`).
"""
from typing import Dict, Optional, Sequence

import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

from ..layers.class_chunks import on_class_maps
from ..layers.cost_volume import correlation, embed_cost, filter_classes, keep_classes, \
    text_guidance
from ..layers.guidance_projection import (clamp_guidance, map_guidance_projections,
                                          text_guidance_projection)
from ..layers.rrca import RRCALayer
from ..structures import AggregatedCost, ClassFilter
from .cost_opening import CostVolumeNeck, cost_embedding

__all__ = ['ERRSegNeck']


@MODELS.register_module()
class ERRSegNeck(CostVolumeNeck):
    """Two-level cost maps of a compact vocabulary per image, aggregated by RRCA layers.

    Args:
        embed_dim (int): CLIP width C (derived from the backbone).
        prompt_channel (int): prompts P per class (ERR-Seg: 1; derived from the vocabulary).
        image_guidance_dims (Sequence[int]): channels of the stage outputs, deepest first
            (os32, os16, os8, os4; derived from the backbone); the neck uses the first two.
        corr_fpn_inter_dim (int): channels of the two cost embeddings.
        guidance_fpn_inter_dim (int): channels of the two guidance projections.
        aggregator_dim (int): channels A of the aggregated cost and of both guidances (the
            official ``corr_fpn_fusion_dim``, ``guidance_fpn_fusion_dim`` and
            ``text_guidance_proj_dim`` all equal it).
        aggregator_scale_ratio (Sequence[int]): one RRCA layer per entry, its key/value
            reduction.
        num_heads (int): attention heads of the RRCA layers.
        class_pooling_size (int): pooling of the class fusion (training and evaluation).
        drop_path_step (float): layer i has stochastic depth ``i * drop_path_step``.
        sample_classes_num (int): K in training (ground-truth classes first); in evaluation
            ``test_cfg.class_filter`` decides (ERR-Seg's configs: ``dict(type='rrhc', k=K)``).
        class_chunk_size (int, optional): classes the spatial fusion takes at once.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    derived_sizes: Dict[str, str] = {'embed_dim': 'embed_dim', 'prompt_channel': 'num_prompts',
                                     'image_guidance_dims': 'stage_dims'}
    appearance_projection_name = None

    def __init__(self, *, embed_dim: int = 640, prompt_channel: int = 1,
                 image_guidance_dims: Sequence[int] = (1024, 512, 256, 128),
                 corr_fpn_inter_dim: int = 256, guidance_fpn_inter_dim: int = 256,
                 aggregator_dim: int = 128, aggregator_scale_ratio: Sequence[int] = (2, 2, 2, 2),
                 num_heads: int = 4, class_pooling_size: int = 2, drop_path_step: float = 0.025,
                 sample_classes_num: int = 32, class_chunk_size: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dim=embed_dim, prompt_channel=prompt_channel, pad_len=0,
                         init_cfg=init_cfg)
        if len(image_guidance_dims) < 2:
            raise ValueError(f'image_guidance_dims needs the os32 and os16 widths first, got '
                             f'{tuple(image_guidance_dims)}')
        if sample_classes_num < 1:
            raise ValueError(f'sample_classes_num must be >= 1, got {sample_classes_num}')
        self.aggregator_dim = aggregator_dim
        self.sample_classes_num = sample_classes_num
        self.corr_proj_convs = nn.ModuleList([
            nn.Sequential(cost_embedding(prompt_channel, corr_fpn_inter_dim, kernel_size=7))
            for _ in range(2)])  # os16, os32
        self.low_corr_fusion = nn.Conv2d(corr_fpn_inter_dim, aggregator_dim, kernel_size=1)
        self.img_guidance_projection_agg = map_guidance_projections(
            image_guidance_dims[:2], [guidance_fpn_inter_dim] * 2, activation=nn.ReLU6)
        self.low_img_fusion = nn.Conv2d(guidance_fpn_inter_dim, aggregator_dim, kernel_size=1)
        self.text_guidance_projection = text_guidance_projection(embed_dim, aggregator_dim,
                                                                 activation=nn.GELU)
        self.aggregator_layers = nn.ModuleList([
            RRCALayer(dim=aggregator_dim, num_heads=num_heads, sr_ratio=ratio,
                      pooling_size=class_pooling_size, drop_path=i * drop_path_step,
                      class_chunk_size=class_chunk_size)
            for i, ratio in enumerate(aggregator_scale_ratio)])

    def class_filter(self, test_filter: Optional[ClassFilter]) -> Optional[ClassFilter]:
        """The filter of the current mode: ``'rrhc'`` with ``sample_classes_num`` in training, the
        test-time one (None: every class) in evaluation."""
        return ClassFilter('rrhc', self.sample_classes_num) if self.training else test_filter

    def forward(self, dense32: Tensor, dense16: Tensor, text_feats: Tensor,
                os32: Tensor, os16: Tensor, class_filter: Optional[ClassFilter] = None,
                required_classes: Optional[Sequence[Tensor]] = None) -> AggregatedCost:
        """Build, embed and aggregate the cost maps of every image's kept classes.

        Args:
            dense32 (Tensor): (B, C, H/2, W/2) CLIP's dense features at stride 32.
            dense16 (Tensor): (B, C, H, W) those of the stride-16 branch.
            text_feats (Tensor): (B, T, P, C) class prompt embeddings.
            os32 (Tensor): (B, c3, H/2, W/2) the last ConvNeXt stage output (unclamped).
            os16 (Tensor): (B, c2, H, W) the third stage output (unclamped).
            class_filter (ClassFilter, optional): the test-time filter (ignored in training).
            required_classes (Sequence[Tensor], optional): training: per image, the ascending
                ground-truth classes kept first.

        Returns:
            AggregatedCost: ``cost`` (B, A, K, H, W) and ``class_index`` (B, K) (None when all
            T classes were kept).
        """
        self.check_inputs(dense16, text_feats)
        height, width = dense16.shape[-2:]
        for name, x in (('dense32', dense32), ('os32', os32), ('os16', os16)):
            size = (height, width) if name == 'os16' else (height // 2, width // 2)
            if x.shape[0] != dense16.shape[0] or tuple(x.shape[-2:]) != size:
                raise ValueError(f'{name} must be (B={dense16.shape[0]}, *, {size[0]}, {size[1]}) '
                                 f'for dense16 {tuple(dense16.shape)}, got {tuple(x.shape)}')
        corr16 = correlation(dense16, text_feats)  # (B, P, T, H, W)
        corr32 = correlation(dense32, text_feats)  # (B, P, T, H/2, W/2)
        rule = self.class_filter(class_filter)
        class_index = filter_classes(corr16, rule, required_classes if self.training else None)
        corr16, text = keep_classes(corr16, text_feats, class_index)  # (B, P, K, H, W)
        corr32, _ = keep_classes(corr32, text_feats, class_index)     # (B, P, K, H/2, W/2)

        embed16 = embed_cost(self.corr_proj_convs[0], corr16)  # (B, inter, K, H, W)
        embed32 = on_class_maps(lambda maps: F.interpolate(
            self.corr_proj_convs[1](maps), size=(height, width), mode='bilinear',
            align_corners=False), corr32)  # (B, inter, K, H, W)
        cost = on_class_maps(self.low_corr_fusion, (embed16 + embed32) / 2)  # (B, A, K, H, W)

        g32, g16 = (proj(clamp_guidance(x)) for proj, x in
                    zip(self.img_guidance_projection_agg, (os32, os16)))
        g32 = F.interpolate(g32, size=(height, width), mode='bilinear', align_corners=False)
        image_guidance = self.low_img_fusion((g32 + g16) / 2)  # (B, A, H, W)
        text_guidance_ = text_guidance(self.text_guidance_projection, text)  # (B, K, A)

        for layer in self.aggregator_layers:
            cost = layer(cost, image_guidance, text_guidance_)
        return AggregatedCost(cost=cost, class_index=class_index)
