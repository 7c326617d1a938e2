"""A user's own folder of images and label masks, with classes from a text file.

Two layouts (``layout``)::

    # 'mmseg' (mmseg's generic layout; split='val' by default)
    <data_root>/img_dir/<split>/photo.jpg
    <data_root>/ann_dir/<split>/photo.png
    # 'flat': images and masks side by side, paired by suffix (here seg_map_suffix='_mask.png')
    <data_root>/photo.jpg
    <data_root>/photo_mask.png

Subfolders are searched (a sample ``sub/photo``); hidden files and folders are skipped.

Labels: a mask is a single-channel integer image (8-bit greyscale or palette PNG; 16-bit PNG for
more than 255 classes, loaded with ``LoadSegAnnotations``) holding, per pixel:

* without ``reduce_zero_label``: class id ``k`` (``0..T-1``, line ``k+1`` of the classes
  file), or ``ignore_index`` (default 255) for "not labelled";
* with ``reduce_zero_label=True`` (mmseg's rule, for masks where 0 is "not labelled"):
  ``k`` for class ``k-1`` (``1..T``), and 0 or 255 for "not labelled"; the loaded map then holds
  ``0..T-1`` and 255, so ``ignore_index`` must be 255.

Ignored pixels count neither in the training loss nor in the mIoU (the model's loss and the
``IoUMetric`` must use the same ``ignore_index``, which ``metainfo['ignore_index']`` states and
:class:`~mmseg_escnet.engine.VocabularyCheckHook` checks). Any other value is a folder problem.
"""
import os
import os.path as osp
from typing import List, Optional, Tuple

import mmengine
from mmseg.datasets import BaseSegDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS

from ..text import Vocabulary
from .folder_check import (FolderProblemsError, check_segmentation_folder, display_name,
                           name_list, pairing_problems, scan_folder)
from .transforms import LoadSegAnnotations

LAYOUTS = ('mmseg', 'flat')


def read_classes_file(classes_file: str) -> Tuple[str, ...]:
    """Display names (first synonyms) of the classes in ``classes_file``.

    Args:
        classes_file (str): a ``.txt`` file, one class per line, synonyms comma-separated
            (``sofa, couch``), blank and ``#`` lines skipped; or a ``.json`` list of such entries.

    Returns:
        Tuple[str, ...]: one name per class, in file order.

    Raises:
        ValueError: A missing, empty or malformed file (empty synonym, duplicate class).
    """
    return tuple(Vocabulary(classes_file).names)


@DATASETS.register_module()
class CustomFolderDataset(BaseSegDataset):
    """Images and label masks in a user's folder, checked once at construction.

    ``metainfo``: ``classes`` (the first synonym of every line of ``classes_file``),
    ``vocabulary`` (``classes_file`` itself: give the same file to the model as its
    ``test_vocabulary`` / ``vocabulary``) and ``ignore_index``.

    The check (``check_folder=True``) lists, in one :class:`FolderProblemsError`: a missing,
    empty or malformed classes file; missing folders or an empty folder; images without masks
    and masks without images; unreadable files; masks that are not single-channel integer
    images; masks whose size differs from their image; label values outside the classes and the
    ignore values (see the module docstring). It reads image headers and every mask once and
    writes nothing; every process that builds the dataset runs it (each rank of a distributed
    run), ``lazy_init=True`` defers it to ``full_init()``.

    Args:
        classes_file (str): the classes, one per line, synonyms comma-separated (see
            :func:`read_classes_file`); relative to the working directory, like the model's
            vocabulary, not to ``data_root``.
        layout (str): ``'mmseg'`` (``img_dir/<split>``, ``ann_dir/<split>``) or ``'flat'``
            (images and masks in one folder, ``data_root`` or ``data_prefix``).
        split (str): the sub-folder of ``img_dir`` / ``ann_dir`` in the mmseg layout (unused
            in the flat layout or with ``data_prefix``).
        img_suffix (str): image suffix. Defaults to ``'.jpg'``.
        seg_map_suffix (str): mask suffix, e.g. ``'.png'`` or, in the flat layout,
            ``'_mask.png'`` (``photo.jpg`` <-> ``photo_mask.png``). A file ending in both
            suffixes counts for the longer.
        ignore_index (int): the label value of unlabelled pixels; must be 255 with
            ``reduce_zero_label`` and may not be a class id.
        reduce_zero_label (bool): file value 0 is unlabelled and ``k`` is class ``k-1``.
        ann_file (str): optional list of sample stems (``photo``, ``sub/photo``), one per line,
            relative to ``data_root`` unless absolute; only these samples are used and checked.
        check_folder (bool): check the folder at construction. Defaults to True.
        data_prefix (dict, optional): ``img_path`` and ``seg_map_path``; defaults from the
            layout.
        metainfo (dict, optional): extra meta information (e.g. ``palette``); ``classes`` come
            from ``classes_file``.
        **kwargs: As :class:`mmseg.datasets.BaseSegDataset` (``data_root``, ``pipeline``,
            ``test_mode``, ``lazy_init``, ...).

    Raises:
        FolderProblemsError: The folder check failed (every problem in one message).
        ValueError: Invalid arguments (layout, suffixes, ``ignore_index``).
    """

    METAINFO: dict = dict()

    def __init__(self, *, classes_file: str, layout: str = 'mmseg', split: str = 'val',
                 img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 ignore_index: int = 255, reduce_zero_label: bool = False,
                 ann_file: str = '', check_folder: bool = True,
                 data_prefix: Optional[dict] = None, metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"{type(self).__name__}: layout must be one of {LAYOUTS}, got "
                             f'{layout!r}')
        if not img_suffix or not seg_map_suffix:
            raise ValueError(f'{type(self).__name__}: img_suffix and seg_map_suffix must not be '
                             f'empty')
        if layout == 'flat' and img_suffix == seg_map_suffix:
            raise ValueError(f'{type(self).__name__}: in the flat layout images and masks need '
                             f'different suffixes, both are {img_suffix!r} (e.g. '
                             f"seg_map_suffix='_mask.png' for photo.jpg <-> photo_mask.png)")
        if reduce_zero_label and ignore_index != 255:
            raise ValueError(f'{type(self).__name__}: with reduce_zero_label=True, file value 0 '
                             f'is loaded as 255 and 255 stays 255, so ignore_index must be 255, '
                             f'got {ignore_index}')
        self.classes_file = os.fspath(classes_file)
        self.layout, self.split, self.check_folder = layout, split, check_folder
        self._setup_problems: List[str] = []
        try:
            classes = read_classes_file(self.classes_file)
        except (ValueError, TypeError, OSError) as err:
            problem = f'classes file: {err}'
            if not check_folder:
                raise FolderProblemsError([problem], owner=type(self).__name__) from err
            self._setup_problems.append(problem)
            classes = ()
        if classes:
            self._check_ignore_index(classes, ignore_index, reduce_zero_label)
        meta = dict(metainfo or {})
        if 'classes' in meta and tuple(meta['classes']) != classes:
            raise ValueError(f'{type(self).__name__}: the classes come from classes_file '
                             f'({self.classes_file}); do not set metainfo["classes"]')
        meta.update(classes=classes, ignore_index=ignore_index)
        if data_prefix is None:
            data_prefix = (dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}')
                           if layout == 'mmseg' else dict(img_path='', seg_map_path=''))
        super().__init__(ann_file=ann_file, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, metainfo=meta,
                         data_prefix=dict(data_prefix), ignore_index=ignore_index,
                         reduce_zero_label=reduce_zero_label, **kwargs)
        # set here: mmengine reads every str value of metainfo that names a file as a list
        self._metainfo['vocabulary'] = self.classes_file

    def _check_ignore_index(self, classes: Tuple[str, ...], ignore_index: int,
                            reduce_zero_label: bool) -> None:
        num = len(classes)
        if reduce_zero_label and num > 254:
            raise ValueError(f'{type(self).__name__}: reduce_zero_label stores classes as 1..T '
                             f'in 8 bits, so at most 254 classes; {self.classes_file} has {num}')
        if not reduce_zero_label and 0 <= ignore_index < num:
            raise ValueError(
                f'{type(self).__name__}: ignore_index={ignore_index} is a class id (class '
                f'{ignore_index} is {classes[ignore_index]!r}; ids are 0..{num - 1}). If 0 means '
                f'unlabelled and 1..{num} are the classes, set reduce_zero_label=True and '
                f'ignore_index=255; else use an ignore value of at least {num} (255)')

    def _loader_problems(self) -> List[str]:
        """mmseg's ``LoadAnnotations`` casts labels to uint8: refuse it when ids exceed 255."""
        num = len(self._metainfo['classes'])
        if num <= 255 and self.ignore_index <= 255:
            return []
        for transform in self.pipeline.transforms:
            if isinstance(transform, LoadAnnotations) and \
                    not isinstance(transform, LoadSegAnnotations):
                return [f'{num} classes and ignore_index={self.ignore_index} need 16-bit masks: '
                        f"load them with dict(type='LoadSegAnnotations') (mmseg's "
                        f'LoadAnnotations casts labels to uint8 and corrupts ids above 255)']
        return []

    def _root(self) -> Optional[str]:
        return self.data_root or None

    def _read_stems(self) -> Tuple[Optional[List[str]], List[str]]:
        """Stems listed by ``ann_file`` (None without one) and the problems reading it."""
        if not self.ann_file:
            return None, []
        if not osp.isfile(self.ann_file):
            return [], [f'sample list (ann_file) not found: '
                        f'{display_name(self.ann_file, self._root())}']
        lines = mmengine.list_from_file(self.ann_file, backend_args=self.backend_args)
        stems = [line.strip().replace(os.sep, '/') for line in lines]
        return [s for s in stems if s and not s.startswith('#')], []

    def load_data_list(self) -> List[dict]:
        """One sample per image, sorted by image path (or per ``ann_file`` stem, in the file's
        order, as mmseg), paired with its mask; checks the folder first unless
        ``check_folder=False``.

        Returns:
            list[dict]: ``img_path``, ``seg_map_path``, ``label_map``, ``reduce_zero_label``,
            ``seg_fields`` per sample (as :class:`BaseSegDataset`).

        Raises:
            FolderProblemsError: Every problem found, in one message.
        """
        img_dir = self.data_prefix.get('img_path', '')
        seg_dir = self.data_prefix.get('seg_map_path', '')
        root = self._root()
        scan = scan_folder(img_dir, seg_dir, self.img_suffix, self.seg_map_suffix)
        stems, list_problems = self._read_stems()
        problems = self._setup_problems + self._loader_problems() + list_problems
        if stems is not None:
            stems = [s[:-len(self.img_suffix)] if s not in scan.images and
                     s.endswith(self.img_suffix) and s[:-len(self.img_suffix)] in scan.images
                     else s for s in stems]
        if self.check_folder:
            if not list_problems:
                problems += pairing_problems(scan, stems, root, self.ann_file)
            selected = scan.paired_stems() if stems is None else \
                [s for s in stems if s in scan.images and s in scan.masks]
            classes = self._metainfo['classes']
            problems += check_segmentation_folder(
                [(scan.images[s], scan.masks[s]) for s in selected],
                len(classes) if classes else None, self.ignore_index, self.reduce_zero_label,
                root=root, class_names=classes)
        elif scan.missing_dirs and stems is None:
            problems += pairing_problems(scan, None, root)
        if problems:
            notes = self._layout_notes(scan) + [
                'nothing was loaded: fix these problems (check_folder=False skips the folder '
                'check, at your own risk)']
            raise FolderProblemsError(problems, self._where(), notes, type(self).__name__)
        if stems is None:
            stems = sorted(scan.images, key=scan.images.__getitem__)
        return [dict(img_path=scan.images.get(s, osp.join(img_dir, s + self.img_suffix)),
                     seg_map_path=scan.masks.get(s, osp.join(seg_dir, s + self.seg_map_suffix)),
                     label_map=self.label_map, reduce_zero_label=self.reduce_zero_label,
                     seg_fields=[]) for s in stems]

    def _where(self) -> str:
        folder = self.data_root or self.data_prefix.get('img_path') or os.getcwd()
        return f'{folder} (layout={self.layout!r}, classes_file={self.classes_file})'

    def _layout_notes(self, scan) -> List[str]:
        """A hint when the folder looks like the other layout."""
        root = self.data_root
        if not root or not osp.isdir(root):
            return []
        if self.layout == 'flat' and osp.isdir(osp.join(root, 'img_dir')):
            return [f"{root} has img_dir/: for img_dir/<split> and ann_dir/<split> use "
                    f"layout='mmseg'"]
        if self.layout == 'mmseg' and scan.missing_dirs:
            files = [n for n in sorted(os.listdir(root)) if n.endswith(self.img_suffix)]
            if files:
                return [f'{root} holds images ({name_list(files, 3)}): for images and masks in '
                        f"one folder use layout='flat' with a seg_map_suffix"]
        return []
