"""Tiny ADE20K raw releases in the official on-disk formats (for the preparation tool tests).

* :func:`make_ade150_release`: ``ADEChallengeData2016/{images,annotations}/validation`` with
  8-bit grayscale PNG annotations (0 = other, 1..150), as in ``ADEChallengeData2016.zip``.
* :func:`make_ade_full_release`: ``ADE20K_2021_17_01`` with ``index_ade20k.pkl`` (a pickled dict
  with the fields of the official index: ``filename``, ``folder`` relative to the parent of the
  release folder, ``scene``, ``objectnames``, ``objectcounts``, ``objectPresence`` [C, N], ...)
  and, per image, ``<name>.jpg`` plus ``<name>_seg.png`` whose RGB encodes the full-ADE class
  ``k`` as ``R = k // 256 * 10 + r`` (any ``r`` in 0..9 since readers use ``R // 10``),
  ``G = k % 256`` and the instance in B.
"""
import os
import os.path as osp
import pickle
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

RELEASE = 'ADE20K_2021_17_01'


def make_ade150_release(root: str, labels: Dict[str, np.ndarray]) -> str:
    """Write ``<root>/ADEChallengeData2016`` with one image + annotation per entry.

    Args:
        root (str): Parent folder.
        labels (dict[str, np.ndarray]): ``{stem: (H, W) uint8 annotation}``.

    Returns:
        str: The ``ADEChallengeData2016`` folder.
    """
    base = osp.join(root, 'ADEChallengeData2016')
    rng = np.random.default_rng(0)
    for stem, label in labels.items():
        img_dir = osp.join(base, 'images', 'validation')
        ann_dir = osp.join(base, 'annotations', 'validation')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        image = rng.integers(0, 256, (*label.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(osp.join(img_dir, stem + '.jpg'))
        Image.fromarray(label).save(osp.join(ann_dir, stem + '.png'))
    return base


def encode_seg(classes: np.ndarray, r_offset: int = 0) -> np.ndarray:
    """Encode an (H, W) full-ADE class map as the RGB of an official ``*_seg.png``.

    Args:
        classes (np.ndarray): (H, W) ints in 0..6655.
        r_offset (int): Added to ``R`` (0..9; ignored by ``R // 10``, like real data's noise).

    Returns:
        np.ndarray: (H, W, 3) uint8, ``R = k // 256 * 10 + r_offset``, ``G = k % 256``, B = 1.
    """
    classes = np.asarray(classes, dtype=np.int64)
    seg = np.zeros((*classes.shape, 3), dtype=np.uint8)
    seg[..., 0] = classes // 256 * 10 + r_offset
    seg[..., 1] = classes % 256
    seg[..., 2] = 1
    return seg


def placeholder_objectnames(num: int, named: Optional[Dict[int, str]] = None) -> List[str]:
    """``objectnames`` of ``num`` entries; full-ADE id ``k`` is entry ``k - 1``.

    Args:
        num (int): Number of classes C.
        named (dict[int, str], optional): ``{full-ADE id: name}`` overriding placeholders.
    """
    names = [f'object {i + 1}' for i in range(num)]
    for full_id, name in (named or {}).items():
        names[full_id - 1] = name
    return names


def make_ade_full_release(root: str, images: Sequence[dict], objectnames: List[str],
                          write_files: bool = True) -> str:
    """Write ``<root>/ADE20K_2021_17_01`` with its index and images.

    Args:
        root (str): Parent folder (the official ``DETECTRON2_DATASETS``).
        images (list[dict]): Each ``dict(filename='ADE_val_00000001.jpg', scene='bathroom',
            classes=(H, W) int map, r_offset=0, files=True)``; ``files=False`` lists the image
            in the index without writing its files.
        objectnames (list[str]): The index's ``objectnames`` (C entries).
        write_files (bool): Write the image files at all.

    Returns:
        str: The ``ADE20K_2021_17_01`` folder.
    """
    base = osp.join(root, RELEASE)
    os.makedirs(base, exist_ok=True)
    rng = np.random.default_rng(0)
    filenames, folders, scenes = [], [], []
    presence = np.zeros((len(objectnames), len(images)), dtype=np.int64)
    for i, spec in enumerate(images):
        split = 'validation' if '_val_' in spec['filename'] else 'training'
        scene = spec.get('scene', 'misc')
        folder = '/'.join([RELEASE, 'images', 'ADE', split, scene])
        filenames.append(spec['filename'])
        folders.append(folder)
        scenes.append('/' + scene)
        classes = np.asarray(spec['classes'])
        for k in np.unique(classes):
            if 1 <= k <= len(objectnames):
                presence[k - 1, i] += 1
        if write_files and spec.get('files', True):
            out_dir = osp.join(root, folder)
            os.makedirs(out_dir, exist_ok=True)
            stem = osp.splitext(spec['filename'])[0]
            image = rng.integers(0, 256, (*classes.shape, 3), dtype=np.uint8)
            Image.fromarray(image).save(osp.join(out_dir, spec['filename']), quality=95)
            seg = encode_seg(classes, spec.get('r_offset', 0))
            Image.fromarray(seg).save(osp.join(out_dir, stem + '_seg.png'))
    index = dict(
        filename=filenames,
        folder=folders,
        scene=scenes,
        objectIsPart=np.zeros_like(presence),
        objectPresence=presence,
        objectcounts=presence.sum(axis=1),
        objectnames=list(objectnames),
        proportionClassIsPart=np.zeros(len(objectnames)),
        wordnet_found=np.zeros(len(objectnames), dtype=bool),
        description=dict(
            filename='array of length N with the image file names',
            folder='array of length N with the image folder names.',
            objectnames='array of length C with the object class names.'),
    )
    with open(osp.join(base, 'index_ade20k.pkl'), 'wb') as f:
        pickle.dump(index, f)
    return base
