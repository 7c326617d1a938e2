"""Class-sparse post-processing: image-size logits only for the classes the model kept.

A class filter (``test_cfg.class_filter``) or CAT-Seg's top-``pad_len`` pruning leaves most
classes of a large vocabulary at ``PRUNED_LOGIT`` everywhere. Resizing those constant channels to
the image size would cost as much as resizing real ones: 847 x 480 x 640 float32 logits are 1 GB.
So the segmentor resizes only the kept classes::

    logits (1, T, h, w)  -> kept classes (K,)  = channels not PRUNED_LOGIT everywhere
      -> (1, K, h, w) -> [with padding: bilinear resize to the input, remove the padding]
         -> undo flip -> bilinear resize to the original size         (K, H0, W0) ``seg_logits``
      -> labels = kept[argmax over K]                                 (1, H0, W0) ``pred_sem_seg``

``sample.metainfo['seg_logits_classes']`` holds ``kept`` (K,): channel ``j`` of ``seg_logits`` is
class ``kept[j]`` of the vocabulary. Without pruning ``kept`` is ``arange(T)`` and the output is
mmseg's. A removed class never wins; in the dense computation it would win only where every kept
class had a logit below ``PRUNED_LOGIT``.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from torch import Tensor

from ..structures import PRUNED_LOGIT

__all__ = ['dense_probabilities', 'flip_back', 'kept_classes', 'postprocess_sparse',
           'set_prediction']


def kept_classes(logits: Tensor) -> Tensor:
    """Classes with at least one logit that is not ``PRUNED_LOGIT``.

    Args:
        logits (Tensor): (V, T, h, w) logits of the views of one image.

    Returns:
        Tensor: (K,) long, ascending class indices; all T if every class is pruned (cannot happen
        with a filter, which keeps k >= 1 classes, but then the dense result is kept).
    """
    kept = (logits != PRUNED_LOGIT).flatten(2).any(dim=2).any(dim=0).nonzero()[:, 0]  # (K,)
    return kept if len(kept) else torch.arange(logits.shape[1], device=logits.device)


def set_prediction(sample: SegDataSample, logits: Tensor, classes: Tensor) -> SegDataSample:
    """Store ``seg_logits`` (K, H0, W0), their classes and the labels (1, H0, W0) in ``sample``."""
    sample.set_metainfo(dict(seg_logits_classes=classes))
    sample.set_data(dict(seg_logits=PixelData(data=logits),
                         pred_sem_seg=PixelData(data=classes[logits.argmax(dim=0, keepdim=True)])))
    return sample


def postprocess_sparse(seg_logits: Tensor, data_samples: Optional[List[SegDataSample]],
                       align_corners: bool = False,
                       input_size: Optional[Sequence[int]] = None,
                       resize_probabilities: bool = False) -> List[SegDataSample]:
    """Post-processing on the kept classes of each image, argmax semantics always.

    With padding, the steps are mmseg's (``BaseDecodeHead.predict_by_feat`` resizes to the input,
    the padding is cut, then ``BaseSegmentor.postprocess_result`` resizes to the original size),
    on K channels instead of T. Without padding the logits go to the original size in one
    bilinear resize, as detectron2's ``sem_seg_postprocess`` (which CAT-Seg and SED use) does.
    Unlike mmseg, a single-class output is not a binary segmentation: every pixel is class 0.

    Args:
        seg_logits (Tensor): (B, T, h, w) logits.
        data_samples (list, optional): their samples (``ori_shape``, ``img_padding_size`` or
            ``padding_size``, ``flip``, ``flip_direction``); None leaves the logits at the
            input size.
        align_corners (bool): of the bilinear resizes.
        input_size (tuple, optional): (H, W) of the (padded) network input; None when the
            logits are already at that size.
        resize_probabilities (bool): resize the sigmoid probabilities and return their logit
            (SED resizes probabilities), instead of the logits (mmseg).

    Returns:
        list[SegDataSample]: with ``seg_logits`` (K, H0, W0), ``pred_sem_seg`` (1, H0, W0) and
        ``seg_logits_classes`` (K,) in the metainfo.
    """
    if data_samples is None:
        data_samples = [SegDataSample() for _ in range(seg_logits.shape[0])]
        metas: List[Dict] = [{} for _ in data_samples]
    else:
        metas = [sample.metainfo for sample in data_samples]
    for i, (sample, meta) in enumerate(zip(data_samples, metas)):
        classes = kept_classes(seg_logits[i:i + 1])
        out = seg_logits[i:i + 1, classes]                                  # (1, K, h, w)
        if resize_probabilities:
            out = out.sigmoid()
        padding = meta.get('img_padding_size', meta.get('padding_size', [0, 0, 0, 0]))
        if input_size is not None and (not meta or any(padding)):
            out = _resize(out, input_size, align_corners)                   # (1, K, H, W)
        if meta:
            left, right, top, bottom = padding
            height, width = out.shape[-2:]
            out = out[..., top:height - bottom, left:width - right]
            out = _resize(flip_back(out, meta), meta['ori_shape'][:2], align_corners)
        logits = torch.logit(out) if resize_probabilities else out          # (1, K, H0, W0)
        set_prediction(sample, logits[0], classes)
    return data_samples


def _resize(x: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
    """Bilinear resize of (B, C, h, w) to ``size`` (a no-op at that size already)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=align_corners)


def flip_back(x: Tensor, meta: dict) -> Tensor:
    """Undo the test-time flip recorded in ``meta`` on a (B, C, H, W) tensor."""
    if not meta.get('flip'):
        return x
    direction = meta.get('flip_direction')
    if direction not in ('horizontal', 'vertical'):
        raise ValueError(f"flip_direction must be 'horizontal' or 'vertical', got {direction!r}")
    return x.flip(dims=(3, ) if direction == 'horizontal' else (2, ))


def dense_probabilities(probabilities: Tensor, classes: Tensor, num_classes: int) -> Tensor:
    """(K, h, w) probabilities of ``classes`` -> (T, h, w), 0 for the classes not kept."""
    out = probabilities.new_zeros(num_classes, *probabilities.shape[1:])
    out[classes] = probabilities
    return out
