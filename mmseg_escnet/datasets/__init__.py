"""Datasets."""
from .coco_stuff171 import COCOStuff171Dataset
from .synthetic_shapes import SyntheticShapesDataset, ensure_synthetic_shapes

__all__ = ['COCOStuff171Dataset', 'SyntheticShapesDataset', 'ensure_synthetic_shapes']
