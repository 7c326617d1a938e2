"""The contracts between the parts of an open-vocabulary model (documented once, with shapes).

B images, T classes of the vocabulary, T' <= T classes the neck kept (CAT-Seg prunes a large
vocabulary to its top ``pad_len`` classes), C the cost-volume channels, h x w the CLIP grid.

backbone -> neck:  dense CLIP features (B, C_clip, h, w) and the class text embeddings
                   (B, T, P, C_clip), plain tensors.
neck -> segmentor: :class:`AggregatedCost`.
segmentor -> head: :class:`DecodeInputs` (the neck's output plus the CLIP block outputs the
                   decoder takes as skip connections, and T).
head -> segmentor: logits (B, T, H', W'); classes the neck did not keep get a logit that never
                   wins. The segmentor returns logits in every inference mode.
"""
from typing import List, NamedTuple, Optional

from torch import Tensor

__all__ = ['AggregatedCost', 'DecodeInputs']


class AggregatedCost(NamedTuple):
    """What every neck returns.

    Attributes:
        cost (Tensor): (B, C, T', h, w) the aggregated cost volume.
        class_index (Tensor, optional): (B, T') long, ascending: class ``class_index[b, j]`` of
            the vocabulary is slice ``j`` of ``cost[b]``; None when all T classes were kept.
    """
    cost: Tensor
    class_index: Optional[Tensor]


class DecodeInputs(NamedTuple):
    """What every decode head reads.

    Attributes:
        cost (Tensor): (B, C, T', h, w), as in :class:`AggregatedCost`.
        class_index (Tensor, optional): (B, T'), as in :class:`AggregatedCost`.
        clip_features (list[Tensor]): (B, D, h, w) intermediate CLIP block outputs, shallower
            first (the decoder's skip connections).
        num_classes (int): T, the size of the vocabulary.
    """
    cost: Tensor
    class_index: Optional[Tensor]
    clip_features: List[Tensor]
    num_classes: int
