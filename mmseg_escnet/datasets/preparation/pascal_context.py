"""PASCAL-Context-59 and -459 labels (VOC2010 val) in CAT-Seg's layout.

Raw release, the folder given as ``raw_root``::

    VOCdevkit/VOC2010/                 # VOCtrainval_03-May-2010.tar
        JPEGImages/<id>.jpg            # read by the datasets, not here
        trainval_merged.json           # PC-59: PASCAL in Detail annotations (trainval_merged.json)
        trainval/<id>.mat              # PC-459: from trainval.tar.gz, key LabelMap, values 1..459
        labels.txt                     # PC-459: from trainval.tar.gz, lines "N: name", N = 1..459
        pascalcontext_val.txt          # PC-459 id list: NOT in the release (see below)

Output (under ``out_root``, default ``raw_root``)::

    annotations_detectron2/pc59_val/<id>.png    # uint8 0..58, 255 ignore (background included)
    annotations_detectron2/pc459_val/<id>.tif   # uint16 0..458 (= LabelMap - 1); ignore 459 unused
    pc459_classes.txt                           # the 459 names of labels.txt, in label order

**PC-59** (CAT-Seg ``datasets/prepare_pascal_context_59.py``). Keep the images of
``trainval_merged.json`` whose ``phase`` is ``"val"`` (line 50). For each one, start from a zero map
of its ``height`` x ``width``, and paint every ``annos_segmentation`` entry of the image, in file
order, with its ``category_id`` wherever its decoded RLE mask is non-zero (lines 54-68). So a later
annotation overwrites an earlier one where they overlap. This is exactly the class mask of the
Detail API's ``getMask(img)``, which the official script replaced by this inline loop:
ccvl/detail-api ``PythonAPI/detail/__init__.py`` (read in its fork yucking/detail-api) paints the
image's ``annos_segmentation`` in the same file order, decoding with ``maskUtils.decode``. The
RLE masks are decoded with ``pycocotools.mask`` here too. The id table (lines 9-22) is the sorted
list of 60 Detail ids: raw 0 (background, unpainted) goes to 255, the 59 class ids go to 0..58 in
increasing id order, and every other id goes to 255.

**PC-459** (CAT-Seg ``datasets/prepare_pascal_context_459.py``). For each id of
``pascalcontext_val.txt`` that has a ``trainval/<id>.mat`` (ids without one are skipped, lines
40-45), write ``LabelMap - 1`` as a TIFF (lines 13-19). The official also parses ``labels.txt``
(lines 27-35) but does not use it. Here, its 459 names are written to ``pc459_classes.txt``.
``LabelMap`` is uint16 in the release. Any value outside 1..459 is an error here. A 0 would wrap
to 65535 in the official, and CAT-Seg's evaluation could not run on it.

``pascalcontext_val.txt`` has 5104 ids. It ships with CAT-Seg's repository
(``datasets/pascalcontext_val.txt``), not with any raw release: copy it next to ``trainval/`` or
pass ``--split-file``. It cannot be derived reliably from the release. The 5105 val images of
``trainval_merged.json`` (or VOC2010 ``ImageSets/Main/val.txt``) are one id longer, and which id
CAT-Seg dropped is not recorded anywhere in the release.

Deliberate differences:

* A val image with no segmentation annotation gets an all-255 map, as Detail's ``getMask`` would
  return, and is reported. The official raises ``KeyError`` (line 72), so the release has none.
* Bad input is an error rather than a crash or wrong labels: an unknown ``category_id``, an RLE
  whose size is not the image's, LabelMap values outside 1..459. The official's ``min >= 0``
  assert cannot fire on unsigned data, since 0 - 1 wraps to 65535.
* The official writes with PIL, and this tool with OpenCV. The label values are the same.
"""
import json
import os.path as osp
from collections import OrderedDict
from typing import List, Optional

import numpy as np
import scipy.io
from pycocotools import mask as mask_utils

from .common import (ConversionItem, InvalidInputError, convert_all, lookup_table,
                     preparation_parser, read_id_list, require_dir, require_file,
                     run_preparation, write_image, write_text)

#: Detail category ids of the PASCAL-Context-59 classes and background (0), as in
#: prepare_pascal_context_59.py:9-16 (there unsorted, then ``np.sort``-ed).
PC59_IDS = (0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98,
            104, 105, 113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284,
            295, 296, 308, 324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424,
            427, 440, 445, 454, 458)
#: raw id -> train id; the official's ``np.uint8(index) - 1`` wraps background to 255.
PC59_MAPPING = {raw: (k - 1) % 256 for k, raw in enumerate(PC59_IDS)}
IGNORE_59 = 255
#: Painted maps are uint16 (Detail ids reach 459); every other id maps to 255.
LUT_59 = lookup_table(PC59_MAPPING, 65536, IGNORE_59)
NUM_CLASSES_459 = 459
PC59_DIR = osp.join('annotations_detectron2', 'pc59_val')
PC459_DIR = osp.join('annotations_detectron2', 'pc459_val')


def _load_detail_json(path: str) -> dict:
    require_file(path, 'the PASCAL in Detail annotations (trainval_merged.json)')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInputError(f'{path} is not valid JSON: {err}') from err
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) for k in ('images', 'annos_segmentation',
                                                    'categories')):
        raise InvalidInputError(f'{path}: expected a PASCAL in Detail JSON object with the lists '
                                f"'images', 'annos_segmentation' and 'categories'")
    return data


def _pc59_items(data: dict, json_path: str, out_dir: str) -> tuple:
    """Group the val images' annotations in file order; returns ``(items, empty_ids)``."""
    try:
        category_ids = {int(c['category_id']) for c in data['categories']}
        val_images = OrderedDict((img['image_id'], img) for img in data['images']
                                 if img['phase'] == 'val')
        anns = {image_id: [] for image_id in val_images}
        for ann in data['annos_segmentation']:
            if ann['image_id'] not in anns:
                continue
            if ann['category_id'] not in category_ids or \
                    not 0 <= int(ann['category_id']) < len(LUT_59):
                raise InvalidInputError(
                    f'{json_path}: annotation {ann.get("id")} of image {ann["image_id"]} has '
                    f'category_id {ann["category_id"]}, not one of the file\'s categories '
                    f'(expected an integer 0..65535)')
            anns[ann['image_id']].append((int(ann['category_id']), ann['segmentation']))
        items, empty = [], []
        for image_id, img in val_images.items():
            stem = osp.splitext(osp.basename(img['file_name']))[0]
            out_path = osp.join(out_dir, stem + '.png')
            size = (int(img['height']), int(img['width']))
            if not anns[image_id]:
                empty.append(stem)
            items.append(ConversionItem(outputs=[out_path],
                                        payload=(json_path, stem, size, anns[image_id], out_path)))
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, InvalidInputError):
            raise
        raise InvalidInputError(f'{json_path}: malformed PASCAL in Detail entry '
                                f'({type(err).__name__}: {err})') from err
    if not items:
        raise InvalidInputError(f'{json_path} has no image with phase "val"')
    return items, empty


def _decode(segmentation: dict, size: tuple, where: str) -> np.ndarray:
    """Decode one Detail RLE (compressed or not) to an (H, W) uint8 mask of the image's size."""
    if not isinstance(segmentation, dict) or 'counts' not in segmentation or \
            list(segmentation.get('size', ())) != list(size):
        raise InvalidInputError(f'{where}: expected an RLE dict with counts and size {list(size)}, '
                                f'got {str(segmentation)[:80]}')
    try:
        if isinstance(segmentation['counts'], list):
            segmentation = mask_utils.frPyObjects(segmentation, *size)
        mask = mask_utils.decode(segmentation)
    except Exception as err:  # pycocotools raises bare Exceptions on corrupt counts
        raise InvalidInputError(f'{where}: undecodable RLE ({err})') from err
    if mask.shape != size:
        raise InvalidInputError(f'{where}: RLE decodes to {mask.shape}, expected {size}')
    return mask


def convert_one_59(payload: tuple) -> None:
    """Paint one val image's annotations in order, then map Detail ids to 0..58 / 255.

    Args:
        payload (tuple): ``(json_path, stem, (H, W), [(category_id, rle), ...], out_png)``.
    """
    json_path, stem, size, anns, out_path = payload
    canvas = np.zeros(size, dtype=np.uint16)  # 0 = background where nothing is painted
    for k, (category_id, rle) in enumerate(anns):
        where = f'{json_path}: image {stem}, segmentation {k}'
        canvas[_decode(rle, size, where) != 0] = category_id
    write_image(out_path, LUT_59[canvas])


def convert_pc59(raw_root: str,
                 out_root: Optional[str] = None,
                 nproc: int = 1,
                 overwrite: bool = False,
                 json_file: Optional[str] = None) -> dict:
    """Write ``annotations_detectron2/pc59_val/<id>.png`` for the val images of the Detail JSON.

    Args:
        raw_root (str): The ``VOCdevkit/VOC2010`` folder.
        out_root (str, optional): Where to write; defaults to ``raw_root``.
        nproc (int): Worker processes.
        overwrite (bool): Convert again even if the outputs exist.
        json_file (str, optional): Defaults to ``raw_root/trainval_merged.json``.

    Returns:
        dict: :func:`convert_all`'s counts plus ``empty`` (ids of val images without any
        annotation, written all 255) and ``out_dir``.
    """
    out_dir = osp.join(out_root or raw_root, PC59_DIR)
    json_path = json_file or osp.join(raw_root, 'trainval_merged.json')
    items, empty = _pc59_items(_load_detail_json(json_path), json_path, out_dir)
    result = convert_all(convert_one_59, items, nproc=nproc, overwrite=overwrite,
                         description='PASCAL-Context-59 val')
    return dict(result, empty=empty, out_dir=out_dir)


def read_pc459_labels(path: str) -> List[str]:
    """Parse PASCAL-Context's ``labels.txt`` (``N: name`` for N = 1..459) into 459 names."""
    require_file(path, 'the PASCAL-Context class list (labels.txt from trainval.tar.gz)')
    names = {}
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            index, sep, name = line.partition(':')
            if not sep or not index.strip().isdigit() or not name.strip():
                raise InvalidInputError(f'{path} line {lineno}: expected "N: name", got '
                                        f'{line.strip()!r}')
            if int(index) in names:
                raise InvalidInputError(f'{path} line {lineno}: label {int(index)} repeated')
            names[int(index)] = name.strip()
    if sorted(names) != list(range(1, NUM_CLASSES_459 + 1)):
        raise InvalidInputError(f'{path} has {len(names)} labels: expected exactly the labels '
                                f'1..{NUM_CLASSES_459}')
    return [names[i] for i in range(1, NUM_CLASSES_459 + 1)]


def _read_text(path: str) -> Optional[str]:
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return f.read()


def convert_one_459(payload: tuple) -> None:
    """Write ``LabelMap - 1`` of one ``.mat`` as a uint16 TIFF.

    Args:
        payload (tuple): ``(mat_path, out_tif)``.
    """
    mat_path, out_path = payload
    try:
        label_map = scipy.io.loadmat(mat_path)['LabelMap']
    except KeyError as err:
        raise InvalidInputError(f'{mat_path} has no LabelMap variable') from err
    except Exception as err:  # scipy raises several types for a corrupt file
        raise InvalidInputError(f'{mat_path} is not a readable MATLAB file: {err}') from err
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise InvalidInputError(f'{mat_path}: LabelMap must be a 2-D integer array, got '
                                f'{label_map.dtype} {label_map.shape}')
    low, high = int(label_map.min()), int(label_map.max())
    if low < 1 or high > NUM_CLASSES_459:
        raise InvalidInputError(f'{mat_path}: LabelMap values span {low}..{high}, expected '
                                f'1..{NUM_CLASSES_459}')
    write_image(out_path, (label_map.astype(np.int64) - 1).astype(np.uint16))


def convert_pc459(raw_root: str,
                  out_root: Optional[str] = None,
                  nproc: int = 1,
                  overwrite: bool = False,
                  split_file: Optional[str] = None) -> dict:
    """Write ``annotations_detectron2/pc459_val/<id>.tif`` and ``pc459_classes.txt``.

    Args:
        raw_root (str): The ``VOCdevkit/VOC2010`` folder.
        out_root (str, optional): Where to write; defaults to ``raw_root``.
        nproc (int): Worker processes.
        overwrite (bool): Convert again even if the outputs exist.
        split_file (str, optional): Defaults to ``raw_root/pascalcontext_val.txt``.

    Returns:
        dict: :func:`convert_all`'s counts plus ``missing`` (ids of the list without a ``.mat``,
        skipped as in the official), ``classes_file`` and ``out_dir``.
    """
    out_root = out_root or raw_root
    split_file = split_file or osp.join(raw_root, 'pascalcontext_val.txt')
    ids = read_id_list(split_file, 'the PASCAL-Context-459 val list (pascalcontext_val.txt, '
                       "from CAT-Seg's repository datasets/pascalcontext_val.txt)")
    mat_dir = require_dir(osp.join(raw_root, 'trainval'),
                          'the PASCAL-Context annotations (trainval/<id>.mat from trainval.tar.gz)')
    names = read_pc459_labels(osp.join(raw_root, 'labels.txt'))
    out_dir = osp.join(out_root, PC459_DIR)
    items, missing = [], []
    for i in ids:
        mat_path = osp.join(mat_dir, i + '.mat')
        if not osp.isfile(mat_path):
            missing.append(i)
            continue
        out_path = osp.join(out_dir, i + '.tif')
        items.append(ConversionItem(outputs=[out_path], payload=(mat_path, out_path)))
    if not items:
        raise FileNotFoundError(f'missing the PASCAL-Context annotations: none of the {len(ids)} '
                                f'ids of {split_file} has a .mat in {mat_dir}')
    classes_file = osp.join(out_root, 'pc459_classes.txt')
    text = ''.join(name + '\n' for name in names)
    if overwrite or _read_text(classes_file) != text:
        write_text(classes_file, text)
    result = convert_all(convert_one_459, items, nproc=nproc, overwrite=overwrite,
                         description='PASCAL-Context-459 val')
    return dict(result, missing=missing, classes_file=classes_file, out_dir=out_dir)


def convert(raw_root: str,
            out_root: Optional[str] = None,
            nproc: int = 1,
            overwrite: bool = False,
            classes: int = 59,
            json_file: Optional[str] = None,
            split_file: Optional[str] = None) -> dict:
    """Write the PC-59 (:func:`convert_pc59`) or the PC-459 (:func:`convert_pc459`) labels.

    The first four arguments go to either function, ``json_file`` only to :func:`convert_pc59`
    and ``split_file`` only to :func:`convert_pc459` (the other one is ignored).

    Args:
        classes (int): 59 or 459.

    Returns:
        dict: What the called function returns.
    """
    if classes not in (59, 459):
        raise ValueError(f'classes must be 59 or 459, got {classes}')
    if classes == 59:
        return convert_pc59(raw_root, out_root, nproc=nproc, overwrite=overwrite,
                            json_file=json_file)
    return convert_pc459(raw_root, out_root, nproc=nproc, overwrite=overwrite,
                         split_file=split_file)


def main(argv: Optional[List[str]] = None, classes: Optional[int] = None) -> dict:
    """Command line: ``prepare_pascal_context_{59,459}.py data/VOCdevkit/VOC2010 [--nproc N]``.

    Args:
        argv (list[str], optional): Arguments (default: ``sys.argv[1:]``).
        classes (int, optional): 59 or 459 fixed by the calling tool; if None, ``--classes``
            is a required option.
    """
    parser = preparation_parser(
        f'Write the PASCAL-Context-{classes or "59/459"} val labels of the CAT-Seg '
        'protocol.',
        'the VOCdevkit/VOC2010 folder')
    parser.set_defaults(classes=classes, json_file=None, split_file=None)
    if classes is None:
        parser.add_argument('--classes', type=int, choices=(59, 459), required=True)
    if classes in (None, 59):
        parser.add_argument('--json-file', help='PC-59 only: the Detail annotations (default: '
                            'raw_root/trainval_merged.json)')
    if classes in (None, 459):
        parser.add_argument('--split-file', help='PC-459 only: the id list (default: raw_root/'
                            "pascalcontext_val.txt; copy it from CAT-Seg's datasets/)")
    args, result = run_preparation(parser, argv, convert,
                                   options=('classes', 'json_file', 'split_file'))
    if args.classes == 59:
        if result['empty']:
            print(f'{len(result["empty"])} val images have no annotation (written all 255): '
                  f'{result["empty"][:10]}')
    else:
        if result['missing']:
            print(f'{len(result["missing"])} listed ids have no .mat and were skipped: '
                  f'{result["missing"][:10]}')
        print(f'class names written to {result["classes_file"]}')
    print(f'done: {result["converted"]} converted, {result["skipped"]} already done')
    return result
