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
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from ..layers.cost_volume import (correlation, embed_cost, select_classes, select_pooling,
                                  text_guidance)
from ..layers.guided_swin import GuidedSwinBlockPair
from ..layers.linear_class_attention import ClassTransformerLayer, PoolSize
from ..structures import AggregatedCost

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
class CATSegAggregator(BaseModule):
    """Cost volume between dense CLIP image features and class text embeddings, aggregated.

    Steps: cosine correlation (B, P, T, h, w) -> optional top-``pad_len`` class pruning ->
    ``conv1`` (7x7, P -> hidden) per class -> appearance guidance (3x3 conv + ReLU) and text
    guidance (mean over prompts, L2 norm, Linear + ReLU) -> ``num_layers`` x
    (guided Swin pair, class transformer).

    Args:
        text_guidance_dim (int): channels C of the text embeddings (0: no text guidance).
        text_guidance_proj_dim (int): projected text-guidance channels.
        appearance_guidance_dim (int): channels of the appearance guidance input
            (0: no appearance guidance).
        appearance_guidance_proj_dim (int): projected appearance-guidance channels.
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

    def __init__(self, *, text_guidance_dim: int = 512, text_guidance_proj_dim: int = 128,
                 appearance_guidance_dim: int = 512, appearance_guidance_proj_dim: int = 128,
                 num_layers: int = 2, num_heads: int = 4, hidden_dim: int = 128,
                 pooling_size: PoolSize = (2, 2), test_pooling_size: PoolSize = None,
                 feature_resolution: Sequence[int] = (24, 24), window_size: int = 12,
                 prompt_channel: int = 1, pad_len: Optional[int] = 256,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(feature_resolution) != 2:
            raise ValueError(f'feature_resolution must be (h, w), got {feature_resolution!r}')
        self.pooling_size = pooling_size
        self.test_pooling_size = test_pooling_size
        self.feature_resolution = tuple(feature_resolution)
        self.pad_len = pad_len or 0
        app_proj = appearance_guidance_proj_dim if appearance_guidance_dim > 0 else 0
        text_proj = text_guidance_proj_dim if text_guidance_dim > 0 else 0

        self.layers = nn.ModuleList([
            CATSegAggregatorLayer(hidden_dim=hidden_dim, appearance_guidance_dim=app_proj,
                                  text_guidance_dim=text_proj, num_heads=num_heads,
                                  input_resolution=self.feature_resolution,
                                  window_size=window_size, pooling_size=pooling_size,
                                  pad_len=self.pad_len) for _ in range(num_layers)
        ])
        self.prompt_channel = prompt_channel  # P, checked against the vocabulary at build
        # the CLIP widths this neck takes, checked against the backbone at build
        self.clip_dims = {name: dim for name, dim in (('text_guidance_dim', text_guidance_dim),
                                                      ('appearance_guidance_dim',
                                                       appearance_guidance_dim)) if dim > 0}
        self.conv1 = nn.Conv2d(prompt_channel, hidden_dim, kernel_size=7, stride=1, padding=3)
        self.guidance_projection = nn.Sequential(
            nn.Conv2d(appearance_guidance_dim, app_proj, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
        ) if app_proj > 0 else None
        self.text_guidance_projection = nn.Sequential(
            nn.Linear(text_guidance_dim, text_proj),
            nn.ReLU(),
        ) if text_proj > 0 else None

    def forward(self, img_feats: torch.Tensor, text_feats: torch.Tensor,
                appearance_guidance: Optional[torch.Tensor],
                class_filter: Optional[dict] = None) -> AggregatedCost:
        """Build and aggregate the cost volume.

        Args:
            img_feats (torch.Tensor): (B, C, h, w) dense CLIP image features.
            text_feats (torch.Tensor): (B, T, P, C) L2-normalised class text embeddings.
            appearance_guidance (torch.Tensor, optional): (B, Ca, h, w) appearance guidance
                (CAT-Seg passes ``img_feats`` again); ignored if appearance_guidance_dim is 0.
            class_filter (dict, optional): test-time class filter (``test_cfg.class_filter``,
                :func:`~mmseg_escnet.models.layers.cost_volume.filter_classes`): everything
                after the correlation runs on the kept classes only.

        Returns:
            AggregatedCost: ``cost`` (B, hidden_dim, T', h, w) and ``class_index`` (None, or
            (B, T') with the classes kept when T > pad_len).
        """
        assert tuple(img_feats.shape[-2:]) == self.feature_resolution, img_feats.shape
        corr = correlation(img_feats, text_feats)  # (B, P, T, h, w)
        corr, text_feats, class_index = select_classes(corr, text_feats, pad_len=self.pad_len,
                                                      class_filter=class_filter)
        cost = embed_cost(self.conv1, corr)  # (B, hidden, T', h, w)
        app_guidance = None
        if self.guidance_projection is not None:
            app_guidance = self.guidance_projection(appearance_guidance)  # (B, Ga', h, w)
        guidance = text_guidance(self.text_guidance_projection, text_feats)  # (B, T', Gt')
        pooling_size = select_pooling(self.training, self.pooling_size, self.test_pooling_size)
        for layer in self.layers:
            cost = layer(cost, app_guidance, guidance, pooling_size=pooling_size)
        return AggregatedCost(cost=cost, class_index=class_index)
