"""ADE20K-150 and ADE20K-847 as evaluated by CAT-Seg (docs/benchmarks.md).

Layouts (written by ``tools/dataset_converters/prepare_ade20k_150.py`` / ``_847.py``)::

    data/ADEChallengeData2016/images/validation/*.jpg
    data/ADEChallengeData2016/annotations_detectron2/validation/*.png   # uint8 0..149, 255 ignore
    data/ADE20K_2021_17_01/images_detectron2/validation/*.jpg
    data/ADE20K_2021_17_01/annotations_detectron2/validation/*.tif      # uint16 0..846, 65535 ignore
"""
from mmseg.registry import DATASETS

from .benchmark_dataset import BenchmarkDataset, vocabulary_classes


@DATASETS.register_module()
class ADE150Dataset(BenchmarkDataset):
    """ADE20K-150 validation (2000 images), labels already shifted by the converter (0 -> 255)."""

    METAINFO = dict(classes=vocabulary_classes('ade150'), vocabulary='ade150', ignore_index=255)
    DEFAULT_PREFIX = dict(img_path='images/validation',
                          seg_map_path='annotations_detectron2/validation')
    PREPARE_TOOL = 'tools/dataset_converters/prepare_ade20k_150.py'


@DATASETS.register_module()
class ADE847Dataset(BenchmarkDataset):
    """ADE20K-847 (full ADE20K_2021_17_01 validation, 2000 images), 16-bit labels.

    Load the labels with ``dict(type='LoadSegAnnotations')`` (enforced).
    """

    METAINFO = dict(classes=vocabulary_classes('ade847'), vocabulary='ade847', ignore_index=65535)
    SEG_MAP_SUFFIX = '.tif'
    DEFAULT_PREFIX = dict(img_path='images_detectron2/validation',
                          seg_map_path='annotations_detectron2/validation')
    PREPARE_TOOL = 'tools/dataset_converters/prepare_ade20k_847.py'
