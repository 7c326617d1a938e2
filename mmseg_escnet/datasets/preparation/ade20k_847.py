"""ADE20K-847 (full ADE20K, release ``ADE20K_2021_17_01``) for the zero-shot benchmark A-847.

Raw release (``ADE20K_2021_17_01.zip`` from the ADE20K site, with its ``index_ade20k.pkl``),
``raw_root`` = the ``ADE20K_2021_17_01`` folder::

    ADE20K_2021_17_01/
        index_ade20k.pkl        # pickled dict; 'filename' (N names), 'folder' (N folders, e.g.
                                # 'ADE20K_2021_17_01/images/ADE/validation/<scene>...'),
                                # 'objectnames' (C class names), 'scene', 'objectPresence', ...
        images/ADE/{training,validation}/<scene>/.../ADE_val_00000001.jpg
        images/ADE/{training,validation}/<scene>/.../ADE_val_00000001_seg.png  # RGB, see below

Output (inside ``out_root``, by default ``raw_root`` like the official script)::

    images_detectron2/validation/ADE_val_00000001.jpg         # short side <= 512
    annotations_detectron2/validation/ADE_val_00000001.tif    # (H, W) uint16, 0..846, 65535
    ade847_classes.txt                                        # 847 names read from the release

Label conversion: the full-ADE class of a pixel is ``R // 10 * 256 + G`` of ``*_seg.png`` (B is
the instance); class 0 is unlabelled and class ``k >= 1`` is ``objectnames[k - 1]`` of the index
(the ADE20K starter notebook tests ``class_mask == obj_id + 1`` for ``objectnames[obj_id]``). The
847 evaluated classes (``ade847_full_ids.txt`` next to this module, in trainId order) map to
0..846, every other value (0 included) to the ignore value 65535.

Official behaviour matched: Mask2Former/SED ``datasets/prepare_ade20k_full.py`` (the script the
CAT-Seg README calls ``prepare_ade20k_847.py``), main block after the category table:

* images are enumerated in index order from ``zip(index['folder'], index['filename'])`` and read at
  ``<parent of ADE20K_2021_17_01>/<folder>/<filename>``; only the validation split is written,
  an image being validation when ``filename.split('_')[1] == 'val'``;
* ``loadAde20K``: the seg PNG is read with PIL, class = ``(R / 10).astype(int32) * 256 + G``
  (equal to ``R // 10 * 256 + G`` for uint8 R);
* the image is read with PIL (``np.asarray(Image.open(...))``, RGB). If ``w >= h > 512`` the new
  size is ``(512, round(w / h * 512))``, if ``h >= w > 512`` it is ``(round(h / w * 512), 512)``,
  otherwise nothing is resized; ``cv2.resize`` with ``INTER_LINEAR`` (image) and
  ``INTER_NEAREST`` (int32 class map);
* the label is written with ``Image.fromarray(uint16).save('.tif')`` (PIL, 16-bit TIFF) and the
  image with ``Image.fromarray(img).save('.jpg')`` (PIL JPEG, default quality 75): this tool uses
  the same PIL calls, so the JPEG pixels are the published ones.

Deliberate differences: the index is unpickled with an allow-list of containers and numpy
data (:class:`IndexUnpickler`), so a tampered ``index_ade20k.pkl`` cannot run code (the official
script calls ``pickle.load``); the class names are taken from the release's ``objectnames``
(and every one of the 847 ids must exist there); a ``*_seg.png`` that is not 8-bit RGB(A) or
whose size differs from its image is refused instead of converted; an image that is neither RGB nor
grayscale (e.g. CMYK, on which the official ``Image.save`` would fail) is converted to RGB; the
``training`` output folders are not created (the official script creates them empty); outputs
are written atomically so an interrupted run can be resumed.
"""
import _compat_pickle
import os
import os.path as osp
import pickle
from functools import lru_cache
from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .common import (ConversionItem, InvalidInputError, atomic_output, convert_all,
                     preparation_parser, require_dir, require_file, run_preparation, write_text)

NUM_CLASSES = 847
IGNORE_INDEX = 65535
MAX_SHORT_SIDE = 512
# R // 10 * 256 + G with uint8 R, G is at most 25 * 256 + 255.
MAX_RAW_CLASS = 255 // 10 * 256 + 255
INDEX_FILE = 'index_ade20k.pkl'
INDEX_KEYS = ('filename', 'folder', 'objectnames')
IMAGE_OUT_DIR = osp.join('images_detectron2', 'validation')
LABEL_OUT_DIR = osp.join('annotations_detectron2', 'validation')
CLASSES_FILE = 'ade847_classes.txt'
FULL_IDS_FILE = osp.join(osp.dirname(osp.abspath(__file__)), 'ade847_full_ids.txt')


@lru_cache(maxsize=None)
def full_ade_ids() -> Tuple[int, ...]:
    """The 847 full-ADE class ids in trainId order (from ``ade847_full_ids.txt``)."""
    with open(require_file(FULL_IDS_FILE, 'ADE20K-847 id table'), encoding='utf-8') as f:
        ids = tuple(int(line) for line in f if line.strip() and not line.startswith('#'))
    if len(ids) != NUM_CLASSES or len(set(ids)) != NUM_CLASSES:
        raise InvalidInputError(f'{FULL_IDS_FILE} must hold {NUM_CLASSES} distinct ids')
    return ids


@lru_cache(maxsize=None)
def full_ade_lut() -> np.ndarray:
    """Look-up table ``lut[full-ADE class] -> trainId`` (uint16, 65535 when not evaluated).

    Returns:
        np.ndarray: (MAX_RAW_CLASS + 1,) uint16.
    """
    lut = np.full(MAX_RAW_CLASS + 1, IGNORE_INDEX, dtype=np.uint16)
    lut[list(full_ade_ids())] = np.arange(NUM_CLASSES, dtype=np.uint16)
    return lut


# The only globals the official index may reference: plain containers and numpy's array, dtype
# and scalar reconstruction (``numpy.core`` before numpy 2, ``numpy._core`` from numpy 2 on).
# Anything else (``os.system``, ``builtins.eval``, a class with a custom ``__reduce__``) would run
# code while unpickling, so it is refused before it is even imported.
INDEX_ALLOWED_GLOBALS = frozenset([
    ('builtins', 'dict'), ('builtins', 'list'), ('builtins', 'tuple'), ('builtins', 'set'),
    ('builtins', 'frozenset'), ('builtins', 'bytearray'), ('builtins', 'complex'),
    ('builtins', 'str'), ('builtins', 'bytes'), ('builtins', 'int'), ('builtins', 'float'),
    ('builtins', 'bool'), ('_codecs', 'encode'),  # protocol 2 writes bytes with _codecs.encode
    ('collections', 'OrderedDict'),
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', '_reconstruct'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
])


class UnsafePickleError(InvalidInputError):
    """A pickle references a global outside :data:`INDEX_ALLOWED_GLOBALS`."""


class IndexUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`INDEX_ALLOWED_GLOBALS` (data, never code)."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global; refuse every other one before importing its module.

        Raises:
            UnsafePickleError: For a global outside the allow-list.
        """
        # Python 2 names (``__builtin__.set``, written by protocols 0-2), as pickle maps them
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        if (module, name) in INDEX_ALLOWED_GLOBALS:
            return super().find_class(module, name)
        # numpy scalar types (``numpy.float64`` ...) are data types as well
        if module in ('numpy', 'numpy.core.multiarray', 'numpy._core.multiarray'):
            candidate = getattr(np, name, None)
            if isinstance(candidate, type) and issubclass(candidate, np.generic):
                return candidate
        raise UnsafePickleError(f'refused global {module}.{name}')


def safe_unpickle(path: str) -> Any:
    """Unpickle ``path`` with :class:`IndexUnpickler` (containers and numpy data only).

    Raises:
        InvalidInputError: If the file is not a pickle of such data; the message names the file
            and, for a refused global, says that it may be tampered with.
    """
    try:
        with open(path, 'rb') as f:
            return IndexUnpickler(f).load()
    except UnsafePickleError as error:
        raise InvalidInputError(
            f'{path} is not a plain data pickle ({error}): the file may be tampered with; '
            'download the ADE20K release again') from None
    except Exception as error:  # any unpickling failure means a wrong or truncated file
        raise InvalidInputError(f'{path} is not a readable pickle: {error!r}') from error


def load_index(path: str) -> dict:
    """Load ``index_ade20k.pkl`` safely and check the fields this tool reads.

    The index is unpickled with an allow-list (:class:`IndexUnpickler`): a tampered file cannot
    run code, it is refused with an error naming it.

    Raises:
        FileNotFoundError: If the file is missing.
        InvalidInputError: If it cannot be unpickled, references anything but containers and
            numpy data, or lacks ``filename`` / ``folder`` / ``objectnames`` (with as many
            folders as file names).
    """
    require_file(path, f'ADE20K full index ({INDEX_FILE}, downloaded with ADE20K_2021_17_01)')
    index = safe_unpickle(path)
    if not isinstance(index, dict) or any(key not in index for key in INDEX_KEYS):
        raise InvalidInputError(f'{path} must be a dict with the keys {INDEX_KEYS}')
    if len(index['filename']) != len(index['folder']):
        raise InvalidInputError(f'{path}: "filename" ({len(index["filename"])}) and "folder" '
                                f'({len(index["folder"])}) must have the same length')
    return index


def class_names(index: dict, index_path: str) -> List[str]:
    """Names of the 847 classes in trainId order: ``objectnames[id - 1]``.

    Raises:
        InvalidInputError: If an id is not in the release's ``objectnames``.
    """
    names = list(index['objectnames'])
    missing = [i for i in full_ade_ids() if not 1 <= i <= len(names)]
    if missing:
        raise InvalidInputError(
            f'{index_path}: "objectnames" has {len(names)} entries but the ADE20K-847 ids '
            f'{missing[:10]}{"..." if len(missing) > 10 else ""} need entry id - 1; is this the '
            'ADE20K_2021_17_01 index?')
    return [str(names[i - 1]) for i in full_ade_ids()]


def is_validation(filename: str) -> bool:
    """Official split rule: ``filename.split('_')[1] == 'val'`` (``ADE_val_00000001.jpg``)."""
    parts = filename.split('_')
    return len(parts) > 1 and parts[1] == 'val'


def image_path(raw_root: str, folder: str, filename: str) -> str:
    """Path of an indexed image: ``folder`` starts with the release folder name, replaced here by
    ``raw_root`` (a folder already relative to the release, ``images/...``, is kept)."""
    parts = osp.normpath(str(folder)).split(os.sep)
    if parts[0] != 'images':
        parts = parts[1:]
    return osp.join(raw_root, *parts, filename)


def target_size(height: int, width: int) -> Optional[Tuple[int, int]]:
    """Official short-side-512 rule; returns ``(h_new, w_new)`` or ``None`` (no resize)."""
    if width >= height > MAX_SHORT_SIDE:
        return MAX_SHORT_SIDE, round(width / float(height) * MAX_SHORT_SIDE)
    if height >= width > MAX_SHORT_SIDE:
        return round(height / float(width) * MAX_SHORT_SIDE), MAX_SHORT_SIDE
    return None


def read_class_map(seg_path: str) -> np.ndarray:
    """Read a ``*_seg.png`` and decode the full-ADE class of each pixel.

    Returns:
        np.ndarray: (H, W) int32, ``R // 10 * 256 + G`` (0 = unlabelled).

    Raises:
        InvalidInputError: If the file is not an 8-bit RGB(A) image.
    """
    require_file(seg_path, 'ADE20K full segmentation (*_seg.png)')
    try:
        with Image.open(seg_path) as image:
            seg = np.array(image)
    except OSError as error:
        raise InvalidInputError(f'{seg_path} is not a readable image: {error}') from error
    if seg.dtype != np.uint8 or seg.ndim != 3 or seg.shape[2] not in (3, 4):
        raise InvalidInputError(
            f'{seg_path} must be an 8-bit RGB image (class = R // 10 * 256 + G), got dtype '
            f'{seg.dtype} and shape {seg.shape}')
    return (seg[:, :, 0] // 10).astype(np.int32) * 256 + seg[:, :, 1].astype(np.int32)


def read_rgb(path: str) -> np.ndarray:
    """Read an image with PIL as the official script: (H, W, 3) RGB or (H, W) gray uint8."""
    require_file(path, 'ADE20K full image')
    try:
        with Image.open(path) as image:
            if image.mode not in ('RGB', 'L'):
                image = image.convert('RGB')
            return np.asarray(image)
    except OSError as error:
        raise InvalidInputError(f'{path} is not a readable image: {error}') from error


def save_pil(path: str, array: np.ndarray) -> None:
    """``Image.fromarray(array).save(path)`` (PIL defaults, as official) written atomically."""
    with atomic_output(path, suffix=osp.splitext(path)[1]) as tmp:
        Image.fromarray(array).save(tmp)


def convert_one(paths: Sequence[str]) -> None:
    """Convert one validation image and its label (module-level for multiprocessing).

    Args:
        paths (tuple[str, str, str, str]): raw ``.jpg``, raw ``_seg.png``, output ``.jpg``,
            output ``.tif``.
    """
    img_path, seg_path, out_img, out_label = paths
    img = read_rgb(img_path)
    classes = read_class_map(seg_path)
    if classes.shape != img.shape[:2]:
        raise InvalidInputError(f'{seg_path} has size {classes.shape}, its image {img_path} '
                                f'has {img.shape[:2]}')
    size = target_size(*img.shape[:2])
    if size is not None:
        h_new, w_new = size
        img = cv2.resize(img, (w_new, h_new), interpolation=cv2.INTER_LINEAR)
        classes = cv2.resize(classes, (w_new, h_new), interpolation=cv2.INTER_NEAREST)
    label = full_ade_lut()[classes]
    save_pil(out_label, label)
    save_pil(out_img, img)


def collect_items(raw_root: str, out_root: str, index: dict) -> List[ConversionItem]:
    """Validation images of the index, in index order, as conversion items.

    Raises:
        FileNotFoundError: If an indexed validation image or its ``_seg.png`` is missing.
        InvalidInputError: If the index lists no validation image.
    """
    items = []
    for folder, filename in zip(index['folder'], index['filename']):
        filename = str(filename)
        if not is_validation(filename):
            continue
        img = require_file(image_path(raw_root, folder, filename),
                           f'ADE20K full image listed in {INDEX_FILE}')
        seg = require_file(osp.splitext(img)[0] + '_seg.png',
                           f'ADE20K full segmentation of {filename}')
        out_img = osp.join(out_root, IMAGE_OUT_DIR, filename)
        out_label = osp.join(out_root, LABEL_OUT_DIR, osp.splitext(filename)[0] + '.tif')
        items.append(ConversionItem(outputs=[out_img, out_label],
                                    payload=(img, seg, out_img, out_label)))
    if not items:
        raise InvalidInputError(f'{osp.join(raw_root, INDEX_FILE)} lists no validation image '
                                '(file names ADE_val_*.jpg)')
    return items


def write_class_names(path: str, names: List[str]) -> bool:
    """Write the names, one per line, unless the file already holds exactly them."""
    text = ''.join(name + '\n' for name in names)
    if osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            if f.read() == text:
                return False
    write_text(path, text)
    return True


def convert(raw_root: str, out_root: Optional[str] = None, nproc: int = 1,
            overwrite: bool = False) -> dict:
    """Write the ADE20K-847 validation images, labels and class names.

    Args:
        raw_root (str): The ``ADE20K_2021_17_01`` folder (with ``index_ade20k.pkl``).
        out_root (str, optional): Output root; defaults to ``raw_root``.
        nproc (int): Worker processes.
        overwrite (bool): Convert again the images already written.

    Returns:
        dict: ``total``, ``converted``, ``skipped`` (validation images, from
        :func:`convert_all`), ``classes`` (the 847 names) and ``classes_file``.
    """
    out_root = raw_root if out_root is None else out_root
    require_dir(raw_root, f'ADE20K full release folder (ADE20K_2021_17_01 with {INDEX_FILE})')
    index_path = osp.join(raw_root, INDEX_FILE)
    index = load_index(index_path)
    names = class_names(index, index_path)
    items = collect_items(raw_root, out_root, index)
    del index  # the real index is ~800 MB: free it before forking the workers
    result = convert_all(convert_one, items, nproc=nproc, overwrite=overwrite,
                         description='ADE20K-847 validation images')
    result['classes_file'] = osp.join(out_root, CLASSES_FILE)
    write_class_names(result['classes_file'], names)
    result['classes'] = names
    return result


def main(argv: Optional[List[str]] = None) -> dict:
    """Command line entry point (``tools/dataset_converters/prepare_ade20k_847.py``)."""
    parser = preparation_parser(
        'Prepare ADE20K-847 validation as in CAT-Seg (images_detectron2 and '
        'annotations_detectron2/validation, uint16 .tif 0..846, 65535 ignore).',
        'the ADE20K_2021_17_01 folder (with index_ade20k.pkl)')
    _, result = run_preparation(parser, argv, convert)
    print(f'ADE20K-847: {result["converted"]} converted, {result["skipped"]} already done; '
          f'class names in {result["classes_file"]}')
    return result
