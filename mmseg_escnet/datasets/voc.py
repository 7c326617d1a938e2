"""PASCAL-VOC-20 and VOC-20b (VOC2012 val) as evaluated by CAT-Seg.

Layout (written by ``tools/dataset_converters/prepare_voc.py``)::

    data/VOCdevkit/VOC2012/JPEGImages/*.jpg
    data/VOCdevkit/VOC2012/annotations_detectron2/val/*.png      # uint8 0..19, background 255
    data/VOCdevkit/VOC2012/annotations_detectron2_bg/val/*.png   # uint8 0..20, 20 = background

PAS-20b protocol (CAT-Seg's ``VOCbEvaluator``): the text vocabulary is ``voc20b``, the 20 VOC
classes followed by 39 PASCAL-Context classes; every prediction of class >= 20 counts as
background (20), and 21 classes are scored, with
``dict(type='IoUMetricWithBackground', background_index=20)``.
"""
from mmseg.registry import DATASETS

from .benchmark_dataset import BenchmarkDataset, vocabulary_classes


@DATASETS.register_module()
class VOC20Dataset(BenchmarkDataset):
    """PASCAL-VOC 2012 val with the 20 object classes; background ignored."""

    METAINFO = dict(classes=vocabulary_classes('voc20'), vocabulary='voc20', ignore_index=255)
    DEFAULT_PREFIX = dict(img_path='JPEGImages', seg_map_path='annotations_detectron2/val')
    PREPARE_TOOL = 'tools/dataset_converters/prepare_voc.py'


@DATASETS.register_module()
class VOC20bDataset(BenchmarkDataset):
    """PASCAL-VOC 2012 val with background as class 20 (21 scored classes, 59 text classes)."""

    METAINFO = dict(classes=vocabulary_classes('voc20') + ('background', ), vocabulary='voc20b',
                    ignore_index=255, background_index=20)
    DEFAULT_PREFIX = dict(img_path='JPEGImages', seg_map_path='annotations_detectron2_bg/val')
    PREPARE_TOOL = 'tools/dataset_converters/prepare_voc.py'
