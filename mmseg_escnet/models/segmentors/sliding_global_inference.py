"""CAT-Seg's evaluation protocol: overlapping crops of a squashed image plus a global view.

The official ``CATSeg.inference_sliding_window`` (cvlab-kaist/CAT-Seg,
``cat_seg/cat_seg_model.py``), used for every number
CAT-Seg and ESC-Net report::

    image (3, H, W)  --bilinear-->  (3, 640, 640)              # aspect ratio ignored
      -> crops (N, 3, 384, 384) at stride int(384 * (1 - 0.333)) = 256  -> N = 2 x 2
      +  global view: the unsquashed image resized to (3, 384, 384)
      -> network on the N + 1 views (each resized to the CLIP resolution inside the segmentor)
      -> logits (N + 1, T, h', w') --bilinear--> (N + 1, T, 384, 384) -> sigmoid
      -> crops summed back onto the 640 x 640 canvas / number of crops covering each pixel
      -> (crops + global view resized to 640 x 640) / 2       = probabilities (T, 640, 640)

Only the K classes kept by a class filter (or the top-``pad_len`` pruning) in at least one view
are resized and averaged: the others are ``PRUNED_LOGIT`` in every view (probability ~0), so the
canvas is (K, 640, 640) instead of (T, 640, 640), with the same values for the kept classes.

A model may compute something once per image for all its views (LMSeg: SAM's features):
``canvas_features(canvas)`` runs once on the squashed (1, 3, 640, 640) image, and the network
then gets the views' boxes on that canvas with it (``forward(views, boxes, state)``).

The caller resizes the result to the original image size. The crops are placed where
``torch.nn.Unfold(kernel, stride)`` places them (offsets ``0, stride, 2 * stride, ...`` while the
crop fits); a setting that leaves pixels uncovered is refused instead of dividing by zero.
"""
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .class_sparse import kept_classes


def crop_offsets(size: int, kernel: int, stride: int) -> List[int]:
    """Start offsets of the crops along one axis, as ``nn.Unfold`` would take them.

    Raises:
        ValueError: If the crops do not cover ``size`` pixels (the last ``size - offset - kernel``
            pixels would get no prediction).
    """
    if kernel > size or stride < 1:
        raise ValueError(f'crops of {kernel} px with stride {stride} do not fit {size} px')
    offsets = list(range(0, size - kernel + 1, stride))
    if offsets[-1] + kernel != size:
        raise ValueError(f'crops of {kernel} px with stride {stride} leave the last '
                         f'{size - offsets[-1] - kernel} of {size} px uncovered; choose '
                         f'kernel/overlap/out_size so that (out_size - kernel) % stride == 0')
    return offsets


def sliding_global_inference(forward: Callable[..., Tensor],
                             image: Tensor,
                             kernel: int = 384,
                             overlap: float = 0.333,
                             out_size: Sequence[int] = (640, 640),
                             views_per_batch: int = 0,
                             canvas_features: Optional[Callable[[Tensor], Any]] = None
                             ) -> Tuple[Tensor, Tensor]:
    """Class probabilities of one image with CAT-Seg's sliding + global protocol.

    Args:
        forward (callable): ``(V, 3, kernel, kernel) -> logits (V, T, h', w')``, e.g. the
            segmentor's network forward (which resizes to the CLIP resolution itself); with
            ``canvas_features``, ``forward(views, boxes, state)`` with the views' (V, 4) boxes
            (x0, y0, x1, y1) as fractions of the canvas's sides (the global view's: (0, 0, 1, 1)).
        image (Tensor): (1, 3, H, W), normalised (normalisation commutes with bilinear resizing).
        kernel (int): Crop size (384 for both B/16 and L/14, as official).
        overlap (float): Fraction of overlap; stride = ``int(kernel * (1 - overlap))``.
        out_size (tuple): (H', W') the image is squashed to (640, 640).
        views_per_batch (int): Views per network call (0 = all at once, as official); smaller
            values bound memory with large vocabularies and give the same result.
        canvas_features (callable, optional): ``canvas (1, 3, H', W') -> state``, computed once
            per image and passed to every ``forward`` call.

    Returns:
        tuple: probabilities (1, K, H', W') in [0, 1] of the kept classes (K,) (long, ascending;
        all T unless classes were pruned in every view).
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f'expected one image (1, C, H, W), got {tuple(image.shape)}')
    out_h, out_w = out_size
    stride = int(kernel * (1 - overlap))
    rows, cols = crop_offsets(out_h, kernel, stride), crop_offsets(out_w, kernel, stride)
    squashed = F.interpolate(image, size=(out_h, out_w), mode='bilinear', align_corners=False)
    crops = [squashed[..., y:y + kernel, x:x + kernel] for y in rows for x in cols]
    global_view = F.interpolate(image, size=(kernel, kernel), mode='bilinear', align_corners=False)
    views = torch.cat(crops + [global_view])                # (N + 1, C, kernel, kernel)

    # each view's box on the canvas, as fractions of its sides (N + 1, 4)
    boxes = torch.tensor([(x / out_w, y / out_h, (x + kernel) / out_w, (y + kernel) / out_h)
                          for y in rows for x in cols] + [(0, 0, 1, 1)],
                         dtype=image.dtype, device=image.device)
    step = views_per_batch or views.shape[0]
    batches = list(zip(views.split(step), boxes.split(step)))
    if canvas_features is None:
        logits = [forward(batch) for batch, _ in batches]
    else:
        state = canvas_features(squashed)
        logits = [forward(batch, batch_boxes, state) for batch, batch_boxes in batches]
    logits = torch.cat(logits)                                          # (N + 1, T, h', w')
    classes = kept_classes(logits)
    logits = logits[:, classes]                                         # (N + 1, K, h', w')

    # Views are upsampled one at a time: with 847 classes, (N + 1, T, 384, 384) at once would be
    # 2.5 GB more than the (K, 640, 640) canvas. The arithmetic is the official one.
    canvas = logits.new_zeros(1, logits.shape[1], out_h, out_w)
    count = logits.new_zeros(1, 1, out_h, out_w)
    for k, (y, x) in enumerate((y, x) for y in rows for x in cols):
        canvas[..., y:y + kernel, x:x + kernel] += _probabilities(logits[k:k + 1], kernel)[0]
        count[..., y:y + kernel, x:x + kernel] += 1
    canvas /= count
    global_probs = F.interpolate(_probabilities(logits[-1:], kernel), size=(out_h, out_w),
                                 mode='bilinear', align_corners=False)
    return canvas.add_(global_probs).div_(2), classes


def _probabilities(logits: Tensor, kernel: int) -> Tensor:
    """(V, T, h', w') logits -> (V, T, k, k) sigmoid probabilities at the crop resolution."""
    logits = F.interpolate(logits, size=(kernel, kernel), mode='bilinear', align_corners=False)
    return logits.sigmoid()

