"""ADE20K-150 (SceneParsing ``ADEChallengeData2016``) for the zero-shot benchmark A-150.

Raw release (``ADEChallengeData2016.zip`` of the MIT Scene Parsing benchmark), ``raw_root``::

    ADEChallengeData2016/
        images/validation/ADE_val_00000001.jpg ...         # 2000 images (not modified)
        annotations/validation/ADE_val_00000001.png ...    # (H, W) uint8, 0 = other, 1..150

Output (inside ``out_root``, by default ``raw_root`` like the official script)::

    annotations_detectron2/validation/ADE_val_00000001.png  # (H, W) uint8, 0..149, 255 ignore

Label conversion: ``label - 1`` in uint8 arithmetic, so class ``k`` (1..150) becomes ``k - 1`` and
0 ("other objects", not evaluated) wraps around to the ignore value 255. Images are not touched:
the dataset reads them from ``images/validation`` (with ``--out-dir`` elsewhere, only the
annotations are written there).

Official behaviour matched: CAT-Seg ``datasets/prepare_ade20k_150.py`` (lines 12-16) opens each
annotation of ``annotations/validation`` with PIL, asserts uint8, subtracts 1 and saves the PNG
under ``annotations_detectron2/validation`` with the same file name. Differences: the official
script converts every file of the folder, this tool the ``*.png`` files; it also refuses a
multi-channel map or values above 150 (the official script would write them shifted), and writes
atomically so that an interrupted run can be resumed.
"""
import glob
import os.path as osp
from typing import List, Optional

import numpy as np
from PIL import Image

from .common import (ConversionItem, InvalidInputError, convert_all, preparation_parser,
                     require_dir, require_file, run_preparation, write_image)

NUM_CLASSES = 150
RAW_ANNOTATION_DIR = osp.join('annotations', 'validation')
OUT_ANNOTATION_DIR = osp.join('annotations_detectron2', 'validation')


def read_raw_label(path: str) -> np.ndarray:
    """Read one raw ADE20K-150 annotation as the official script does (PIL, no conversion).

    Args:
        path (str): ``annotations/validation/<name>.png``.

    Returns:
        np.ndarray: (H, W) uint8 map with values 0..150.

    Raises:
        FileNotFoundError: If the file does not exist.
        InvalidInputError: If it is not a decodable single-channel uint8 map with values <= 150.
    """
    require_file(path, 'ADE20K-150 annotation')
    try:
        with Image.open(path) as image:
            label = np.asarray(image)
    except OSError as error:
        raise InvalidInputError(f'ADE20K-150 annotation {path} is not a readable image: '
                                f'{error}') from error
    if label.dtype != np.uint8 or label.ndim != 2:
        raise InvalidInputError(
            f'ADE20K-150 annotation {path} must be a single-channel uint8 map (values 0..150), '
            f'got dtype {label.dtype} and shape {label.shape}')
    if label.size and int(label.max()) > NUM_CLASSES:
        raise InvalidInputError(f'ADE20K-150 annotation {path} holds value {int(label.max())}; '
                                f'expected 0 (other) or class ids 1..{NUM_CLASSES}')
    return label


def convert_label(label: np.ndarray) -> np.ndarray:
    """Shift a raw (H, W) uint8 map by -1 with uint8 wrap-around: 0 -> 255, k -> k - 1."""
    return label - np.uint8(1)


def convert_one(paths: tuple) -> None:
    """Convert one annotation (module-level for multiprocessing).

    Args:
        paths (tuple[str, str]): ``(raw annotation, output annotation)``.
    """
    src, dst = paths
    write_image(dst, convert_label(read_raw_label(src)))


def collect_items(raw_root: str, out_root: str) -> List[ConversionItem]:
    """List the validation annotations of ``raw_root`` (sorted) as conversion items.

    Raises:
        FileNotFoundError: If ``annotations/validation`` is missing.
        InvalidInputError: If it holds no ``*.png`` file.
    """
    ann_dir = require_dir(osp.join(raw_root, RAW_ANNOTATION_DIR),
                          'ADE20K-150 validation annotations (ADEChallengeData2016.zip)')
    sources = sorted(glob.glob(osp.join(ann_dir, '*.png')))
    if not sources:
        raise InvalidInputError(f'ADE20K-150 annotation folder {ann_dir} holds no *.png file')
    out_dir = osp.join(out_root, OUT_ANNOTATION_DIR)
    return [ConversionItem(outputs=[osp.join(out_dir, osp.basename(src))],
                           payload=(src, osp.join(out_dir, osp.basename(src))))
            for src in sources]


def convert(raw_root: str, out_root: Optional[str] = None, nproc: int = 1,
            overwrite: bool = False) -> dict:
    """Write ``annotations_detectron2/validation`` from the raw ADE20K-150 release.

    Args:
        raw_root (str): The ``ADEChallengeData2016`` folder.
        out_root (str, optional): Output root; defaults to ``raw_root``.
        nproc (int): Worker processes.
        overwrite (bool): Convert again the annotations already written.

    Returns:
        dict: ``total``, ``converted``, ``skipped`` (from :func:`convert_all`) and ``out_dir``.
    """
    out_root = raw_root if out_root is None else out_root
    items = collect_items(raw_root, out_root)
    result = convert_all(convert_one, items, nproc=nproc, overwrite=overwrite,
                         description='ADE20K-150 validation annotations')
    result['out_dir'] = osp.join(out_root, OUT_ANNOTATION_DIR)
    return result


def main(argv: Optional[List[str]] = None) -> dict:
    """Command line entry point (``tools/dataset_converters/prepare_ade20k_150.py``)."""
    parser = preparation_parser(
        'Prepare ADE20K-150 validation labels as in CAT-Seg '
        '(annotations_detectron2/validation, uint8 0..149, 255 ignore).',
        'the ADEChallengeData2016 folder')
    _, result = run_preparation(parser, argv, convert)
    print(f'ADE20K-150: {result["converted"]} converted, {result["skipped"]} already done, '
          f'in {result["out_dir"]}')
    return result
