"""Helpers shared by the preparation tests (not a test module)."""
import os
import os.path as osp

import cv2
import numpy as np


def read_bytes(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, folder)] = f.read()
    return out


def read_uint8_label(path):
    """An output label map, which must be a single-channel uint8 image."""
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert label is not None and label.dtype == np.uint8 and label.ndim == 2, path
    return label
