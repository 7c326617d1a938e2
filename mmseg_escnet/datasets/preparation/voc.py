"""PASCAL-VOC-20 and VOC-20b labels (VOC2012 val) in CAT-Seg's layout, written in one pass.

Raw release (``VOCtrainval_11-May-2012.tar`` plus DeepLab's ``SegmentationClassAug.zip``), the
folder given as ``raw_root``::

    VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg                      # read by the datasets, not here
        SegmentationClassAug/<id>.png            # uint8 single channel: 0 bg, 1..20, 255 border
        ImageSets/Segmentation/val.txt           # 1449 ids

``SegmentationClassAug`` holds grayscale PNGs. The VOC devkit's own ``SegmentationClass`` holds
**palette** PNGs with the same indices (``--label-dir SegmentationClass`` also works). Labels are
read with PIL, which returns the palette *indices* of a ``'P'`` image (cv2 would return colours).

Output (under ``out_root``, default ``raw_root``)::

    annotations_detectron2/val/<id>.png       # uint8: 0 (bg) -> 255, 1..20 -> 0..19, 255 -> 255
    annotations_detectron2_bg/val/<id>.png    # uint8: 0 (bg) -> 20,  1..20 -> 0..19, 255 -> 255
    annotations_detectron2{,_bg}/val_all_ignore.txt  # ids not written because all-255 (see below)

Official script: CAT-Seg ``datasets/prepare_voc.py``. It reads each mask with
``np.array(Image.open())`` (PIL, so indices; line 45), maps it with ``clsID_to_trID`` (lines 15-38)
or the ``_bg`` copy with ``0: 20`` (lines 39-40), sends every other value to 255, and does **not
write** an output whose converted mask holds only 255 (line 54). The check is made separately
for each output, so it can drop a mask from ``annotations_detectron2`` (only background/border)
and still write it to ``_bg``.

Deliberate differences:

* The official reads the ids with ``np.loadtxt(..., dtype=np.str)`` (``__main__`` block), which
  fails on numpy >= 1.24. Here they are read as text.
* Raw values outside {0..20, 255} raise :class:`InvalidInputError` (the official maps them to 255
  silently; the release has none).
* The ids that were not written are listed in ``val_all_ignore.txt`` next to each ``val/`` folder.
  A later run treats them as done (the official has no resume), and ``--overwrite`` redoes them.
  A stale output of a mask that is now all-ignore is deleted.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from .common import (ConversionItem, InvalidInputError, convert_all, lookup_table,
                     preparation_parser, read_id_list, require_dir, require_file,
                     run_preparation, write_image, write_text)

NUM_CLASSES = 20
IGNORE = 255
#: Raw VOC values: 0 background, 1..20 the classes, 255 the object borders ("void").
RAW_VALUES = tuple(range(NUM_CLASSES + 1)) + (IGNORE, )
#: ``annotations_detectron2``: background ignored.
LUT_20 = lookup_table({**{c: c - 1 for c in range(1, NUM_CLASSES + 1)}, 0: IGNORE}, 256, IGNORE)
#: ``annotations_detectron2_bg``: background is class 20.
LUT_20B = lookup_table({**{c: c - 1 for c in range(1, NUM_CLASSES + 1)}, 0: NUM_CLASSES}, 256,
                       IGNORE)
OUT_DIRS = ('annotations_detectron2', 'annotations_detectron2_bg')
SKIP_LIST = 'val_all_ignore.txt'


def read_index_png(path: str, what: str) -> np.ndarray:
    """Read a single-channel 8-bit label PNG as class indices, as the official scripts do (PIL).

    A palette (``'P'``) image gives its palette indices, a grayscale (``'L'``) image its values.

    Args:
        path (str): PNG file.
        what (str): Human description for error messages.

    Returns:
        np.ndarray: (H, W) uint8 indices.

    Raises:
        FileNotFoundError: If ``path`` is missing.
        InvalidInputError: If it is not a readable ``'L'``/``'P'`` image (e.g. RGB colours).
    """
    require_file(path, what)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode not in ('L', 'P'):
                raise InvalidInputError(
                    f'{what} {path} has PIL mode {mode!r}: expected a single-channel 8-bit '
                    f"label image (grayscale 'L' or palette 'P' holding class indices)")
            array = np.array(image)
    except InvalidInputError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidInputError(f'{what} {path} is not a readable PNG: {err}') from err
    if array.ndim != 2 or array.dtype != np.uint8:
        raise InvalidInputError(f'{what} {path}: expected an (H, W) uint8 label map, got '
                                f'{array.dtype} {array.shape}')
    return array


def check_values(array: np.ndarray, allowed: Sequence[int], path: str, what: str,
                 expected: str) -> None:
    """Raise :class:`InvalidInputError` if ``array`` holds a value outside ``allowed``.

    Args:
        array (np.ndarray): Raw label map.
        allowed (Sequence[int]): The documented raw values.
        path (str): File the map was read from (named in the error).
        what (str): Human description of the file.
        expected (str): Human description of ``allowed``, e.g. ``'{0..20, 255}'``.
    """
    bad = np.setdiff1d(np.unique(array), np.asarray(allowed))
    if bad.size:
        raise InvalidInputError(f'{what} {path} holds values {bad[:10].tolist()} outside the '
                                f'documented range {expected}')


def convert_one(payload: tuple) -> None:
    """Convert one raw mask into both outputs; an output that would be all 255 is not written.

    Args:
        payload (tuple): ``(mask_path, out_20, out_20b)``.
    """
    mask_path, *outputs = payload
    raw = read_index_png(mask_path, 'VOC mask')
    check_values(raw, RAW_VALUES, mask_path, 'VOC mask', '{0..20, 255}')
    for lut, out_path in zip((LUT_20, LUT_20B), outputs):
        label = lut[raw]
        if np.all(label == IGNORE):  # prepare_voc.py:54 (per output)
            if osp.exists(out_path):
                os.remove(out_path)
            continue
        write_image(out_path, label)


def _read_skip_list(path: str) -> set:
    if not osp.isfile(path):
        return set()
    with open(path, encoding='utf-8') as f:
        return {line.strip() for line in f if line.strip()}


def convert(raw_root: str,
            out_root: Optional[str] = None,
            nproc: int = 1,
            overwrite: bool = False,
            label_dir: str = 'SegmentationClassAug',
            split_file: Optional[str] = None) -> dict:
    """Write ``annotations_detectron2/val`` and ``annotations_detectron2_bg/val``.

    Args:
        raw_root (str): The ``VOCdevkit/VOC2012`` folder.
        out_root (str, optional): Where to write; defaults to ``raw_root``.
        nproc (int): Worker processes.
        overwrite (bool): Convert again even if the outputs exist.
        label_dir (str): Raw mask folder relative to ``raw_root``.
        split_file (str, optional): Id list; defaults to ``ImageSets/Segmentation/val.txt``.

    Returns:
        dict: :func:`convert_all`'s counts plus ``all_ignore`` (ids not written, one list per
        output folder, keyed by the folder name) and ``out_dirs``.
    """
    out_root = out_root or raw_root
    mask_dir = require_dir(osp.join(raw_root, label_dir),
                           'the VOC2012 label folder (SegmentationClassAug/<id>.png)')
    split_file = split_file or osp.join(raw_root, 'ImageSets', 'Segmentation', 'val.txt')
    ids = read_id_list(split_file, 'the VOC2012 val split (one id per line)')
    missing = [i for i in ids if not osp.isfile(osp.join(mask_dir, i + '.png'))]
    if missing:
        raise FileNotFoundError(f'missing VOC masks: {len(missing)} ids of {split_file} have no '
                                f'{osp.join(mask_dir, missing[0] + ".png")} (first shown)')
    out_dirs = [osp.join(out_root, d, 'val') for d in OUT_DIRS]
    skip_files = [osp.join(out_root, d, SKIP_LIST) for d in OUT_DIRS]
    skipped = [set() if overwrite else _read_skip_list(p) for p in skip_files]
    items = []
    for i in ids:
        outputs = [osp.join(d, i + '.png') for d in out_dirs]
        done = [skip_file if i in skip else out
                for out, skip, skip_file in zip(outputs, skipped, skip_files)]
        items.append(ConversionItem(outputs=done,
                                    payload=(osp.join(mask_dir, i + '.png'), *outputs)))
    for d in out_dirs:
        os.makedirs(d, exist_ok=True)
    result = convert_all(convert_one, items, nproc=nproc, overwrite=overwrite,
                         description='VOC-20/20b val')
    result['all_ignore'] = {}
    for out_dir, skip_file in zip(out_dirs, skip_files):
        not_written = [i for i in ids if not osp.isfile(osp.join(out_dir, i + '.png'))]
        write_text(skip_file, ''.join(i + '\n' for i in not_written))
        result['all_ignore'][osp.basename(osp.dirname(out_dir))] = not_written
    result['out_dirs'] = out_dirs
    return result


def main(argv: Optional[List[str]] = None) -> dict:
    """Command line: ``prepare_voc.py data/VOCdevkit/VOC2012 [--out-dir D] [--nproc N]``."""
    parser = preparation_parser(
        'Write the PASCAL-VOC-20 / -20b val labels of the CAT-Seg protocol.',
        'the VOCdevkit/VOC2012 folder')
    parser.add_argument('--label-dir', default='SegmentationClassAug',
                        help='raw mask folder relative to raw_root (default: %(default)s)')
    parser.add_argument('--split-file',
                        help='id list (default: raw_root/ImageSets/Segmentation/val.txt)')
    _, result = run_preparation(parser, argv, convert, options=('label_dir', 'split_file'))
    for name, ids in result['all_ignore'].items():
        print(f'{name}: {len(ids)} all-ignore masks not written (listed in {name}/{SKIP_LIST})')
    print(f'done: {result["converted"]} converted, {result["skipped"]} already done')
    return result
