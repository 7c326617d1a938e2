"""Tiny COCO-Stuff raw releases in the official on-disk format (for the preparation tool tests).

:func:`make_coco_stuff_release` writes ``coco-stuff/annotations/<split>/<name>.png`` as in
``stuffthingmaps_trainval2017.zip``: 8-bit grayscale PNGs holding the COCO category id minus one
(0..181) and 255 for unlabeled pixels, plus ``images/<split>/<name>.jpg``.
"""
import os
import os.path as osp
from typing import Dict

import numpy as np
from PIL import Image


def make_coco_stuff_release(root: str, splits: Dict[str, Dict[str, np.ndarray]]) -> str:
    """Write ``<root>/coco-stuff``.

    Args:
        root (str): Parent folder.
        splits (dict): ``{split: {stem: (H, W) uint8 stuffthingmap}}``; an RGB (H, W, 3) array is
            saved as an RGB PNG (a malformed input).

    Returns:
        str: The ``coco-stuff`` folder.
    """
    base = osp.join(root, 'coco-stuff')
    rng = np.random.default_rng(0)
    for split, maps in splits.items():
        ann_dir = osp.join(base, 'annotations', split)
        img_dir = osp.join(base, 'images', split)
        os.makedirs(ann_dir, exist_ok=True)
        os.makedirs(img_dir, exist_ok=True)
        for stem, label in maps.items():
            Image.fromarray(np.asarray(label, dtype=np.uint8)).save(
                osp.join(ann_dir, stem + '.png'))
            image = rng.integers(0, 256, (*label.shape[:2], 3), dtype=np.uint8)
            Image.fromarray(image).save(osp.join(img_dir, stem + '.jpg'))
    return base
