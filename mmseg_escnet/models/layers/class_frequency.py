"""ERR-Seg's per-image compact vocabulary: the classes most often among the pixels' best three.

Chen et al., "Efficient Redundancy Reduction for Open-Vocabulary Semantic Segmentation"
(arXiv:2501.17642); official code https://github.com/lchen1019/ERR-Seg
(``err_seg/modeling/modules/decoder.py``, ``Decoder.select_classes``). Part of RRHC: the cost
aggregation then works on K of the T classes of every image::

    scores (B, T, h, w)  (the stride-16 correlation, mean over the prompts)
      -> every pixel's top-3 classes                                      (B, 3, h, w)
      -> class score: sum over pixels of 1 [rank 1] + 0.1 [rank 2] + 0.01 [rank 3]   (B, T)
      -> the K best classes, ascending class index                        (B, K)
    training: the image's ground-truth classes first, filled up to K with the best K classes
    they do not contain, taken in ascending class index (not by score), then sorted

Counting is a scatter-add histogram (the official ``histc`` on integers runs on CUDA only; the
counts are equal). Classes are ranked by the exact integer key ``100 c1 + 10 c2 + c3`` of the
counts; equal keys go to the lower class index (a stable sort). The official ``topk`` on float
scores leaves such ties to the implementation (docs/errseg.md). The official code also shuffles
the selected classes; the model is equivariant to the class order, so they stay ascending here.
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ['RANK_WEIGHTS', 'top3_counts', 'frequency_scores', 'frequency_top_k']

#: Weight of a pixel's first, second and third class in a class's score.
RANK_WEIGHTS = (1.0, 0.1, 0.01)


def top3_counts(scores: Tensor) -> Tensor:
    """How often each class is a pixel's first, second and third best class.

    Args:
        scores (Tensor): (B, T, h, w) class scores.

    Returns:
        Tensor: (B, R, T) long counts, R = min(3, T) ranks.
    """
    b, t = scores.shape[:2]
    ranks = min(len(RANK_WEIGHTS), t)
    top = scores.topk(ranks, dim=1).indices.flatten(2)  # (B, R, h*w)
    # a histogram per (image, rank): (B, R, h*w) indices -> (B, R, T) counts (a scatter rather
    # than bincount: its output shape does not depend on the data, so it runs on 'meta' too)
    counts = top.new_zeros(b, ranks, t)
    return counts.scatter_add_(2, top, torch.ones_like(top))


def frequency_scores(counts: Tensor) -> Tensor:
    """The official float score of every class: (B, R, T) counts -> (B, T) float32."""
    weights = counts.new_tensor(RANK_WEIGHTS[:counts.shape[1]], dtype=torch.float32)
    return (counts.float() * weights[:, None]).sum(dim=1)


def frequency_top_k(scores: Tensor, k: int,
                    required: Optional[Sequence[Tensor]] = None) -> Tensor:
    """The K classes of every image (``required`` first when given).

    Args:
        scores (Tensor): (B, T, h, w) class scores (ERR-Seg: the cost map at stride 16).
        k (int): classes kept per image, 1 <= k < T.
        required (Sequence[Tensor], optional): per image, the ascending classes to keep first
            (training: the ground-truth classes); more than k are cut to the first k.

    Returns:
        Tensor: (B, k) long, ascending class indices.
    """
    b, t = scores.shape[:2]
    if not 1 <= k < t:
        raise ValueError(f'frequency_top_k keeps 1 <= k < T classes, got k={k}, T={t}')
    counts = top3_counts(scores)                               # (B, R, T)
    base = 10 ** torch.arange(counts.shape[1] - 1, -1, -1, device=counts.device)
    key = (counts * base[:, None]).sum(dim=1)                  # (B, T): 100 c1 + 10 c2 + c3
    best = key.argsort(dim=1, descending=True, stable=True)[:, :k].sort(dim=1).values  # (B, k)
    if required is None:
        return best
    if len(required) != b:
        raise ValueError(f'required classes are given for {len(required)} images, expected {b}')
    kept = []
    for classes, top in zip(required, best):
        classes = classes.to(top.device, torch.long)[:k]
        if len(classes) and not 0 <= int(classes.min()) <= int(classes.max()) < t:
            raise ValueError(f'required classes must be in [0, {t}), got {classes.tolist()}')
        fill = top[~torch.isin(top, classes)][:k - len(classes)]  # ascending index, as official
        kept.append(torch.cat([classes, fill]).sort().values)
    return torch.stack(kept)
