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
from typing import Dict, Optional

from mmseg.registry import MODELS
from torch import Tensor

from ..structures import AggregatedCost, ClassFilter
from .cost_opening import CostVolumeNeck, cost_embedding

__all__ = ['SEDCostNeck']


@MODELS.register_module()
class SEDCostNeck(CostVolumeNeck):
    """Cosine cost volume of dense CLIP features and class prompts, embedded per class.

    The shared opening (:mod:`.cost_opening`) without guidances:
    ``corr[b, p, t] = <l2n(img), l2n(text[t, p])>`` (no temperature), an optional test-time class
    filter and top-``pad_len`` pruning (SED prunes nothing), then ``conv1`` (7 x 7, P -> hidden)
    on every class, in the layout (B, C, T, h, w) of :mod:`mmseg_escnet.models.structures`.

    Args:
        prompt_channel (int): number P of prompt templates per class (SED: 80).
        hidden_dim (int): channels of the embedded cost.
        pad_len (int, optional): keep only the top ``pad_len`` classes by maximal correlation
            when there are more; 0/None (the official behaviour) keeps all.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    #: SED takes no CLIP width (no guidance projection): only P is filled from the model.
    derived_sizes: Dict[str, str] = {'prompt_channel': 'num_prompts'}
    appearance_projection_name = None

    def __init__(self, *, prompt_channel: int = 80, hidden_dim: int = 128,
                 pad_len: Optional[int] = 0, init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dim=None, prompt_channel=prompt_channel, pad_len=pad_len,
                         init_cfg=init_cfg)
        self.hidden_dim = hidden_dim
        self.conv1 = cost_embedding(prompt_channel, hidden_dim, kernel_size=7)

    def forward(self, img_feats: Tensor, text_feats: Tensor, appearance: Optional[Tensor] = None,
                class_filter: Optional[ClassFilter] = None) -> AggregatedCost:
        """Build and embed the cost volume.

        Args:
            img_feats (Tensor): (B, C, h, w) dense CLIP image features (the projected res5).
            text_feats (Tensor): (B, T, P, C) class prompt embeddings.
            appearance (Tensor, optional): ignored (the common neck call passes the dense
                features again; SED uses no appearance guidance).
            class_filter (ClassFilter, optional): the neck's test-time class filter, passed on
                to :meth:`~.cost_opening.CostVolumeNeck.open_cost` (``'sed_cer'`` acts in the
                decode head).

        Returns:
            AggregatedCost: ``cost`` (B, hidden_dim, T', h, w), ``class_index`` (None, or
            (B, T') the kept classes) and ``corr`` (B, P, T', h, w) the raw correlation.
        """
        opening = self.open_cost(img_feats, text_feats, class_filter=class_filter)
        return AggregatedCost(cost=opening.cost, class_index=opening.class_index,
                              corr=opening.corr)
