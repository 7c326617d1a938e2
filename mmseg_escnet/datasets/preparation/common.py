"""Shared machinery of the benchmark preparation tools (``tools/dataset_converters/``).

Every converter reads an official raw release and writes the layout and label values of the
published protocol (cvlab-kaist/CAT-Seg, datasets/prepare_*.py). They share three guarantees, implemented here:

* **Clear errors for bad input**: :func:`require_file` / :func:`require_dir` name the missing
  path and what was expected there; :class:`InvalidInputError` is raised for a malformed file.
* **Idempotent, interruptible runs**: outputs are written atomically (temporary file + rename),
  so an existing output is always complete, and :func:`convert_all` skips items whose outputs
  already exist unless ``overwrite=True``. Killing a run and restarting it finishes the job; the
  temporary files (``.tmp-*``) a killed run leaves behind are removed by the next run (so two
  runs must not write into the same folders at the same time).
* **One-line errors**: every tool's ``main(argv)`` parses the shared command line of
  :func:`preparation_parser` and runs through :func:`run_preparation`, which checks that the
  output root can be written before converting anything; ``tools/dataset_converters/`` runs it
  with :func:`mmseg_escnet.utils.run_cli`, so a bad input is one line on stderr (``--debug``
  shows the traceback).
* **Progress and parallelism**: items are converted by ``nproc`` worker processes with
  MMEngine's progress bar (:func:`mmengine.utils.track_parallel_progress`).
"""
import argparse
import glob
import os
import os.path as osp
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.utils import track_parallel_progress, track_progress

from ...utils import ensure_writable_dir

#: Name prefix of the temporary files the writers rename into place.
TMP_PREFIX = '.tmp-'


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


@contextmanager
def atomic_output(path: str, suffix: str = '') -> Iterator[str]:
    """A temporary file beside ``path`` to write to, renamed to ``path`` when the block succeeds.

    The temporary file, ``.tmp-*<suffix>`` in the folder of ``path`` (created if needed), is
    removed if the block raises, so a failure never leaves a partial file under ``path``. Only a
    killed process leaves it behind; :func:`convert_all` removes such files.

    Args:
        path (str): The final file.
        suffix (str): Suffix of the temporary name (for writers that pick the format from it).

    Yields:
        str: The temporary path (an existing empty file).
    """
    folder = osp.dirname(path) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_image(path: str, array: np.ndarray) -> None:
    """Write ``array`` atomically (:func:`atomic_output`) with OpenCV.

    The format follows the suffix (``.png`` for uint8 labels, ``.tif`` for uint16 labels,
    ``.jpg`` for images).
    """
    with atomic_output(path, suffix=osp.splitext(path)[1]) as tmp:
        if not cv2.imwrite(tmp, array):
            raise OSError(f'OpenCV could not write {path} ({array.dtype}, shape {array.shape})')


def write_text(path: str, text: str) -> None:
    """Write a UTF-8 text file atomically (:func:`atomic_output`)."""
    with atomic_output(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)


def remove_stale_temporaries(folders: Iterable[str]) -> int:
    """Remove the temporary files (``.tmp-*``) that killed runs left in ``folders``.

    Args:
        folders (Iterable[str]): Output folders (repeats and missing folders are fine).

    Returns:
        int: How many files were removed.
    """
    removed = 0
    for folder in sorted(set(folders)):
        for path in glob.glob(osp.join(glob.escape(folder or '.'), TMP_PREFIX + '*')):
            if osp.isfile(path):
                os.remove(path)
                removed += 1
    return removed


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

    The temporary files of a killed run (``.tmp-*`` in the output folders of ``items``) are
    removed first, and their number printed.

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
    stale = remove_stale_temporaries(osp.dirname(p) for item in items for p in item.outputs)
    if stale:
        print(f'{description}: removed {stale} temporary file(s) ({TMP_PREFIX}*) left by an '
              'interrupted run')
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
    ``--nproc``, ``--overwrite`` and ``--debug``; parse it with :func:`run_preparation`.

    Args:
        description (str): The tool's description (``--help``).
        raw_root_help (str): What the ``raw_root`` argument is.

    Returns:
        argparse.ArgumentParser: The parser.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('raw_root', help=raw_root_help)
    parser.add_argument('--out-dir', default=None,
                        help='output root (default: raw_root, as the official script)')
    return add_common_arguments(parser)


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--nproc``, ``--overwrite`` and ``--debug`` (shared by every preparation tool)."""
    parser.add_argument('--nproc', type=int, default=max(1, (os.cpu_count() or 1) // 2),
                        help='worker processes (default: half the CPU cores)')
    parser.add_argument('--overwrite', action='store_true',
                        help='convert again even when the outputs exist (default: skip them)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser


def check_output_root(raw_root: str, out_dir: Optional[str]) -> None:
    """Fail at once if no file can be written in ``out_dir`` (default: ``raw_root``).

    Called before any conversion, so an unwritable ``--out-dir`` costs nothing. While
    ``raw_root`` is missing nothing is checked (nor created): the converter then stops at once
    on the missing input, naming what the folder should hold.

    Raises:
        OSError: Naming the folder, when it cannot be created or written.
    """
    if osp.isdir(raw_root):
        ensure_writable_dir(out_dir or raw_root, 'the prepared files (--out-dir)')


def run_preparation(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
                    convert: Callable[..., dict],
                    options: Sequence[str] = ()) -> Tuple[argparse.Namespace, dict]:
    """Parse a tool's command line, check its output root, then convert.

    Args:
        parser (argparse.ArgumentParser): From :func:`preparation_parser`, with the tool's own
            options added.
        argv (Sequence[str], optional): Arguments (default: ``sys.argv[1:]``).
        convert (callable): ``convert(raw_root, out_dir, nproc=..., overwrite=..., **options)``.
        options (Sequence[str]): Parsed arguments passed on to ``convert`` under their names.

    Returns:
        tuple[argparse.Namespace, dict]: The parsed arguments and what ``convert`` returned.
    """
    args = parser.parse_args(argv)
    check_output_root(args.raw_root, args.out_dir)
    result = convert(args.raw_root, args.out_dir, nproc=args.nproc, overwrite=args.overwrite,
                     **{name: getattr(args, name) for name in options})
    return args, result


def read_id_list(path: str, what: str) -> List[str]:
    """Read a split file with one image id per line (blank lines ignored)."""
    require_file(path, what)
    with open(path, encoding='utf-8') as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise InvalidInputError(f'{what} {path} is empty: expected one image id per line')
    return ids

