"""The image-text cost volume shared by the CLIP-correlation models (CAT-Seg, ESC-Net, ...).

Every model of the family starts the same way (CAT-Seg §3.2; ESC-Net Eq. 1)::

    img_feats (B, C, h, w), text_feats (B, T, P, C)
      -> correlation: cosine of every pixel with every class prompt   (B, P, T, h, w)
      -> prune_classes: the top-``pad_len`` classes by maximal correlation (B, P, T', h, w)
      -> embed_cost: a per-class conv of the P template channels      (B, hidden, T', h, w)
    and guides its aggregation with
      -> text_guidance: the prompts' mean embedding, projected        (B, T', G)

The necks own the modules (under the parameter names of their official checkpoints) and call
these functions; :class:`~mmseg_escnet.models.structures.AggregatedCost` is what they return.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .linear_class_attention import PoolSize

__all__ = ['correlation', 'prune_classes', 'embed_cost', 'text_guidance', 'select_pooling']


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


def prune_classes(corr: Tensor, text_feats: Tensor, pad_len: int
                  ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Keep the top-``pad_len`` classes of each image by maximal correlation (CAT-Seg's rule).

    Args:
        corr (Tensor): (B, P, T, h, w) correlation.
        text_feats (Tensor): (B, T, P, C) class embeddings.
        pad_len (int): Classes to keep; 0 or ``T <= pad_len`` keeps all.

    Returns:
        tuple: ``corr`` (B, P, T', h, w), ``text_feats`` (B, T', P, C) re-normalised, and
        ``class_index`` (B, T') with the kept classes in ascending order (None if nothing was
        pruned).
    """
    if pad_len <= 0 or text_feats.shape[1] <= pad_len:
        return corr, text_feats, None
    score = corr.transpose(1, 2).flatten(2).max(dim=-1).values  # (B, T): max over prompts, pixels
    class_index = score.topk(pad_len, dim=-1).indices.sort(dim=-1).values  # (B, T')
    idx = class_index[:, None, :, None, None].expand(-1, corr.shape[1], -1, *corr.shape[-2:])
    corr = corr.gather(2, idx)  # (B, P, T', h, w)
    text_feats = text_feats.gather(
        1, class_index[:, :, None, None].expand(-1, -1, *text_feats.shape[2:]))  # (B, T', P, C)
    return corr, F.normalize(text_feats, dim=-1), class_index


def embed_cost(embed: nn.Module, corr: Tensor) -> Tensor:
    """Embed the correlation of every class with the same conv over its P template channels.

    Args:
        embed (nn.Module): P -> hidden channels, e.g. ``nn.Conv2d(P, hidden, k, padding=k//2)``.
        corr (Tensor): (B, P, T, h, w).

    Returns:
        Tensor: (B, hidden, T, h, w).
    """
    b, _, t, h, w = corr.shape
    # (B, P, T, h, w) -> (B*T, P, h, w) -> embed -> (B*T, hidden, h, w) -> (B, hidden, T, h, w)
    cost = embed(corr.transpose(1, 2).reshape(b * t, -1, h, w))
    return cost.view(b, t, -1, h, w).transpose(1, 2)


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
