"""The contracts between the parts of an open-vocabulary model (documented once, with shapes).

B images, T classes of the vocabulary, T' <= T classes the neck kept (CAT-Seg prunes a large
vocabulary to its top ``pad_len`` classes), C the cost-volume channels, h x w the CLIP grid.

backbone -> neck:  dense CLIP features (B, C_clip, h, w) and the class text embeddings
                   (B, T, P, C_clip), plain tensors.
neck -> segmentor: :class:`AggregatedCost`.
segmentor -> head: :class:`DecodeInputs` (the neck's output plus the CLIP block outputs the
                   decoder takes as skip connections, and T).
head -> segmentor: logits (B, T, H', W'); classes the neck did not keep get ``PRUNED_LOGIT``
                   everywhere. The segmentor returns logits in every inference mode, at the image
                   size only for the classes kept (see ``segmentors/class_sparse.py``).
"""
from typing import List, NamedTuple, Optional

from torch import Tensor

__all__ = ['AggregatedCost', 'DecodeInputs', 'PRUNED_LOGIT']

#: Logit of every pixel of a class the neck did not keep (the official value for pruned classes).
PRUNED_LOGIT = -100.0


class AggregatedCost(NamedTuple):
    """What every neck returns.

    Attributes:
        cost (Tensor): (B, C, T', h, w) the aggregated cost volume.
        class_index (Tensor, optional): (B, T') long, ascending: class ``class_index[b, j]`` of
            the vocabulary is slice ``j`` of ``cost[b]``; None when all T classes were kept.
        corr (Tensor, optional): (B, P, T', h, w) the raw cosine correlation of the kept
            classes, for decoders that read it besides the aggregated cost (SED's cost-map
            skips); None when the decoder does not need it.
    """
    cost: Tensor
    class_index: Optional[Tensor]
    corr: Optional[Tensor] = None


class DecodeInputs(NamedTuple):
    """What every decode head reads.

    Attributes:
        cost (Tensor): (B, C, T', h, w), as in :class:`AggregatedCost`.
        class_index (Tensor, optional): (B, T'), as in :class:`AggregatedCost`.
        clip_features (list[Tensor]): (B, D, h, w) intermediate CLIP block outputs, shallower
            first (the decoder's skip connections).
        num_classes (int): T, the size of the vocabulary.
        corr (Tensor, optional): (B, P, T', h, w), as in :class:`AggregatedCost`.
        class_filter (dict, optional): the test-time class filter (``test_cfg.class_filter``)
            for heads that filter classes themselves (SED's ``'sed_cer'``); None in training.
    """
    cost: Tensor
    class_index: Optional[Tensor]
    clip_features: List[Tensor]
    num_classes: int
    corr: Optional[Tensor] = None
    class_filter: Optional[dict] = None

    @classmethod
    def from_cost(cls, cost: AggregatedCost, clip_features: List[Tensor], num_classes: int,
                  class_filter: Optional[dict] = None) -> 'DecodeInputs':
        """The neck's output plus what the segmentor adds."""
        return cls(cost.cost, cost.class_index, clip_features, num_classes, cost.corr,
                   class_filter)
