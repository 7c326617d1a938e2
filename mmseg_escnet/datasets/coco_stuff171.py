"""COCO-Stuff-171 in the layout and label values of CAT-Seg's preparation (catseg_reference.md §8).

Expected layout (see data/README.md)::

    <data_root>/images/{train2017,val2017}/*.jpg
    <data_root>/annotations_detectron2/{train2017,val2017}/*.png   # uint8, 0..170, 255 = ignore
"""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from ..models.text import Vocabulary


@DATASETS.register_module()
class COCOStuff171Dataset(BaseSegDataset):
    """COCO-Stuff with all 171 classes (80 things + 91 stuff), labels 0..170, ignore 255.

    The class names are those of the ``coco_stuff171`` vocabulary (CAT-Seg's ``coco.json``).
    """

    METAINFO = dict(classes=tuple(Vocabulary('coco_stuff171').names))

    def __init__(self, **kwargs) -> None:
        super().__init__(img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False, **kwargs)
