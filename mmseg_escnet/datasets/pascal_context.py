"""PASCAL-Context-59 and -459 (VOC2010 val, 5105 / 5104 images) as evaluated by CAT-Seg.

Layout (written by ``tools/dataset_converters/prepare_pascal_context_59.py`` / ``_459.py``)::

    data/VOCdevkit/VOC2010/JPEGImages/*.jpg
    data/VOCdevkit/VOC2010/annotations_detectron2/pc59_val/*.png    # uint8 0..58, 255 ignore
    data/VOCdevkit/VOC2010/annotations_detectron2/pc459_val/*.tif   # uint16 0..458, ignore 459
"""
from mmseg.registry import DATASETS

from .benchmark_dataset import BenchmarkDataset, vocabulary_classes


@DATASETS.register_module()
class PC59Dataset(BenchmarkDataset):
    """PASCAL-Context with the 59 frequent classes; background is ignored (255)."""

    METAINFO = dict(classes=vocabulary_classes('pc59'), vocabulary='pc59', ignore_index=255)
    DEFAULT_PREFIX = dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc59_val')
    PREPARE_TOOL = 'tools/dataset_converters/prepare_pascal_context_59.py'


@DATASETS.register_module()
class PC459Dataset(BenchmarkDataset):
    """PASCAL-Context with all 459 classes, 16-bit labels; the ignore value 459 never occurs.

    Load the labels with ``dict(type='LoadSegAnnotations')`` (enforced).
    """

    METAINFO = dict(classes=vocabulary_classes('pc459'), vocabulary='pc459', ignore_index=459)
    SEG_MAP_SUFFIX = '.tif'
    DEFAULT_PREFIX = dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/pc459_val')
    PREPARE_TOOL = 'tools/dataset_converters/prepare_pascal_context_459.py'
