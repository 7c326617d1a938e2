"""COCO-Stuff-171 in the layout and label values of CAT-Seg's preparation (docs/benchmarks.md).

Layout (written by ``tools/dataset_converters/prepare_coco_stuff.py``; see data/README.md)::

    data/coco-stuff/images/{train2017,val2017}/*.jpg
    data/coco-stuff/annotations_detectron2/{train2017,val2017}/*.png   # uint8, 0..170, 255 ignore
"""
from mmseg.registry import DATASETS

from .benchmark_dataset import BenchmarkDataset, vocabulary_classes


@DATASETS.register_module()
class COCOStuff171Dataset(BenchmarkDataset):
    """COCO-Stuff with all 171 classes (80 things + 91 stuff), labels 0..170, ignore 255.

    The class names are those of the ``coco_stuff171`` vocabulary (CAT-Seg's ``coco.json``).
    Pass ``data_prefix`` for the split (the default is val2017).
    """

    METAINFO = dict(classes=vocabulary_classes('coco_stuff171'), vocabulary='coco_stuff171',
                    ignore_index=255)
    DEFAULT_PREFIX = dict(img_path='images/val2017', seg_map_path='annotations_detectron2/val2017')
    PREPARE_TOOL = 'tools/dataset_converters/prepare_coco_stuff.py'
