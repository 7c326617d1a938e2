"""The image-text cost volume shared by the CLIP-correlation models (CAT-Seg, ESC-Net, ...).

Every model of the family starts the same way (CAT-Seg §3.2; ESC-Net Eq. 1)::

    img_feats (B, C, h, w), text_feats (B, T, P, C)
      -> correlation: cosine of every pixel with every class prompt   (B, P, T, h, w)
      -> select_classes: an optional test-time filter (top-k classes), then the top
         ``pad_len`` classes by maximal correlation                   (B, P, T', h, w)
      -> embed_cost: a per-class conv of the P template channels      (B, hidden, T', h, w)
    and guides its aggregation with
      -> text_guidance: the prompts' mean embedding, projected        (B, T', G)

The necks own the modules (under the parameter names of their official checkpoints); their shared
opening (:mod:`mmseg_escnet.models.necks.cost_opening`) calls these functions, in the cost-volume
layout of :mod:`mmseg_escnet.models.structures`.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..structures import ClassFilter
from .class_chunks import on_class_maps
from .class_frequency import frequency_top_k
from .linear_class_attention import PoolSize

__all__ = ['correlation', 'filter_classes', 'pixel_top_k_union', 'keep_classes',
           'select_classes', 'embed_cost', 'text_guidance', 'select_pooling']


def correlation(img_feats: Tensor, text_feats: Tensor) -> Tensor:
    """Cosine similarity of every pixel with every class prompt (ESC-Net Eq. 1).

    Args:
        img_feats (Tensor): (B, C, h, w) dense image features.
        text_feats (Tensor): (B, T, P, C) class prompt embeddings.

    Returns:
        Tensor: (B, P, T, h, w).
    """
    img = F.normalize(img_feats, dim=1)
    text = F.normalize(text_feats, dim=-1)
    return torch.einsum('bchw,btpc->bpthw', img, text)


def filter_classes(corr: Tensor, class_filter: Optional[ClassFilter],
                   required: Optional[Sequence[Tensor]] = None) -> Optional[Tensor]:
    """The classes a class filter keeps, from the initial correlation.

    * ``topk`` (LMSeg's category filtering): the k classes with the highest image-level score,
      the maximal correlation over the templates and pixels;
    * ``pixel_topk`` (SED's category early rejection, on the correlation): the union of every
      pixel's k best classes (correlation averaged over the templates); the union is taken
      over the batch, so all images keep the same classes (evaluation runs one image at a
      time);
    * ``rrhc`` (ERR-Seg's compact vocabulary, :mod:`.class_frequency`): per image, the k classes
      most often among the pixels' best three (correlation averaged over the templates),
      ``required`` classes first.

    Args:
        corr (Tensor): (B, P, T, h, w) correlation.
        class_filter (ClassFilter, optional): a filter of the neck stage
            (:class:`~mmseg_escnet.models.structures.ClassFilter`).
        required (Sequence[Tensor], optional): ``rrhc`` only: per image, ascending classes kept
            first (ERR-Seg's training: the ground-truth classes).

    Returns:
        Tensor, optional: (B, T') kept classes, ascending; None when all are kept.

    Raises:
        ValueError: for a filter a decode head applies (``stage == 'head'``).
    """
    if class_filter is not None and class_filter.stage != 'neck':
        raise ValueError(f'class_filter {class_filter.type!r} is applied by the decode head, '
                         'not on the correlation')
    if required is not None and (class_filter is None or class_filter.type != 'rrhc'):
        raise ValueError("required classes are only taken by the 'rrhc' class filter")
    if class_filter is None or class_filter.k >= corr.shape[2]:
        return None
    k = class_filter.k
    if class_filter.type == 'rrhc':
        return frequency_top_k(corr.mean(dim=1), k, required)  # (B, k)
    if class_filter.type == 'topk':
        score = corr.transpose(1, 2).flatten(2).max(dim=-1).values  # (B, T)
        return score.topk(k, dim=-1).indices.sort(dim=-1).values  # (B, k)
    kept = pixel_top_k_union(corr.mean(dim=1), k)  # (B, P, T, h, w) -> (B, T, h, w) -> (T',)
    return kept.expand(corr.shape[0], -1)  # (B, T')


def pixel_top_k_union(scores: Tensor, k: int) -> Tensor:
    """SED's category early rejection rule: the classes among the top ``k`` of some pixel.

    Args:
        scores (Tensor): (B, T, h, w) class scores; the union is over all pixels and images.
        k (int): classes per pixel (all T when k >= T).

    Returns:
        Tensor: (T',) ascending class indices, T' >= min(k, T).
    """
    best = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (B, k, h, w)
    kept = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    kept[best.flatten()] = True
    return kept.nonzero()[:, 0]


def keep_classes(corr: Tensor, text_feats: Tensor, class_index: Optional[Tensor]
                 ) -> Tuple[Tensor, Tensor]:
    """The correlation (B, P, T', h, w) and re-normalised text (B, T', P, C) of the kept
    classes (``class_index`` (B, T'); None keeps all)."""
    if class_index is None:
        return corr, text_feats
    idx = class_index[:, None, :, None, None].expand(-1, corr.shape[1], -1, *corr.shape[-2:])
    corr = corr.gather(2, idx)  # (B, P, T', h, w)
    text_feats = text_feats.gather(
        1, class_index[:, :, None, None].expand(-1, -1, *text_feats.shape[2:]))  # (B, T', P, C)
    return corr, F.normalize(text_feats, dim=-1)


def select_classes(corr: Tensor, text_feats: Tensor, *, pad_len: int,
                   class_filter: Optional[ClassFilter] = None
                   ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """The classes the aggregation works on: a test-time filter, then CAT-Seg's pruning of a
    vocabulary larger than ``pad_len`` to its top ``pad_len`` classes by maximal correlation.

    Args:
        corr (Tensor): (B, P, T, h, w) correlation.
        text_feats (Tensor): (B, T, P, C) class embeddings.
        pad_len (int): Classes the class attention takes; 0 keeps all.
        class_filter (ClassFilter, optional): a neck-stage filter, see :func:`filter_classes`.

    Returns:
        tuple: ``corr`` (B, P, T', h, w), ``text_feats`` (B, T', P, C), and ``class_index``
        (B, T') with the kept classes in ascending order (None if all were kept).
    """
    class_index = filter_classes(corr, class_filter)
    corr, text_feats = keep_classes(corr, text_feats, class_index)
    if 0 < pad_len < text_feats.shape[1]:
        pruned = filter_classes(corr, ClassFilter('topk', pad_len))  # (B, pad_len)
        corr, text_feats = keep_classes(corr, text_feats, pruned)
        class_index = pruned if class_index is None else class_index.gather(1, pruned)
    return corr, text_feats, class_index


def embed_cost(embed: nn.Module, corr: Tensor) -> Tensor:
    """Embed the correlation of every class with the same conv over its P template channels.

    Args:
        embed (nn.Module): P -> hidden channels, e.g. ``nn.Conv2d(P, hidden, k, padding=k//2)``.
        corr (Tensor): (B, P, T, h, w).

    Returns:
        Tensor: (B, hidden, T, h, w).
    """
    # (B, P, T, h, w) -> (B*T, P, h, w) -> embed -> (B*T, hidden, h, w) -> (B, hidden, T, h, w)
    return on_class_maps(embed, corr)


def text_guidance(projection: Optional[nn.Module], text_feats: Tensor) -> Optional[Tensor]:
    """The classes' text guidance: the mean of their prompts, L2-normalised, then projected.

    Args:
        projection (nn.Module, optional): C -> G (e.g. Linear + ReLU); None: no text guidance.
        text_feats (Tensor): (B, T, P, C).

    Returns:
        Tensor, optional: (B, T, G), or None without a projection.
    """
    if projection is None:
        return None
    mean = text_feats.mean(dim=2)  # (B, T, P, C) -> (B, T, C)
    return projection(mean / mean.norm(dim=-1, keepdim=True))


def select_pooling(training: bool, pooling_size: PoolSize, test_pooling_size: PoolSize
                   ) -> PoolSize:
    """The class-attention pooling of the current mode (CAT-Seg: 2 x 2 in training, 1 x 1 in
    evaluation; ``test_pooling_size=None`` keeps the training pooling)."""
    if not training and test_pooling_size is not None:
        return test_pooling_size
    return pooling_size
