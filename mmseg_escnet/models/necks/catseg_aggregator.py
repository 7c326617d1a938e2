"""CAT-Seg cost aggregation (the neck): cost volume, embedding, guidance, aggregator layers.

Cho et al., "CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation",
CVPR 2024 (arXiv:2303.11797); official code https://github.com/cvlab-kaist/CAT-Seg
(MIT licence).  This is a re-implementation of the encoder part of its ``Aggregator``; the
upsampling decoder lives in :class:`mmseg_escnet.models.decode_heads.catseg_head.CATSegHead`.
Parameter names equal the official ones below ``sem_seg_head.predictor.transformer.``.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from ..layers.guidance_projection import map_guidance_projection, text_guidance_projection
from ..layers.guided_swin import GuidedSwinBlockPair
from ..layers.linear_class_attention import ClassTransformerLayer, PoolSize
from ..structures import AggregatedCost, ClassFilter
from .cost_opening import CostVolumeNeck, cost_embedding

__all__ = ['CATSegAggregatorLayer', 'CATSegAggregator']


class CATSegAggregatorLayer(nn.Module):
    """Spatial (guided Swin pair) then class (linear transformer) aggregation.

    Args:
        hidden_dim (int): cost-volume channels C.
        appearance_guidance_dim (int): projected appearance-guidance channels (0: none).
        text_guidance_dim (int): projected text-guidance channels (0: none).
        num_heads (int): heads of both attentions.
        input_resolution (tuple[int, int]): (H, W) of the cost volume.
        window_size (int): Swin window side.
        pooling_size (tuple[int, int] | int | None): default class-layer pooling.
        pad_len (int): class-axis padding length (0: none).
    """

    def __init__(self, *, hidden_dim: int, appearance_guidance_dim: int,
                 text_guidance_dim: int, num_heads: int, input_resolution: Tuple[int, int],
                 window_size: int, pooling_size: PoolSize, pad_len: int) -> None:
        super().__init__()
        self.swin_block = GuidedSwinBlockPair(dim=hidden_dim,
                                              guidance_dim=appearance_guidance_dim,
                                              input_resolution=input_resolution,
                                              num_heads=num_heads, window_size=window_size)
        self.attention = ClassTransformerLayer(hidden_dim=hidden_dim,
                                               guidance_dim=text_guidance_dim,
                                               num_heads=num_heads, pooling_size=pooling_size,
                                               pad_len=pad_len)

    def forward(self, x: torch.Tensor, appearance_guidance: Optional[torch.Tensor],
                text_guidance: Optional[torch.Tensor],
                pooling_size: PoolSize = None) -> torch.Tensor:
        """Aggregate.

        Args:
            x (torch.Tensor): (B, C, T, H, W) cost volume.
            appearance_guidance (torch.Tensor, optional): (B, Ga, H, W).
            text_guidance (torch.Tensor, optional): (B, T, Gt).
            pooling_size (tuple[int, int] | int, optional): class-layer pooling override.

        Returns:
            torch.Tensor: (B, C, T, H, W).
        """
        x = self.swin_block(x, appearance_guidance)
        return self.attention(x, text_guidance, pooling_size=pooling_size)


@MODELS.register_module()
class CATSegAggregator(CostVolumeNeck):
    """Cost volume between dense CLIP image features and class text embeddings, aggregated.

    Steps: the shared opening (:mod:`.cost_opening`: cosine correlation (B, P, T, h, w),
    optional top-``pad_len`` class pruning, ``conv1`` (7x7, P -> hidden) per class, appearance
    guidance (``guidance_projection``: 3x3 conv + ReLU) and text guidance (mean over prompts,
    L2 norm, ``text_guidance_projection``: Linear + ReLU)), then ``num_layers`` x
    (guided Swin pair, class transformer), in the layout (B, C, T, h, w) of
    :mod:`mmseg_escnet.models.structures`.

    Args:
        embed_dim (int): CLIP embedding width C of the image features and text embeddings.
        text_guidance_dim (int): projected text-guidance channels (0: no text guidance).
        appearance_guidance_dim (int): projected appearance-guidance channels (0: no
            appearance guidance).
        num_layers (int): aggregator layers.
        num_heads (int): attention heads.
        hidden_dim (int): cost-volume channels.
        pooling_size (tuple[int, int]): class-layer pooling in training mode.
        test_pooling_size (tuple[int, int], optional): class-layer pooling in eval mode
            (None: same as ``pooling_size``).  CAT-Seg evaluates with (1, 1).
        feature_resolution (tuple[int, int]): (h, w) of the CLIP feature grid.
        window_size (int): Swin window side.
        prompt_channel (int): number P of prompt templates per class.
        pad_len (int, optional): class tokens seen by the class attention; with more classes
            only the top-``pad_len`` by max correlation are kept.  0/None disables both.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self, *, embed_dim: int = 512, text_guidance_dim: int = 128,
                 appearance_guidance_dim: int = 128, num_layers: int = 2, num_heads: int = 4,
                 hidden_dim: int = 128, pooling_size: PoolSize = (2, 2),
                 test_pooling_size: PoolSize = None,
                 feature_resolution: Sequence[int] = (24, 24), window_size: int = 12,
                 prompt_channel: int = 1, pad_len: Optional[int] = 256,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dim=embed_dim, prompt_channel=prompt_channel, pad_len=pad_len,
                         feature_resolution=feature_resolution, pooling_size=pooling_size,
                         test_pooling_size=test_pooling_size, init_cfg=init_cfg)
        self.layers = nn.ModuleList([
            CATSegAggregatorLayer(hidden_dim=hidden_dim,
                                  appearance_guidance_dim=appearance_guidance_dim,
                                  text_guidance_dim=text_guidance_dim, num_heads=num_heads,
                                  input_resolution=self.feature_resolution,
                                  window_size=window_size, pooling_size=pooling_size,
                                  pad_len=self.pad_len) for _ in range(num_layers)
        ])
        self.conv1 = cost_embedding(prompt_channel, hidden_dim, kernel_size=7)
        self.guidance_projection = map_guidance_projection(embed_dim, appearance_guidance_dim)
        self.text_guidance_projection = text_guidance_projection(embed_dim, text_guidance_dim)

    def forward(self, img_feats: torch.Tensor, text_feats: torch.Tensor,
                appearance_guidance: Optional[torch.Tensor],
                class_filter: Optional[ClassFilter] = None) -> AggregatedCost:
        """Build and aggregate the cost volume.

        Args:
            img_feats (torch.Tensor): (B, C, h, w) dense CLIP image features.
            text_feats (torch.Tensor): (B, T, P, C) L2-normalised class text embeddings.
            appearance_guidance (torch.Tensor, optional): (B, C, h, w) appearance guidance
                (CAT-Seg passes ``img_feats`` again; None: ``img_feats``); ignored if
                appearance_guidance_dim is 0.
            class_filter (ClassFilter, optional): the neck's test-time class filter, passed on to
                :meth:`~.cost_opening.CostVolumeNeck.open_cost`: everything after the
                correlation runs on the kept classes only.

        Returns:
            AggregatedCost: ``cost`` (B, hidden_dim, T', h, w) and ``class_index`` (None, or
            (B, T') with the classes kept when T > pad_len).
        """
        opening = self.open_cost(img_feats, text_feats, appearance_guidance, class_filter)
        cost = opening.cost  # (B, hidden, T', h, w)
        for layer in self.layers:
            cost = layer(cost, opening.appearance_guidance, opening.text_guidance,
                         pooling_size=opening.pooling_size)
        return AggregatedCost(cost=cost, class_index=opening.class_index)
