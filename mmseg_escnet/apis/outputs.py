"""Outputs of :class:`~.inferencer.OpenVocabInferencer`: class scores, file names, overlay files.

With ``out_dir``, every image gets an overlay ``out_dir/vis/<name>`` and a label map
``out_dir/pred/<name>``. Names follow mmseg's inferencer for arrays (``<counter:08d>_vis.png`` and
``<counter:08d>_pred.png``) and are ``<stem>.png`` for files. Within one call no output overwrites
another: the second image whose name is taken gets ``<stem>_1.png``, the next ``<stem>_2.png`` and
so on (``d1/a.png``, ``d2/a.png``, ``d3/a`` -> ``a.png``, ``a_1.png``, ``a_2.png``), with the same
counter in ``vis/`` and ``pred/``. Names are compared without case, so that no output overwrites
another on case-insensitive file systems either.
"""
import itertools
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Set

import cv2
import numpy as np
import torch

from ..visualization.overlay import class_pixel_counts
from .image_io import encode_to_file

#: The output kinds: overlays (``vis``) and label maps (``pred``).
OUTPUT_KINDS = ('vis', 'pred')


def class_scores(probabilities: torch.Tensor, label_map: np.ndarray, names: Sequence[str],
                 classes: Optional[torch.Tensor] = None) -> List[Dict[str, Any]]:
    """Scores of the classes present in a prediction, largest pixel share first.

    Args:
        probabilities (torch.Tensor): ``(K, h, w)`` float class probabilities at the inference
            size.
        label_map (np.ndarray): ``(H0, W0)`` integer class ids at the original size.
        names (Sequence[str]): The T display names.
        classes (torch.Tensor, optional): ``(K,)`` the vocabulary index of each channel of
            ``probabilities``; None when K = T.

    Returns:
        List[dict]: One dict per class present in ``label_map`` (ties: lower id first):
        ``index``, ``name``, ``fraction`` (share of the label map's pixels) and
        ``mean_probability`` (mean probability of the class over the pixels it wins at the
        inference size).
    """
    num_classes = len(names)
    chosen, small = probabilities.flatten(1).max(dim=0)                     # (h * w,) twice
    if classes is not None:
        small = classes[small]                                              # vocabulary ids
    small_counts = torch.bincount(small, minlength=num_classes).double()
    small_sums = torch.bincount(small, weights=chosen.double(), minlength=num_classes)
    counts = class_pixel_counts(label_map, num_classes)
    present = np.flatnonzero(counts)
    return [dict(index=int(i), name=names[i], fraction=float(counts[i] / label_map.size),
                 mean_probability=float(small_sums[i] / small_counts[i]))
            for i in present[np.lexsort((present, -counts[present]))]]


class OutputNamer:
    """Hands out output file names, unique within one call of the inferencer.

    Example::

        namer = OutputNamer()
        namer.assign('d1/a.png', 0)   # {'vis': 'a.png', 'pred': 'a.png'}
        namer.assign('d2/a.jpg', 1)   # {'vis': 'a_1.png', 'pred': 'a_1.png'}
        namer.assign(None, 2)         # {'vis': '00000002_vis.png', 'pred': '00000002_pred.png'}
    """

    def __init__(self) -> None:
        self._used: Dict[str, Set[str]] = {kind: set() for kind in OUTPUT_KINDS}

    def assign(self, img_path: Optional[str], counter: int) -> Dict[str, str]:
        """Reserve the output names of one image.

        Args:
            img_path (str, optional): The image file, or None for an array input.
            counter (int): Number of the image among the inferencer's inputs (arrays are named
                after it, as in mmseg).

        Returns:
            Dict[str, str]: File name (no folder) per kind in :data:`OUTPUT_KINDS`: the first of
            ``<base>.png``, ``<base>_1.png``, ``<base>_2.png``... not handed out before by this
            namer in any kind.
        """
        if img_path is None:
            bases = {kind: f'{counter:08d}_{kind}' for kind in OUTPUT_KINDS}
        else:
            stem = osp.splitext(osp.basename(os.fspath(img_path)))[0]
            bases = {kind: stem for kind in OUTPUT_KINDS}
        for number in itertools.count():
            suffix = f'_{number}' if number else ''
            names = {kind: f'{base}{suffix}.png' for kind, base in bases.items()}
            if not any(names[kind].lower() in self._used[kind] for kind in OUTPUT_KINDS):
                break
        for kind in OUTPUT_KINDS:
            self._used[kind].add(names[kind].lower())
        return names


#: Image formats an overlay can be written in.
OVERLAY_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def write_overlay(path: str, canvas: np.ndarray) -> str:
    """Write an RGB overlay as an image file (BGR on disk, as OpenCV writes).

    Args:
        path (str): Output file ending in one of :data:`OVERLAY_SUFFIXES`; parent folders are
            created. Non-ASCII paths work.
        canvas (np.ndarray): ``(H, W, 3)`` ``uint8`` RGB.

    Returns:
        str: ``path``. ``canvas`` is unchanged (its channels are swapped in place while encoding,
        to spare a copy of a large image, then swapped back).

    Raises:
        ValueError: An unsupported suffix, a bad canvas, or encoding failed.
    """
    if osp.splitext(path)[1].lower() not in OVERLAY_SUFFIXES:
        raise ValueError(f'{path}: an overlay is written as one of {", ".join(OVERLAY_SUFFIXES)}')
    if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.dtype != np.uint8:
        raise ValueError(f'overlay for {path} must be (H, W, 3) uint8 RGB, got shape '
                         f'{canvas.shape} and dtype {canvas.dtype}')
    # Swap the channels in place, and back after encoding, rather than copying a large canvas; a
    # read-only canvas goes through a reversed view (OpenCV copies it).
    in_place = (canvas.flags.writeable
                and cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR, dst=canvas) is canvas)
    try:
        return encode_to_file(path, canvas if in_place else canvas[:, :, ::-1], 'the overlay')
    finally:
        if in_place:
            cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB, dst=canvas)
