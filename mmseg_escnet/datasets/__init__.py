"""Datasets: the zero-shot benchmarks in CAT-Seg's layout, a synthetic quick-start set, loaders."""
from .ade20k import ADE150Dataset, ADE847Dataset
from .benchmark_dataset import BenchmarkDataset
from .coco_stuff171 import COCOStuff171Dataset
from .custom_folder import CustomFolderDataset
from .folder_check import FolderProblemsError, check_segmentation_folder, scan_folder
from .pascal_context import PC59Dataset, PC459Dataset
from .synthetic_shapes import SyntheticShapesDataset, ensure_synthetic_shapes
from .transforms import LoadSegAnnotations
from .voc import VOC20bDataset, VOC20Dataset

__all__ = [
    'ADE150Dataset', 'ADE847Dataset', 'BenchmarkDataset', 'COCOStuff171Dataset',
    'CustomFolderDataset', 'FolderProblemsError', 'check_segmentation_folder', 'scan_folder',
    'PC59Dataset',
    'PC459Dataset', 'SyntheticShapesDataset', 'ensure_synthetic_shapes', 'LoadSegAnnotations',
    'VOC20Dataset', 'VOC20bDataset'
]
