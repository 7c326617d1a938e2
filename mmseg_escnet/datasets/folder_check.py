"""A one-pass check of a user's segmentation folder: every problem found, then one error.

Used by :class:`~mmseg_escnet.datasets.CustomFolderDataset` at construction and callable on its
own (e.g. by ``tools/misc/make_custom_config.py`` before it writes a config):

* :func:`scan_folder` lists images and masks and pairs them by stem (only listing files);
* :func:`pairing_problems` names images without masks, masks without images, missing folders;
* :func:`check_segmentation_folder` reads every pair once: the image header only (its size,
  its EXIF orientation), the whole mask (its mode, size and label values, with ``np.unique``);
* :class:`FolderProblemsError` formats the problems, grouped, with capped file lists.

Nothing is ever written: no cache, no temporary file, only reads.
"""
import os
import os.path as osp
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

#: Names listed per problem group before "and N more".
MAX_NAMES = 10
#: Extensions of files that may be images or masks matched by neither suffix (for hints).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.gif')
#: PIL modes of single-channel integer images, i.e. valid masks.
MASK_MODES = ('1', 'L', 'P', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N')
#: EXIF orientations that make the image loaders (cv2 and pillow) transpose width and height.
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class FolderProblemsError(ValueError):
    """Every problem found in a dataset folder, in one error.

    Args:
        problems (Sequence[str]): one entry per problem group; its first line is a summary,
            further lines list the files.
        where (str): the folder the problems are in, for the first line.
        notes (Sequence[str]): hints printed after the list.
        owner (str): who checked (e.g. the dataset type), the first word of the message.

    Attributes:
        problems (List[str]): the problem groups, as given.
    """

    def __init__(self, problems: Sequence[str], where: str = '', notes: Sequence[str] = (),
                 owner: str = '') -> None:
        self.problems = list(problems)
        self.notes = list(notes)
        super().__init__(format_problems(self.problems, where, self.notes, owner))


def format_problems(problems: Sequence[str], where: str = '', notes: Sequence[str] = (),
                    owner: str = '') -> str:
    """The message of :class:`FolderProblemsError`: a head line, then numbered groups."""
    place = f' in {where}' if where else ''
    count = _plural(len(problems), 'problem')
    lines = [f'{owner + ": " if owner else ""}{count}{place}:']
    for k, problem in enumerate(problems, start=1):
        first, *rest = problem.split('\n')
        lines.append(f'{k}. {first}')
        lines.extend(f'     {line}' for line in rest)
    lines.extend(f'note: {note}' for note in notes)
    return '\n'.join(lines)


def name_list(names: Sequence[str], limit: int = MAX_NAMES, sep: str = ', ') -> str:
    """``'a, b, c'``: at most ``limit`` names, then ``'and N more'``."""
    names, more = list(names), len(names) - limit
    return sep.join(names[:limit] + ([f'and {more} more'] if more > 0 else []))


def _lines(entries: Sequence[str]) -> str:
    return name_list(entries, sep='\n')


def _plural(n: int, word: str) -> str:
    return f'{n} {word}{"" if n == 1 else "s"}'


def display_name(path: str, root: Optional[str]) -> str:
    """``path`` relative to ``root`` when it lies under it, else as is."""
    if root:
        rel = osp.relpath(path, root)
        if rel != '.' and not rel.startswith('..'):
            return rel
    return path


@dataclass
class FolderScan:
    """Images and masks found by :func:`scan_folder`, keyed by stem: the path relative to the
    image (mask) folder without suffix, ``/``-separated (``'sub/photo'`` for
    ``img_dir/val/sub/photo.jpg``), as an ``ann_file`` lists them."""

    img_dir: str
    seg_dir: str
    img_suffix: str
    seg_map_suffix: str
    images: Dict[str, str] = field(default_factory=dict)
    masks: Dict[str, str] = field(default_factory=dict)
    missing_dirs: List[str] = field(default_factory=list)
    other_files: Counter = field(default_factory=Counter)  # extension -> count, unmatched files

    def paired_stems(self) -> List[str]:
        """Stems with both an image and a mask, sorted by image path."""
        return sorted((s for s in self.images if s in self.masks), key=self.images.__getitem__)


def _walk(folder: str) -> Iterable[str]:
    """Relative paths of the files under ``folder``, hidden files and folders skipped
    (``.ipynb_checkpoints``, macOS ``._photo.jpg`` copies)."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        for name in sorted(filenames):
            if not name.startswith('.'):
                yield osp.relpath(osp.join(dirpath, name), folder)


def scan_folder(img_dir: str, seg_dir: str, img_suffix: str = '.jpg',
                seg_map_suffix: str = '.png') -> FolderScan:
    """List images (``*img_suffix``) under ``img_dir`` and masks (``*seg_map_suffix``) under
    ``seg_dir``, recursively; only file names are read.

    When both folders are the same (the flat layout), a file ending in both suffixes counts for
    the longer one: with ``.png`` images and ``_mask.png`` masks, ``a_mask.png`` is a mask.

    Args:
        img_dir (str): the image folder.
        seg_dir (str): the mask folder (may equal ``img_dir``).
        img_suffix (str): image suffix, e.g. ``'.jpg'``.
        seg_map_suffix (str): mask suffix, e.g. ``'.png'`` or ``'_mask.png'``.

    Returns:
        FolderScan: images and masks by stem, missing folders, unmatched file extensions.

    Raises:
        ValueError: If the folders are the same and so are the suffixes.
    """
    same = osp.normpath(img_dir or '.') == osp.normpath(seg_dir or '.')
    if same and img_suffix == seg_map_suffix:
        raise ValueError(f'images and masks share the folder {img_dir!r} and the suffix '
                         f'{img_suffix!r}: give masks another suffix, e.g. '
                         f"seg_map_suffix='_mask.png'")
    scan = FolderScan(img_dir, seg_dir, img_suffix, seg_map_suffix)
    folders = [(img_dir, [(img_suffix, scan.images)])]
    kinds = [(img_suffix, scan.images), (seg_map_suffix, scan.masks)]
    if same:
        folders = [(img_dir, sorted(kinds, key=lambda kind: -len(kind[0])))]
    else:
        folders.append((seg_dir, [(seg_map_suffix, scan.masks)]))
    for folder, suffixes in folders:
        if not osp.isdir(folder or '.'):
            scan.missing_dirs.append(folder)
            continue
        for rel in _walk(folder or '.'):
            for suffix, found in suffixes:
                if rel.endswith(suffix) and len(rel) > len(suffix):
                    found[rel[:-len(suffix)].replace(os.sep, '/')] = osp.join(folder, rel)
                    break
            else:
                scan.other_files[osp.splitext(rel)[1]] += 1
    return scan


def _missing_dir_problem(folder: str, root: Optional[str]) -> str:
    parent = osp.dirname(osp.normpath(folder))
    text = f'folder not found: {display_name(folder, root)}'
    if parent and osp.isdir(parent):
        subdirs = sorted(d for d in os.listdir(parent)
                         if osp.isdir(osp.join(parent, d)) and not d.startswith('.'))
        text += (f' ({display_name(parent, root)} holds '
                 f'{name_list(subdirs) if subdirs else "no folders"})')
    return text


def pairing_problems(scan: FolderScan, stems: Optional[Sequence[str]] = None,
                     root: Optional[str] = None, ann_file: str = '') -> List[str]:
    """Missing folders, an empty folder, images without masks and masks without images.

    Args:
        scan (FolderScan): what :func:`scan_folder` found.
        stems (Sequence[str], optional): only these samples (an ``ann_file``); by default all.
        root (str, optional): file names are shown relative to it.
        ann_file (str): the file ``stems`` came from, for messages.

    Returns:
        List[str]: one entry per problem group (empty when the pairing is complete).
    """
    problems = [_missing_dir_problem(d, root) for d in scan.missing_dirs]
    others = ', '.join(f'{n} *{ext}' for ext, n in sorted(scan.other_files.items())
                       if ext.lower() in IMAGE_EXTENSIONS)
    hint = (f'\n(the folders also hold files matching neither suffix: {others}; check '
            f"img_suffix={scan.img_suffix!r} and seg_map_suffix={scan.seg_map_suffix!r})"
            if others else '')
    if problems:
        return problems
    if stems is None:
        if not scan.images and not scan.masks:
            where = display_name(scan.img_dir, root) if scan.img_dir == scan.seg_dir else \
                f'{display_name(scan.img_dir, root)} / {display_name(scan.seg_dir, root)}'
            return [f'empty dataset: no *{scan.img_suffix} images and no '
                    f'*{scan.seg_map_suffix} masks in {where}{hint}']
        images, masks = sorted(scan.images), sorted(scan.masks)
    else:
        if not stems:
            return [f'the sample list {display_name(ann_file, root)} lists no samples']
        absent = [s for s in stems if s not in scan.images and s not in scan.masks]
        if absent:
            problems.append(f'{_plural(len(absent), "sample")} listed in '
                            f'{display_name(ann_file, root)} but with neither image nor mask:\n'
                            f'{_lines(absent)}{hint}')
        images = [s for s in stems if s in scan.images]
        masks = [s for s in stems if s in scan.masks]
    if problems:  # the hint once
        hint = ''
    flat = osp.normpath(scan.img_dir or '.') == osp.normpath(scan.seg_dir or '.')
    # (what, its files, what it lacks, the folder and suffix of what it lacks)
    for what, paths, lacking, folder, suffix in (
            ('image', [scan.images[s] for s in images if s not in scan.masks], 'a mask',
             scan.seg_dir, scan.seg_map_suffix),
            ('mask', [scan.masks[s] for s in masks if s not in scan.images], 'an image',
             scan.img_dir, scan.img_suffix)):
        if not paths:
            continue
        expected = (f'<name>{suffix} beside' if flat else
                    osp.join(display_name(folder, root), f'<name>{suffix} for'))
        problems.append(f'{_plural(len(paths), what)} without {lacking} (expected {expected} '
                        f'each):\n{_lines([display_name(p, root) for p in paths])}{hint}')
        hint = ''
    return problems


def _image_size(path: str) -> Tuple[int, int, int]:
    """Width and height as loaded (EXIF orientation applied), the orientation; header only."""
    with Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    if orientation in TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return width, height, orientation


def _mask_values(path: str) -> Tuple[str, Tuple[int, int], Optional[np.ndarray], str]:
    """Mode, size, distinct values (None when not a single-channel integer image) and, for a
    multi-channel mask, a hint."""
    with Image.open(path) as img:
        mode, size = img.mode, img.size
        if mode in MASK_MODES:
            array = np.asarray(img)
            if array.dtype in (bool, np.uint8):
                values = np.flatnonzero(np.bincount(array.ravel(), minlength=256))
            else:
                values = np.unique(array)
            return mode, size, values, ''
        hint = ''
        if mode in ('RGB', 'RGBA', 'LA'):
            rgb = np.asarray(img)[..., :3]
            hint = ('grey values stored as colour: save one channel (mode L)' if mode == 'LA' or
                    (rgb == rgb[..., :1]).all() else 'colour-coded: convert each colour to its '
                    'class id')
        return mode, size, None, hint


def valid_label_values(num_classes: int, ignore_index: int = 255,
                       reduce_zero_label: bool = False) -> Tuple[np.ndarray, str]:
    """The label values a mask file may hold, and their description for messages.

    Without ``reduce_zero_label``: class ids ``0..T-1`` and ``ignore_index``. With it (mmseg's
    rule: file value 0 becomes 255, ``k`` becomes ``k - 1``, 255 stays 255): ``1..T`` for the
    classes and 0 and 255, both ignored.
    """
    if reduce_zero_label:
        values = np.array([0, *range(1, num_classes + 1), 255])
        return values, f'1..{num_classes} = classes, 0 and 255 = ignored (reduce_zero_label)'
    values = np.array(sorted({*range(num_classes), ignore_index}))
    return values, f'0..{num_classes - 1} = classes, {ignore_index} = ignore_index'


def check_segmentation_folder(pairs: Sequence[Tuple[str, str]], num_classes: Optional[int],
                              ignore_index: int = 255, reduce_zero_label: bool = False, *,
                              root: Optional[str] = None,
                              class_names: Optional[Sequence[str]] = None) -> List[str]:
    """Read every (image, mask) pair once and return the problems found, grouped.

    Images are opened for their header only (size and EXIF orientation: the loaders rotate
    images with an orientation of 5-8, so their loaded size is compared). Masks are decoded
    once. Found: unreadable images and masks, masks that are not single-channel integer images
    (a colour mask, with a hint), masks whose size differs from their image, and label values
    outside :func:`valid_label_values`, naming the values and the files. A truncated image body
    is not detected (decoding every image would make the check several times slower).

    Args:
        pairs (Sequence[Tuple[str, str]]): ``(image path, mask path)`` of every sample.
        num_classes (int, optional): T, the number of classes; None skips the value check.
        ignore_index (int): the label value of unlabelled pixels (without reduce_zero_label).
        reduce_zero_label (bool): file value 0 means unlabelled and ``k`` means class ``k-1``.
        root (str, optional): file names are shown relative to it.
        class_names (Sequence[str], optional): names of the classes, for warnings.

    Returns:
        List[str]: one entry per problem group; empty when every pair is fine. Warns (a
        ``UserWarning``) when the masks hold at most one class and T > 1, e.g. binary 0/255
        masks whose 255 is the ignore value.
    """
    unreadable, not_integer, wrong_size, bad_values = [], [], [], {}
    seen = np.zeros(0, np.int64)
    valid, described = (valid_label_values(num_classes, ignore_index, reduce_zero_label)
                        if num_classes is not None else (None, ''))
    for img_path, seg_path in pairs:
        try:
            width, height, orientation = _image_size(img_path)
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ...
            unreadable.append(_unreadable(img_path, err, root))
            width = height = orientation = None
        try:
            mode, size, values, hint = _mask_values(seg_path)
        except Exception as err:
            unreadable.append(_unreadable(seg_path, err, root))
            continue
        name = display_name(seg_path, root)
        if values is None:
            not_integer.append(f'{name}: mode {mode}' + (f', {hint}' if hint else ''))
            continue
        if width is not None and size != (width, height):
            rotated = (f' after its EXIF orientation {orientation}' if orientation in
                       TRANSPOSING_ORIENTATIONS else '')
            wrong_size.append(f'{name}: {size[0]}x{size[1]}, image '
                              f'{display_name(img_path, root)}: {width}x{height}{rotated}')
        seen = np.union1d(seen, values)
        if valid is not None:
            outside = np.setdiff1d(values, valid)
            if outside.size:
                bad_values[name] = outside
    problems = []
    if unreadable:
        problems.append(f'{_plural(len(unreadable), "unreadable file")} (not an image PIL can '
                        f'open):\n{_lines(unreadable)}')
    if not_integer:
        problems.append(f'{_plural(len(not_integer), "mask")} with colours or several channels '
                        f'instead of one class id per pixel (a mask must be a single-channel '
                        f'integer image, e.g. an 8-bit greyscale or palette PNG):\n'
                        f'{_lines(not_integer)}')
    if wrong_size:
        problems.append(f'{_plural(len(wrong_size), "mask")} whose size differs from its image '
                        f'(width x height):\n{_lines(wrong_size)}')
    if bad_values:
        problems.append(_values_problem(bad_values, num_classes, described, reduce_zero_label,
                                        ignore_index))
    elif not problems and num_classes is not None and num_classes > 1 and len(pairs):
        _warn_single_class(seen, num_classes, ignore_index, reduce_zero_label, class_names)
    return problems


def _unreadable(path: str, err: Exception, root: Optional[str]) -> str:
    reason = str(err).replace(repr(path), '').replace(path, '').strip(' :')
    return f'{display_name(path, root)} ({type(err).__name__}: {reason or "empty file?"})'


def _values_problem(bad_values: Dict[str, np.ndarray], num_classes: int, described: str,
                    reduce_zero_label: bool, ignore_index: int) -> str:
    every = np.unique(np.concatenate(list(bad_values.values())))
    shown = ', '.join(map(str, every[:20])) + (', ...' if every.size > 20 else '')
    lines = [f'{name}: {", ".join(map(str, vals[:10]))}' + (', ...' if vals.size > 10 else '')
             for name, vals in bad_values.items()]
    text = (f'label values outside the {num_classes} classes in '
            f'{_plural(len(bad_values), "mask")}: {shown} (valid: {described}):\n{_lines(lines)}')
    if not reduce_zero_label and every.tolist() == [num_classes] and num_classes < 255:
        text += ('\nhint: if 0 means unlabelled and 1..T are the classes, set '
                 'reduce_zero_label=True')
    elif every.size > 20:
        text += ('\nhint: many values: masks must hold class ids, saved losslessly (PNG, no '
                 'anti-aliasing, not JPEG), not rendered colours or greys')
    elif ignore_index != 255 and 255 in every:
        text += f'\nhint: 255 is not ignored here (ignore_index={ignore_index})'
    return text


def _warn_single_class(seen: np.ndarray, num_classes: int, ignore_index: int,
                       reduce_zero_label: bool, class_names: Optional[Sequence[str]]) -> None:
    ids = seen - 1 if reduce_zero_label else seen
    ids = ids[(ids >= 0) & (ids < num_classes) & (seen != (255 if reduce_zero_label
                                                             else ignore_index))]
    if ids.size > 1:
        return
    named = (f'class {int(ids[0])}' + (f' ({class_names[int(ids[0])]!r})' if class_names else '')
             if ids.size else 'no class')
    warnings.warn(f'the masks hold {named} of {num_classes} and otherwise only ignored pixels; '
                  f'if a value marks objects (binary masks saved as 0/255, 255 being ignored), '
                  f'store it as its class id', UserWarning, stacklevel=3)
