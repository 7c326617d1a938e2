"""SED's cost map (the neck): cosine cost volume and its per-class embedding.

Xie et al., "SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation",
CVPR 2024 (arXiv:2311.15537); official code https://github.com/xb534/SED
(``sed/modeling/transformer/model.py``: ``Aggregator.correlation``, ``corr_embed``, ``conv1``).
SED aggregates no further before its decoder, so the neck returns the embedded cost and the
raw correlation, which the decoder
(:class:`~mmseg_escnet.models.decode_heads.sed_head.SEDHead`) also reads for its cost-map skips.
The parameter name ``conv1`` equals the official one below
``sem_seg_head.predictor.transformer.``.
"""
from typing import Optional

import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from torch import Tensor

from ..layers.cost_volume import correlation, embed_cost, select_classes
from ..structures import AggregatedCost

__all__ = ['SEDCostNeck']


@MODELS.register_module()
class SEDCostNeck(BaseModule):
    """Cosine cost volume of dense CLIP features and class prompts, embedded per class.

    Steps: ``corr[b, p, t] = <l2n(img), l2n(text[t, p])>`` (no temperature), an optional
    test-time class filter and top-``pad_len`` pruning
    (:func:`~mmseg_escnet.models.layers.cost_volume.select_classes`; SED prunes nothing), then
    ``conv1`` (7 x 7, P -> hidden) on every class.

    Args:
        prompt_channel (int): number P of prompt templates per class (SED: 80).
        hidden_dim (int): channels of the embedded cost.
        pad_len (int, optional): keep only the top ``pad_len`` classes by maximal correlation
            when there are more; 0/None (the official behaviour) keeps all.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self, *, prompt_channel: int = 80, hidden_dim: int = 128,
                 pad_len: Optional[int] = 0, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if prompt_channel < 1 or hidden_dim < 1:
            raise ValueError(f'prompt_channel ({prompt_channel}) and hidden_dim ({hidden_dim}) '
                             'must be positive')
        if pad_len is not None and pad_len < 0:
            raise ValueError(f'pad_len must be >= 0 or None, got {pad_len}')
        self.prompt_channel = prompt_channel
        self.hidden_dim = hidden_dim
        self.pad_len = pad_len or 0
        self.conv1 = nn.Conv2d(prompt_channel, hidden_dim, kernel_size=7, stride=1, padding=3)

    def forward(self, img_feats: Tensor, text_feats: Tensor, appearance: Optional[Tensor] = None,
                class_filter: Optional[dict] = None) -> AggregatedCost:
        """Build and embed the cost volume.

        Args:
            img_feats (Tensor): (B, C, h, w) dense CLIP image features (the projected res5).
            text_feats (Tensor): (B, T, P, C) class prompt embeddings.
            appearance (Tensor, optional): ignored (the common neck call passes the dense
                features again; SED uses no appearance guidance).
            class_filter (dict, optional): test-time class filter (``test_cfg.class_filter``);
                ``'topk'``/``'pixel_topk'`` act here, ``'sed_cer'`` in the decode head.

        Returns:
            AggregatedCost: ``cost`` (B, hidden_dim, T', h, w), ``class_index`` (None, or
            (B, T') the kept classes) and ``corr`` (B, P, T', h, w) the raw correlation.
        """
        if img_feats.dim() != 4 or text_feats.dim() != 4 or \
                text_feats.shape[-1] != img_feats.shape[1]:
            raise ValueError(f'expected img_feats (B, C, h, w) and text_feats (B, T, P, C), got '
                             f'{tuple(img_feats.shape)} and {tuple(text_feats.shape)}')
        if text_feats.shape[2] != self.prompt_channel:
            raise ValueError(f'text_feats has {text_feats.shape[2]} prompts per class, '
                             f'prompt_channel is {self.prompt_channel}')
        corr = correlation(img_feats, text_feats)  # (B, P, T, h, w)
        corr, _, class_index = select_classes(corr, text_feats, pad_len=self.pad_len,
                                              class_filter=class_filter)
        cost = embed_cost(self.conv1, corr)  # (B, hidden, T', h, w)
        return AggregatedCost(cost=cost, class_index=class_index, corr=corr)
