"""Tests of the PASCAL-VOC-20 / -20b preparation tool on a tiny official-format VOC2012 release."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from prep_helpers import read_bytes, read_uint8_label, run_tool
from raw_pascal import make_voc2012_release, save_label_png

from mmseg_escnet.datasets.preparation import voc
from mmseg_escnet.datasets.preparation.common import InvalidInputError


# Raw masks (0 bg, 1..20, 255 border) and the hand-computed outputs.
MIXED = np.array([[0, 1, 2, 3], [10, 19, 20, 255]], np.uint8)
MIXED_20 = [[255, 0, 1, 2], [9, 18, 19, 255]]
MIXED_20B = [[20, 0, 1, 2], [9, 18, 19, 255]]
PALETTE = np.array([[15, 15, 0], [255, 7, 0]], np.uint8)  # person, car: saved as a 'P' PNG
PALETTE_20 = [[14, 14, 255], [255, 6, 255]]
PALETTE_20B = [[14, 14, 20], [255, 6, 20]]
BG_ONLY = np.array([[0, 0, 255], [0, 255, 255]], np.uint8)  # all 255 for -20 only
BG_ONLY_20B = [[20, 20, 255], [20, 255, 255]]
VOID_ONLY = np.full((2, 2), 255, np.uint8)  # all 255 for both: written nowhere
MASKS = {'2007_000032': MIXED, '2007_000033': PALETTE, '2007_000039': BG_ONLY,
         '2007_000042': VOID_ONLY, '2007_000061': MIXED}
VAL = ['2007_000032', '2007_000033', '2007_000039', '2007_000042']  # 2007_000061: train


def outputs(root):
    return {d: read_bytes(osp.join(root, d)) for d in voc.OUT_DIRS}


@pytest.fixture
def release(tmp_path):
    return make_voc2012_release(str(tmp_path / 'raw'), MASKS, VAL, palette_ids=['2007_000033'])


def test_values_layout_and_all_ignore_masks(release):
    result = voc.convert(release)
    assert (result['total'], result['converted'], result['skipped']) == (4, 4, 0)
    assert result['all_ignore'] == {'annotations_detectron2': ['2007_000039', '2007_000042'],
                                    'annotations_detectron2_bg': ['2007_000042']}
    val, val_bg = result['out_dirs']
    assert val == osp.join(release, 'annotations_detectron2', 'val')
    assert val_bg == osp.join(release, 'annotations_detectron2_bg', 'val')
    assert sorted(os.listdir(val)) == ['2007_000032.png', '2007_000033.png']
    assert sorted(os.listdir(val_bg)) == ['2007_000032.png', '2007_000033.png', '2007_000039.png']
    np.testing.assert_array_equal(read_uint8_label(osp.join(val, '2007_000032.png')), MIXED_20)
    np.testing.assert_array_equal(read_uint8_label(osp.join(val_bg, '2007_000032.png')), MIXED_20B)
    # The palette PNG is read as indices (cv2 would see VOC colours).
    np.testing.assert_array_equal(read_uint8_label(osp.join(val, '2007_000033.png')), PALETTE_20)
    np.testing.assert_array_equal(read_uint8_label(osp.join(val_bg, '2007_000033.png')), PALETTE_20B)
    np.testing.assert_array_equal(read_uint8_label(osp.join(val_bg, '2007_000039.png')), BG_ONLY_20B)
    for name, ids in (('annotations_detectron2', '2007_000039\n2007_000042\n'),
                      ('annotations_detectron2_bg', '2007_000042\n')):
        with open(osp.join(release, name, voc.SKIP_LIST)) as f:
            assert f.read() == ids


def test_palette_png_is_not_read_as_colours(tmp_path):
    path = str(tmp_path / 'p.png')
    save_label_png(path, PALETTE, palette=True)
    assert cv2.imread(path, cv2.IMREAD_UNCHANGED).ndim == 3  # what a cv2 reader would get
    np.testing.assert_array_equal(voc.read_index_png(path, 'mask'), PALETTE)


def test_idempotent_interrupted_overwrite(release):
    voc.convert(release)
    first = outputs(release)
    again = voc.convert(release)
    assert (again['converted'], again['skipped']) == (0, 4)  # all-ignore ids count as done
    assert outputs(release) == first
    os.remove(osp.join(release, 'annotations_detectron2_bg', 'val', '2007_000033.png'))
    resumed = voc.convert(release)
    assert resumed['converted'] == 1 and outputs(release) == first
    # A stale output of an all-ignore mask is removed when converting again.
    stale = osp.join(release, 'annotations_detectron2', 'val', '2007_000042.png')
    cv2.imwrite(stale, np.zeros((2, 2), np.uint8))
    redone = voc.convert(release, overwrite=True)
    assert redone['converted'] == 4 and not osp.exists(stale)
    assert outputs(release) == first


def test_two_workers_match_one(release, tmp_path):
    voc.convert(release, str(tmp_path / 'one'), nproc=1)
    voc.convert(release, str(tmp_path / 'two'), nproc=2)
    assert outputs(str(tmp_path / 'one')) == outputs(str(tmp_path / 'two'))
    assert not osp.exists(osp.join(release, 'annotations_detectron2'))


def test_cli(release, tmp_path):
    out = str(tmp_path / 'cli')
    proc = run_tool('tools/dataset_converters/prepare_voc.py', release, '--out-dir', out,
                    '--nproc', '1')
    assert proc.returncode == 0, proc.stderr
    assert 'annotations_detectron2: 2 all-ignore masks not written' in proc.stdout
    np.testing.assert_array_equal(
        read_uint8_label(osp.join(out, 'annotations_detectron2_bg', 'val', '2007_000032.png')), MIXED_20B)


def test_errors(release):
    split = osp.join(release, 'ImageSets', 'Segmentation', 'val.txt')
    with pytest.raises(FileNotFoundError, match='other.txt'):
        voc.convert(release, split_file=split.replace('val.txt', 'other.txt'))
    with pytest.raises(FileNotFoundError, match='SegmentationClass'):
        voc.convert(release, label_dir='SegmentationClass')
    with open(split, 'a') as f:
        f.write('2007_009999\n')
    with pytest.raises(FileNotFoundError, match='2007_009999.png'):
        voc.convert(release)
    with open(split, 'w') as f:
        f.write('2007_000032\n')
    mask = osp.join(release, 'SegmentationClassAug', '2007_000032.png')
    save_label_png(mask, np.array([[0, 21]], np.uint8))  # 21 is not a VOC value
    with pytest.raises(InvalidInputError, match='2007_000032.png'):
        voc.convert(release)
    cv2.imwrite(mask, np.zeros((2, 2, 3), np.uint8))  # an RGB mask
    with pytest.raises(InvalidInputError, match=r"2007_000032.png has PIL mode 'RGB'"):
        voc.convert(release)
    with open(mask, 'wb') as f:
        f.write(b'not a png')
    with pytest.raises(InvalidInputError, match='2007_000032.png'):
        voc.convert(release)
    assert not osp.exists(osp.join(release, 'annotations_detectron2', 'val', '2007_000032.png'))
