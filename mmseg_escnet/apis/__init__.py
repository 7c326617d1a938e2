"""Inference API: ``from mmseg_escnet.apis import OpenVocabInferencer``.

Not imported by ``import mmseg_escnet`` (it pulls in mmseg's inferencer and visualiser).
"""
from .image_io import (IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, list_images, read_image,
                       resize_label_map, shrink_to_max_side, to_bgr_uint8, write_label_map)
from .inferencer import OpenVocabInferencer

__all__ = [
    'IMAGE_SUFFIXES', 'MAX_IMAGE_PIXELS', 'OpenVocabInferencer', 'list_images', 'read_image',
    'resize_label_map', 'shrink_to_max_side', 'to_bgr_uint8', 'write_label_map'
]
