"""Tests of the COCO-Stuff-171 preparation tool on a tiny official-format stuffthingmaps release."""
import ast
import os
import os.path as osp

import mmseg
import numpy as np
import pytest
from PIL import Image
from prep_helpers import read_bytes, read_uint8_label, run_tool
from raw_coco_stuff import make_coco_stuff_release

from mmseg_escnet.datasets.preparation import coco_stuff
from mmseg_escnet.datasets.preparation.common import InvalidInputError

MMSEG_CONVERTER = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'dataset_converters',
                           'coco_stuff164k.py')

# Raw stuffthingmap ids (COCO id - 1) and the hand-computed train ids: 11, 25 and 90 do not exist.
RAW = np.array([[0, 10, 11, 12], [24, 25, 26, 90], [91, 181, 255, 0]], np.uint8)
EXPECTED = [[0, 10, 255, 11], [23, 255, 24, 255], [80, 170, 255, 0]]
ALL_VALUES = np.array([list(range(182)) + [255]], np.uint8)  # (1, 183)


@pytest.fixture
def release(tmp_path):
    return make_coco_stuff_release(str(tmp_path / 'raw'), {
        'train2017': {'000000000009': RAW, '000000000025': np.full((2, 3), 168, np.uint8)},
        'val2017': {'000000000139': RAW, '000000000285': ALL_VALUES}})


def mmseg_table():
    """``clsID_to_trID`` of mmseg's ``coco_stuff164k.py``, read as a literal (not imported)."""
    with open(MMSEG_CONVERTER) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == 'clsID_to_trID':
            return ast.literal_eval(node.value)
    raise AssertionError(f'clsID_to_trID not found in {MMSEG_CONVERTER}')


def test_id_table():
    assert len(coco_stuff.CLASS_IDS) == 171 and coco_stuff.CLASS_IDS[-1] == 181
    table = mmseg_table()  # the same mapping as CAT-Seg's COCO_CATEGORIES id -> trainId
    for raw in range(256):
        assert coco_stuff.LUT[raw] == table.get(raw, 255), raw


def test_values_and_layout(release):
    result = coco_stuff.convert(release)
    assert (result['total'], result['converted'], result['skipped']) == (4, 4, 0)
    assert result['out_dirs'] == [osp.join(release, 'annotations_detectron2', s)
                                  for s in ('train2017', 'val2017')]
    train, val = result['out_dirs']
    assert sorted(os.listdir(train)) == ['000000000009.png', '000000000025.png']
    assert sorted(os.listdir(val)) == ['000000000139.png', '000000000285.png']
    np.testing.assert_array_equal(read_uint8_label(osp.join(train, '000000000009.png')), EXPECTED)
    np.testing.assert_array_equal(read_uint8_label(osp.join(train, '000000000025.png')),
                                  np.full((2, 3), 157))
    np.testing.assert_array_equal(read_uint8_label(osp.join(val, '000000000139.png')), EXPECTED)
    every = read_uint8_label(osp.join(val, '000000000285.png'))[0]
    table = mmseg_table()
    assert every.tolist() == [table.get(v, 255) for v in ALL_VALUES[0].tolist()]
    assert sorted(set(every.tolist())) == list(range(171)) + [255]


def test_idempotent_interrupted_overwrite(release):
    coco_stuff.convert(release)
    out = osp.join(release, 'annotations_detectron2')
    first = read_bytes(out)
    again = coco_stuff.convert(release)
    assert (again['converted'], again['skipped']) == (0, 4) and read_bytes(out) == first
    os.remove(osp.join(out, 'val2017', '000000000139.png'))
    resumed = coco_stuff.convert(release)
    assert resumed['converted'] == 1 and resumed['splits']['val2017']['converted'] == 1
    assert read_bytes(out) == first
    assert coco_stuff.convert(release, overwrite=True)['converted'] == 4
    assert read_bytes(out) == first


def test_two_workers_match_one(release, tmp_path):
    coco_stuff.convert(release, str(tmp_path / 'one'), nproc=1)
    coco_stuff.convert(release, str(tmp_path / 'two'), nproc=2)
    assert read_bytes(str(tmp_path / 'one')) == read_bytes(str(tmp_path / 'two'))


def test_cli_one_split(release, tmp_path):
    out = str(tmp_path / 'cli')
    proc = run_tool('tools/dataset_converters/prepare_coco_stuff.py', release, '--out-dir', out,
                    '--splits', 'val2017', '--nproc', '1')
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(osp.join(out, 'annotations_detectron2'))) == ['val2017']
    np.testing.assert_array_equal(
        read_uint8_label(osp.join(out, 'annotations_detectron2', 'val2017', '000000000139.png')), EXPECTED)


def test_errors(release, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'annotations/test2017'):
        coco_stuff.convert(release, splits=['val2017', 'test2017'])
    assert not osp.exists(osp.join(release, 'annotations_detectron2'))  # checked before converting
    empty = make_coco_stuff_release(str(tmp_path / 'empty'), {'val2017': {}})
    with pytest.raises(FileNotFoundError, match='no \\*.png'):
        coco_stuff.convert(empty, splits=['val2017'])
    bad = osp.join(release, 'annotations', 'val2017', '000000000139.png')
    Image.fromarray(np.array([[0, 182]], np.uint8)).save(bad)  # 182 is beyond the 182 ids
    with pytest.raises(InvalidInputError, match='000000000139.png holds values \\[182\\]'):
        coco_stuff.convert(release, splits=['val2017'])
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(bad)
    with pytest.raises(InvalidInputError, match="000000000139.png has PIL mode 'RGB'"):
        coco_stuff.convert(release, splits=['val2017'])
