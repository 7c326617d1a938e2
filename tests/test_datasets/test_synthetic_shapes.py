"""The synthetic dataset is deterministic, valid, and refuses to clobber other folders."""
import hashlib
import os

import cv2
import numpy as np
import pytest

from mmseg_escnet.datasets import SyntheticShapesDataset, ensure_synthetic_shapes
from mmseg_escnet.datasets.synthetic_shapes import CLASSES


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(os.path.join(dirpath, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_generation_is_deterministic_and_valid(tmp_path):
    splits = dict(train=6, val=3)
    a = ensure_synthetic_shapes(str(tmp_path / 'a'), splits=splits, image_size=48)
    b = ensure_synthetic_shapes(str(tmp_path / 'b'), splits=splits, image_size=48)
    assert _digest(a) == _digest(b)
    labels = [cv2.imread(str(tmp_path / 'a' / 'ann_dir' / 'train' / f'{i:05d}.png'), cv2.IMREAD_UNCHANGED)
              for i in range(6)]
    image = cv2.imread(str(tmp_path / 'a' / 'img_dir' / 'train' / '00000.png'))
    assert image.shape == (48, 48, 3) and labels[0].shape == (48, 48)
    values = np.unique(np.stack(labels))
    assert values.min() >= 0 and values.max() < len(CLASSES) and len(values) > 2
    # a second call with the same parameters reuses the files
    assert ensure_synthetic_shapes(a, splits=splits, image_size=48) == a


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / 'other').mkdir()
    with pytest.raises(FileExistsError, match='not a synthetic-shapes dataset'):
        ensure_synthetic_shapes(str(tmp_path / 'other'), splits=dict(train=1))
    ensure_synthetic_shapes(str(tmp_path / 'c'), splits=dict(train=1), image_size=32)
    with pytest.raises(FileExistsError):  # same folder, other parameters
        ensure_synthetic_shapes(str(tmp_path / 'c'), splits=dict(train=2), image_size=32)


def test_dataset_class(tmp_path):
    ds = SyntheticShapesDataset(str(tmp_path / 'd'), splits=dict(train=4, val=2), image_size=32,
                                data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'))
    assert len(ds) == 2
    assert ds.metainfo['classes'] == CLASSES
    assert ds[0]['seg_map_path'].endswith('ann_dir/val/00000.png')
