"""Shared machinery of the benchmark preparation tools (``tools/dataset_converters/``).

Every converter reads an official raw release and writes the layout and label values of the
published protocol (cvlab-kaist/CAT-Seg, datasets/prepare_*.py). They share three guarantees, implemented here:

* **Clear errors for bad input**: :func:`require_file` / :func:`require_dir` name the missing
  path and what was expected there; :class:`InvalidInputError` is raised for a malformed file.
* **Idempotent, interruptible runs**: outputs are written atomically (temporary file + rename),
  so an existing output is always complete, and :func:`convert_all` skips items whose outputs
  already exist unless ``overwrite=True``. Killing a run and restarting it finishes the job.
* **Progress and parallelism**: items are converted by ``nproc`` worker processes with
  MMEngine's progress bar (:func:`mmengine.utils.track_parallel_progress`).
"""
import argparse
import os
import os.path as osp
import tempfile
from dataclasses import dataclass
from typing import Callable, List, Sequence

import cv2
import numpy as np
from mmengine.utils import track_parallel_progress, track_progress


class InvalidInputError(ValueError):
    """A raw input file exists but does not hold what the official release holds."""


def require_file(path: str, what: str) -> str:
    """Return ``path`` if it is a file, else raise naming it and what it should be.

    Args:
        path (str): Expected file.
        what (str): Human description, e.g. ``'the ADE20K-full index (index_ade20k.pkl)'``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'missing {what}: expected a file at {path}')
    return path


def require_dir(path: str, what: str) -> str:
    """Return ``path`` if it is a directory, else raise naming it and what it should hold."""
    if not osp.isdir(path):
        raise FileNotFoundError(f'missing {what}: expected a directory at {path}')
    return path


def read_image(path: str, what: str, flag: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """Read an image file with OpenCV, raising :class:`InvalidInputError` if it cannot be decoded.

    Args:
        path (str): Image file.
        what (str): Human description for the error message.
        flag (int): ``cv2.imread`` flag; the default keeps the bit depth and channels.

    Returns:
        np.ndarray: (H, W) or (H, W, C) array as stored (BGR channel order for colour).
    """
    require_file(path, what)
    array = cv2.imread(path, flag)
    if array is None:
        raise InvalidInputError(f'{what} {path} is not a readable image')
    return array


def write_image(path: str, array: np.ndarray) -> None:
    """Write ``array`` atomically: to a temporary file in the same folder, then rename.

    The format follows the suffix (``.png`` for uint8 labels, ``.tif`` for uint16 labels,
    ``.jpg`` for images). A crash never leaves a partial file under ``path``.
    """
    folder, name = osp.split(path)
    os.makedirs(folder, exist_ok=True)
    suffix = osp.splitext(name)[1]
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix=suffix, dir=folder)
    os.close(fd)
    try:
        if not cv2.imwrite(tmp, array):
            raise OSError(f'OpenCV could not write {path} ({array.dtype}, shape {array.shape})')
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """Write a text file atomically (temporary file + rename)."""
    folder = osp.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=folder)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def lookup_table(mapping: dict, size: int, fill: int, dtype=np.uint8) -> np.ndarray:
    """A label look-up table: ``lut[raw] = mapping.get(raw, fill)`` for ``raw < size``."""
    lut = np.full(size, fill, dtype=dtype)
    for raw, target in mapping.items():
        lut[raw] = target
    return lut


@dataclass
class ConversionItem:
    """One unit of work: the outputs it produces and the inputs it reads.

    Attributes:
        outputs (list[str]): Files written by the item; the item is skipped when all exist.
        payload (object): Whatever the converter function needs (paths, ids, ...).
    """

    outputs: List[str]
    payload: object


def convert_all(func: Callable[[object], None],
                items: Sequence[ConversionItem],
                nproc: int = 1,
                overwrite: bool = False,
                description: str = 'converting') -> dict:
    """Run ``func(item.payload)`` for every item whose outputs are not all present.

    Args:
        func (callable): Module-level function (picklable) converting one item; it must write
            its outputs with :func:`write_image` / :func:`write_text` (atomic).
        items (list[ConversionItem]): All items of the dataset split.
        nproc (int): Worker processes (1 = in this process, easier to debug).
        overwrite (bool): Convert every item even if its outputs exist.
        description (str): Printed before the progress bar.

    Returns:
        dict: ``total``, ``converted`` and ``skipped`` counts.
    """
    if nproc < 1:
        raise ValueError(f'nproc must be >= 1, got {nproc}')
    todo = [item for item in items
            if overwrite or not all(osp.isfile(p) for p in item.outputs)]
    print(f'{description}: {len(todo)} to convert, {len(items) - len(todo)} already done')
    payloads = [item.payload for item in todo]
    if payloads:
        if nproc == 1 or len(payloads) == 1:
            track_progress(func, payloads)
        else:
            track_parallel_progress(func, payloads, nproc=min(nproc, len(payloads)))
    return dict(total=len(items), converted=len(todo), skipped=len(items) - len(todo))


def preparation_parser(description: str, raw_root_help: str) -> argparse.ArgumentParser:
    """The command line shared by every tool; tools add their own options to it.

    Holds ``raw_root``, ``--out-dir`` (default: the raw root, as the official scripts),
    ``--nproc`` and ``--overwrite``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('raw_root', help=raw_root_help)
    parser.add_argument('--out-dir', default=None,
                        help='output root (default: raw_root, as the official script)')
    return add_common_arguments(parser)


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--nproc`` and ``--overwrite`` (shared by every preparation tool)."""
    parser.add_argument('--nproc', type=int, default=max(1, (os.cpu_count() or 1) // 2),
                        help='worker processes (default: half the CPU cores)')
    parser.add_argument('--overwrite', action='store_true',
                        help='convert again even when the outputs exist (default: skip them)')
    return parser


def read_id_list(path: str, what: str) -> List[str]:
    """Read a split file with one image id per line (blank lines ignored)."""
    require_file(path, what)
    with open(path, encoding='utf-8') as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise InvalidInputError(f'{what} {path} is empty: expected one image id per line')
    return ids

