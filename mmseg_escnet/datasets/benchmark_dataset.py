"""Base class of the benchmark datasets, in the layout written by ``tools/dataset_converters/``.

The CAT-Seg protocol (its ``datasets/prepare_*.py``
scripts; docs/benchmarks.md) writes one label file per evaluated image, and some
images have none (VOC masks that are all ignore are not written; A-847 keeps only validation
images; PASCAL-Context keeps only the val ids). So the sample list is driven by the **label
folder**: every ``<seg folder>/<stem><seg suffix>`` is paired with ``<img folder>/<stem><img
suffix>``, and a missing image is an error. Each dataset also records, in its ``metainfo``, the
built-in vocabulary to use as text classes and the ignore value of its labels, which
:class:`~mmseg_escnet.engine.VocabularyCheckHook` checks against the model and the evaluator.
"""
import os.path as osp
from typing import List, Optional

from mmengine import fileio
from mmseg.datasets import BaseSegDataset
from mmseg.datasets.transforms import LoadAnnotations

from ..text import Vocabulary
from .transforms import LoadSegAnnotations


def vocabulary_classes(name: str) -> tuple:
    """Display names (first synonyms) of a built-in vocabulary, e.g. ``'ade847'``."""
    return tuple(Vocabulary(name).names)


class BenchmarkDataset(BaseSegDataset):
    """A benchmark whose samples are listed from its label folder.

    Subclasses set ``METAINFO`` (``classes``, ``vocabulary``: the built-in vocabulary holding the
    text names with synonyms, ``ignore_index``), the file suffixes, ``DEFAULT_PREFIX`` (the
    image and label folders relative to ``data_root``) and ``PREPARE_TOOL``.

    Args:
        data_prefix (dict, optional): ``img_path`` and ``seg_map_path``; defaults to
            ``DEFAULT_PREFIX``.
        **kwargs: As :class:`mmseg.datasets.BaseSegDataset`.

    Raises:
        FileNotFoundError: If the label folder is missing (naming the preparation tool), or a
            label has no image.
        ValueError: For a class subset on a dataset whose ignore value is not 255 (mmseg maps
            dropped classes to 255, a valid id there), or for 16-bit labels loaded with mmseg's
            8-bit ``LoadAnnotations``.
    """

    IMG_SUFFIX = '.jpg'
    SEG_MAP_SUFFIX = '.png'
    DEFAULT_PREFIX: dict = {}
    PREPARE_TOOL = ''
    REDUCE_ZERO_LABEL = False

    def __init__(self, data_prefix: Optional[dict] = None, **kwargs) -> None:
        kwargs.setdefault('img_suffix', self.IMG_SUFFIX)
        kwargs.setdefault('seg_map_suffix', self.SEG_MAP_SUFFIX)
        kwargs.setdefault('reduce_zero_label', self.REDUCE_ZERO_LABEL)
        super().__init__(data_prefix=dict(data_prefix or self.DEFAULT_PREFIX), **kwargs)
        ignore_index = self.metainfo['ignore_index']
        if ignore_index != 255 and self.label_map:
            raise ValueError(f'{type(self).__name__} does not support class subsets: mmseg maps '
                             f'dropped classes to 255, a valid class id here (ignore is '
                             f'{ignore_index}); use the full class list')
        if self.SEG_MAP_SUFFIX == '.tif':
            self._check_16bit_loader()

    def _check_16bit_loader(self) -> None:
        for transform in self.pipeline.transforms:
            if isinstance(transform, LoadAnnotations) and \
                    not isinstance(transform, LoadSegAnnotations):
                raise ValueError(f'{type(self).__name__} has 16-bit labels: load them with '
                                 f"dict(type='LoadSegAnnotations'); mmseg's LoadAnnotations casts "
                                 f'them to uint8 and corrupts ids above 255')

    def load_data_list(self) -> List[dict]:
        """One sample per label file, paired with its image; sorted by file name."""
        img_dir = self.data_prefix['img_path']
        ann_dir = self.data_prefix['seg_map_path']
        if not osp.isdir(ann_dir):
            raise FileNotFoundError(
                f'{type(self).__name__}: label folder {ann_dir} not found; prepare the dataset '
                f'with {self.PREPARE_TOOL} (see data/README.md)')
        data_list = []
        for name in sorted(fileio.list_dir_or_file(ann_dir, list_dir=False,
                                                   suffix=self.seg_map_suffix, recursive=True)):
            stem = name[:-len(self.seg_map_suffix)]
            img_path = osp.join(img_dir, stem + self.img_suffix)
            if not osp.isfile(img_path):
                raise FileNotFoundError(f'{type(self).__name__}: label {osp.join(ann_dir, name)} '
                                        f'has no image {img_path}')
            data_list.append(dict(img_path=img_path, seg_map_path=osp.join(ann_dir, name),
                                  label_map=self.label_map,
                                  reduce_zero_label=self.reduce_zero_label, seg_fields=[]))
        if not data_list:
            raise FileNotFoundError(f'{type(self).__name__}: no *{self.seg_map_suffix} labels in '
                                    f'{ann_dir}; prepare the dataset with {self.PREPARE_TOOL}')
        return data_list
