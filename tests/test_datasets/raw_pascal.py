"""Tiny PASCAL VOC 2012 / PASCAL-Context raw releases in the official on-disk formats.

* :func:`make_voc2012_release`: ``VOCdevkit/VOC2012`` with ``SegmentationClassAug/<id>.png``
  (8-bit grayscale, 0 bg, 1..20, 255 border, as in DeepLab's ``SegmentationClassAug.zip``), or
  palette PNGs with the VOC colour map (as the devkit's ``SegmentationClass``), plus
  ``ImageSets/Segmentation/val.txt`` and ``JPEGImages``.
* :func:`make_detail_json`: ``VOCdevkit/VOC2010/trainval_merged.json`` in the PASCAL in Detail
  format (``images`` with ``phase``, ``annos_segmentation`` with COCO RLE ``segmentation``
  dicts ``{'size': [H, W], 'counts': str}``, ``categories`` with ``category_id``, and the other
  top-level lists of the real file, empty).
* :func:`make_pc459_release`: ``VOCdevkit/VOC2010/trainval/<id>.mat`` (MATLAB v5, ``LabelMap``
  uint16 1..459), ``labels.txt`` (``N: name``) and ``pascalcontext_val.txt``.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils


def voc_palette() -> List[int]:
    """The 256-entry PASCAL VOC colour map, flattened to 768 ints (for PIL ``putpalette``)."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette.extend(rgb)
    return palette


def save_label_png(path: str, label: np.ndarray, palette: bool = False) -> None:
    """Save an (H, W) uint8 map as a grayscale ('L') or VOC palette ('P') PNG."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    image = Image.fromarray(np.asarray(label, dtype=np.uint8))  # mode 'L'
    if palette:
        image.putpalette(voc_palette())  # 'L' -> 'P': the values become palette indices
        assert image.mode == 'P'
    image.save(path)


def _save_jpeg(path: str, shape: tuple, seed: int) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)


def make_voc2012_release(root: str,
                         masks: Dict[str, np.ndarray],
                         val_ids: Sequence[str],
                         palette_ids: Sequence[str] = (),
                         label_dir: str = 'SegmentationClassAug') -> str:
    """Write ``<root>/VOCdevkit/VOC2012``.

    Args:
        root (str): Parent folder.
        masks (dict[str, np.ndarray]): ``{id: (H, W) uint8 raw mask}``.
        val_ids (Sequence[str]): Lines of ``ImageSets/Segmentation/val.txt``.
        palette_ids (Sequence[str]): Ids saved as VOC palette PNGs instead of grayscale.
        label_dir (str): Mask folder name.

    Returns:
        str: The ``VOC2012`` folder.
    """
    base = osp.join(root, 'VOCdevkit', 'VOC2012')
    for k, (image_id, mask) in enumerate(masks.items()):
        save_label_png(osp.join(base, label_dir, image_id + '.png'), mask,
                       palette=image_id in palette_ids)
        _save_jpeg(osp.join(base, 'JPEGImages', image_id + '.jpg'), mask.shape, k)
    split_dir = osp.join(base, 'ImageSets', 'Segmentation')
    os.makedirs(split_dir, exist_ok=True)
    with open(osp.join(split_dir, 'val.txt'), 'w') as f:
        f.write(''.join(i + '\n' for i in val_ids))
    return base


def rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """COCO RLE of a binary (H, W) mask: ``counts`` as a string, or as a list if not compressed."""
    mask = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    if compressed:
        encoded = mask_utils.encode(mask)
        return dict(size=[int(s) for s in encoded['size']],
                    counts=encoded['counts'].decode('ascii'))
    flat = mask.flatten(order='F')
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return dict(size=list(mask.shape), counts=counts)


def detail_image(stem: str, height: int, width: int, phase: str) -> dict:
    """An ``images`` entry of trainval_merged.json (``image_id`` is the stem without ``_``)."""
    return dict(file_name=stem + '.jpg', image_id=int(stem.replace('_', '')), height=height,
                width=width, phase=phase, date_captured='', url='')


def detail_category(category_id: int, name: str) -> dict:
    """A ``categories`` entry of trainval_merged.json."""
    return dict(category_id=category_id, name=name, supercategory='object', onlysemantic=0,
                parts=[])


def make_detail_json(root: str,
                     images: List[dict],
                     annotations: List[tuple],
                     categories: List[dict],
                     compressed: Optional[Sequence[bool]] = None) -> str:
    """Write ``<root>/VOCdevkit/VOC2010/trainval_merged.json`` and the val/train JPEGs.

    Args:
        root (str): Parent folder.
        images (list[dict]): From :func:`detail_image`.
        annotations (list[tuple]): ``(stem, category_id, (H, W) binary mask)`` in file order.
        categories (list[dict]): From :func:`detail_category`.
        compressed (Sequence[bool], optional): Per annotation, string (True, default) or list
            counts.

    Returns:
        str: The json path.
    """
    base = osp.join(root, 'VOCdevkit', 'VOC2010')
    ids = {img['file_name'][:-4]: img['image_id'] for img in images}
    annos = []
    for k, (stem, category_id, mask) in enumerate(annotations):
        packed = compressed is None or compressed[k]
        annos.append(dict(id=k + 1, image_id=ids[stem], category_id=category_id,
                          segmentation=rle(mask, packed), area=int(np.count_nonzero(mask)),
                          bbox=[0, 0, 1, 1], iscrowd=0, parts=[]))
    data = dict(info=dict(description='PASCAL in Detail (test fixture)'), images=images,
                annos_segmentation=annos, categories=categories, parts=[], annos_occlusion=[],
                annos_boundary=[], annos_joints=[])
    os.makedirs(base, exist_ok=True)
    path = osp.join(base, 'trainval_merged.json')
    with open(path, 'w') as f:
        json.dump(data, f)
    for k, img in enumerate(images):
        _save_jpeg(osp.join(base, 'JPEGImages', img['file_name']), (img['height'], img['width']),
                   k)
    return path


def make_pc459_release(root: str,
                       label_maps: Dict[str, np.ndarray],
                       val_ids: Optional[Sequence[str]],
                       names: Optional[Sequence[str]],
                       label_order: Optional[Sequence[int]] = None) -> str:
    """Write ``trainval/<id>.mat``, ``labels.txt`` and ``pascalcontext_val.txt`` under VOC2010.

    Args:
        root (str): Parent folder.
        label_maps (dict[str, np.ndarray]): ``{id: (H, W) LabelMap}`` saved as given (uint16).
        val_ids (Sequence[str], optional): ``pascalcontext_val.txt`` lines; None writes no file.
        names (Sequence[str], optional): Class names for labels 1..len(names); None writes no
            ``labels.txt``.
        label_order (Sequence[int], optional): Order of the 0-based name indices in the file.

    Returns:
        str: The ``VOC2010`` folder.
    """
    base = osp.join(root, 'VOCdevkit', 'VOC2010')
    os.makedirs(osp.join(base, 'trainval'), exist_ok=True)
    for image_id, label_map in label_maps.items():
        scipy.io.savemat(osp.join(base, 'trainval', image_id + '.mat'), {'LabelMap': label_map})
    if names is not None:
        order = range(len(names)) if label_order is None else label_order
        with open(osp.join(base, 'labels.txt'), 'w') as f:
            f.write(''.join(f'{i + 1}: {names[i]}\n' for i in order))
    if val_ids is not None:
        with open(osp.join(base, 'pascalcontext_val.txt'), 'w') as f:
            f.write(''.join(i + '\n' for i in val_ids))
    return base
