"""The contracts between the parts of an open-vocabulary model (documented once, with shapes).

B images, T classes of the vocabulary, T' <= T classes the neck kept (CAT-Seg prunes a large
vocabulary to its top ``pad_len`` classes), P prompts per class, C the cost-volume channels,
h x w the CLIP grid.

**The cost-volume layout** is (B, C, T, h, w), channels before classes, in every neck, decode
head and layer of the four models (CAT-Seg, ESC-Net, SED, LMSeg): the correlation is
(B, P, T, h, w), the embedded and aggregated cost (B, C, T', h, w), a decoder stage's features
(B, C_i, T', h_i, w_i). No module works in another layout. A per-class 2-D operation (conv,
Swin block, decoder stage) folds the classes into the batch, images major, and back:
(B, C, T, h, w) -> (B*T, C, h, w) -> (B, C', T, h', w')
(``layers/class_chunks.py``: ``fold_classes``, ``on_class_maps``; ``map_class_chunks`` runs such
an operation on chunks of classes); the class attention reads the layout directly.

backbone -> neck:  dense CLIP features (B, C_clip, h, w) and the class text embeddings
                   (B, T, P, C_clip), plain tensors (C_clip: ``embed_dim``).
neck -> segmentor: :class:`AggregatedCost`.
segmentor -> head: :class:`DecodeInputs` (the neck's output plus the CLIP block outputs the
                   decoder takes as skip connections, and T).
head -> segmentor: logits (B, T, H', W'); classes the neck did not keep get ``PRUNED_LOGIT``
                   everywhere. The segmentor returns logits in every inference mode, at the image
                   size only for the classes kept (see ``segmentors/class_sparse.py``).
"""
from typing import Any, List, Mapping, NamedTuple, Optional

from torch import Tensor

__all__ = ['AggregatedCost', 'ClassFilter', 'DecodeInputs', 'PRUNED_LOGIT']

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
        class_filter (ClassFilter, optional): the test-time class filter when the head applies
            it (``stage == 'head'``: SED's ``'sed_cer'``); None otherwise and in training.
    """
    cost: Tensor
    class_index: Optional[Tensor]
    clip_features: List[Tensor]
    num_classes: int
    corr: Optional[Tensor] = None
    class_filter: Optional['ClassFilter'] = None

    @classmethod
    def from_cost(cls, cost: AggregatedCost, clip_features: List[Tensor], num_classes: int,
                  class_filter: Optional['ClassFilter'] = None) -> 'DecodeInputs':
        """The neck's output plus what the segmentor adds."""
        return cls(cost.cost, cost.class_index, clip_features, num_classes, cost.corr,
                   class_filter)


class ClassFilter(NamedTuple):
    """A test-time class filter (``test_cfg.class_filter``), checked once when it is parsed.

    Everything after the initial correlation runs on the classes it keeps.

    Attributes:
        type (str): the rule: ``'topk'`` (LMSeg's category filtering: the k classes of highest
            image-level correlation), ``'pixel_topk'`` (SED's early rejection on the correlation:
            the union of every pixel's k best classes), ``'rrhc'`` (ERR-Seg's compact vocabulary:
            the k classes most often among the pixels' best three, per image; in training the
            neck puts the ground-truth classes first), all applied by the neck; ``'sed_cer'``
            (SED's category early rejection before every decoder stage), applied by a decode
            head with auxiliary heads (``'sed_cer'`` in the head's ``class_filters``).
        k (int): classes kept (per image or per pixel), >= 1.
    """
    type: str
    k: int

    #: Every rule, and the stage that applies it.
    STAGES = {'topk': 'neck', 'pixel_topk': 'neck', 'rrhc': 'neck', 'sed_cer': 'head'}

    @property
    def stage(self) -> str:
        """``'neck'`` or ``'head'``: the stage that applies this filter."""
        return self.STAGES[self.type]

    @classmethod
    def from_cfg(cls, cfg: Optional[Mapping[str, Any]]) -> Optional['ClassFilter']:
        """Parse ``dict(type=..., k=...)`` (None: no filter).

        Raises:
            ValueError: naming the bad type, key or value.
        """
        if cfg is None or isinstance(cfg, ClassFilter):
            return cfg
        if not isinstance(cfg, Mapping) or cfg.get('type') not in cls.STAGES:
            raise ValueError(f'class_filter must be None or a dict with type in '
                             f'{tuple(cls.STAGES)}, got {cfg!r}')
        k = cfg.get('k')
        if set(cfg) - {'type', 'k'} or isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"class_filter needs exactly 'type' and an int k >= 1, got "
                             f'{dict(cfg)!r}')
        return cls(cfg['type'], k)

    def to_cfg(self) -> dict:
        """The config form, ``dict(type=..., k=...)``."""
        return dict(type=self.type, k=self.k)
