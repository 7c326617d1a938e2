"""Tests of the ADE20K-150 / ADE20K-847 preparation tools on tiny official-format releases."""
import io
import os
import os.path as osp
import pickle
import runpy
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from prep_helpers import read_bytes, run_tool
from raw_ade20k import (encode_seg, make_ade150_release, make_ade_full_release,
                        placeholder_objectnames)

from mmseg_escnet.datasets.preparation import ade20k_150, ade20k_847
from mmseg_escnet.datasets.preparation.common import InvalidInputError

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Full-ADE ids of the official table used below, with their trainIds.
WALL, ALTAR, ADDING_MACHINE, PIER, SHANTIES = 2978, 3108, 3148, 1857, 2315
NOT_EVALUATED = 2  # a full-ADE class that is not one of the 847
NAMED = {WALL: 'wall', ALTAR: "altar, communion table, lord's table",
         ADDING_MACHINE: 'adding machine, totalizer, totaliser', PIER: 'pier',
         SHANTIES: 'shanties'}


# ----------------------------------------------------------------------------- ADE20K-150


def ade150_labels():
    label = np.array([[0, 1, 2, 150], [37, 0, 149, 1]], dtype=np.uint8)
    return {'ADE_val_00000001': label, 'ADE_val_00000002': np.full((3, 5), 12, np.uint8)}


def test_ade150_conversion_idempotence_overwrite(tmp_path):
    raw = make_ade150_release(str(tmp_path), ade150_labels())
    result = ade20k_150.convert(raw)
    assert result == dict(total=2, converted=2, skipped=0,
                          out_dir=osp.join(raw, 'annotations_detectron2', 'validation'))
    out_dir = result['out_dir']
    assert sorted(os.listdir(out_dir)) == ['ADE_val_00000001.png', 'ADE_val_00000002.png']
    out = cv2.imread(osp.join(out_dir, 'ADE_val_00000001.png'), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[255, 0, 1, 149], [36, 255, 148, 0]])
    out2 = cv2.imread(osp.join(out_dir, 'ADE_val_00000002.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(out2, np.full((3, 5), 11))
    # images stay where they are
    assert sorted(os.listdir(osp.join(raw, 'images', 'validation'))) == [
        'ADE_val_00000001.jpg', 'ADE_val_00000002.jpg']

    before = read_bytes(out_dir)
    assert ade20k_150.convert(raw)['converted'] == 0
    assert read_bytes(out_dir) == before
    os.remove(osp.join(out_dir, 'ADE_val_00000002.png'))  # interrupted run
    assert ade20k_150.convert(raw)['converted'] == 1
    assert read_bytes(out_dir) == before
    assert ade20k_150.convert(raw, overwrite=True)['converted'] == 2
    assert read_bytes(out_dir) == before


def test_ade150_cli_script(tmp_path, monkeypatch):
    raw = make_ade150_release(str(tmp_path), ade150_labels())
    out = str(tmp_path / 'out')
    monkeypatch.setattr(sys, 'argv', ['prepare_ade20k_150.py', raw, '--out-dir', out,
                                      '--nproc', '1'])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(osp.join(REPO, 'tools', 'dataset_converters', 'prepare_ade20k_150.py'),
                       run_name='__main__')
    assert exit_info.value.code == 0
    assert sorted(os.listdir(osp.join(out, 'annotations_detectron2', 'validation'))) == [
        'ADE_val_00000001.png', 'ADE_val_00000002.png']
    assert not osp.exists(osp.join(raw, 'annotations_detectron2'))


def test_ade150_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='annotations'):
        ade20k_150.convert(str(tmp_path / 'nothing'))

    raw = make_ade150_release(str(tmp_path / 'rgb'), ade150_labels())
    bad = osp.join(raw, 'annotations', 'validation', 'ADE_val_00000002.png')
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(bad)
    with pytest.raises(InvalidInputError, match='ADE_val_00000002.png.*single-channel uint8'):
        ade20k_150.convert(raw)

    raw = make_ade150_release(str(tmp_path / 'range'),
                              {'ADE_val_00000003': np.array([[0, 151]], np.uint8)})
    with pytest.raises(InvalidInputError, match='ADE_val_00000003.png holds value 151'):
        ade20k_150.convert(raw)


# ----------------------------------------------------------------------------- ADE20K-847


def test_full_ade_id_table():
    ids = ade20k_847.full_ade_ids()
    assert len(ids) == len(set(ids)) == 847
    assert (ids[0], ids[255], ids[256], ids[300], ids[846]) == (WALL, PIER, SHANTIES, ALTAR,
                                                                ADDING_MACHINE)
    assert NOT_EVALUATED not in ids
    lut = ade20k_847.full_ade_lut()
    assert lut.dtype == np.uint16 and lut.shape == (25 * 256 + 256, )
    assert (lut[WALL], lut[ALTAR], lut[ADDING_MACHINE], lut[0], lut[NOT_EVALUATED]) == (
        0, 300, 846, 65535, 65535)


@pytest.mark.parametrize('hw,expected', [((40, 60), None), ((512, 700), None),
                                         ((520, 600), (512, 591)), ((600, 520), (591, 512)),
                                         ((513, 513), (512, 512)), ((1000, 513), (998, 512))])
def test_short_side_rule(hw, expected):
    assert ade20k_847.target_size(*hw) == expected


def small_classes():
    """(40, 60) map: expected trainIds in comments."""
    c = np.zeros((40, 60), np.int64)
    c[:20, :30] = WALL  # 0
    c[:20, 30:] = ALTAR  # 300
    c[20:, :20] = ADDING_MACHINE  # 846
    c[20:, 20:40] = 0  # unlabelled -> 65535
    c[20:, 40:50] = NOT_EVALUATED  # -> 65535
    c[20:, 50:] = PIER  # 255
    c[39, 50:] = SHANTIES  # 256
    return c


def large_classes():
    """(520, 600) map in quadrants, resized to (512, 591) by the tool."""
    c = np.zeros((520, 600), np.int64)
    c[:260, :300] = WALL
    c[:260, 300:] = ADDING_MACHINE
    c[260:, 300:] = SHANTIES
    return c


def make_full(root, **kwargs):
    images = [
        dict(filename='ADE_val_00000001.jpg', scene='bathroom', classes=small_classes(),
             r_offset=7),
        dict(filename='ADE_train_00000001.jpg', scene='street', classes=small_classes(),
             files=False),  # training image: listed in the index, never read
        dict(filename='ADE_val_00000002.jpg', scene='street', classes=large_classes()),
    ]
    names = kwargs.pop('objectnames', placeholder_objectnames(3160, NAMED))
    return make_ade_full_release(str(root), images, names, **kwargs), names


def test_ade847_conversion(tmp_path):
    raw, names = make_full(tmp_path)
    result = ade20k_847.convert(raw)
    assert (result['total'], result['converted'], result['skipped']) == (2, 2, 0)

    img_dir = osp.join(raw, 'images_detectron2', 'validation')
    lab_dir = osp.join(raw, 'annotations_detectron2', 'validation')
    assert sorted(os.listdir(img_dir)) == ['ADE_val_00000001.jpg', 'ADE_val_00000002.jpg']
    assert sorted(os.listdir(lab_dir)) == ['ADE_val_00000001.tif', 'ADE_val_00000002.tif']

    small = cv2.imread(osp.join(lab_dir, 'ADE_val_00000001.tif'), cv2.IMREAD_UNCHANGED)
    assert small.dtype == np.uint16 and small.shape == (40, 60)
    expected = np.full((40, 60), 65535, np.uint16)
    expected[:20, :30] = 0
    expected[:20, 30:] = 300
    expected[20:, :20] = 846
    expected[20:, 50:] = 255
    expected[39, 50:] = 256
    np.testing.assert_array_equal(small, expected)
    assert cv2.imread(osp.join(img_dir, 'ADE_val_00000001.jpg')).shape == (40, 60, 3)

    # 520 x 600 -> short side 512: (512, round(600 / 520 * 512) = 591); nearest label keeps
    # source rows < 260 for output rows 0..255 and source columns < 300 for columns 0..295.
    large = cv2.imread(osp.join(lab_dir, 'ADE_val_00000002.tif'), cv2.IMREAD_UNCHANGED)
    expected = np.full((512, 591), 65535, np.uint16)
    expected[:256, :296] = 0
    expected[:256, 296:] = 846
    expected[256:, 296:] = 256
    np.testing.assert_array_equal(large, expected)
    # the image: PIL decode, cv2 INTER_LINEAR resize, PIL JPEG save (official calls)
    raw_img = np.asarray(Image.open(osp.join(raw, 'images', 'ADE', 'validation', 'street',
                                             'ADE_val_00000002.jpg')))
    buffer = io.BytesIO()
    Image.fromarray(cv2.resize(raw_img, (591, 512), interpolation=cv2.INTER_LINEAR)).save(
        buffer, format='JPEG')
    with open(osp.join(img_dir, 'ADE_val_00000002.jpg'), 'rb') as f:
        assert f.read() == buffer.getvalue()

    # class names: objectnames[id - 1] of the release, in trainId order
    with open(osp.join(raw, 'ade847_classes.txt'), encoding='utf-8') as f:
        written = f.read().splitlines()
    assert written == [names[i - 1] for i in ade20k_847.full_ade_ids()] == result['classes']
    assert (written[0], written[300], written[846]) == (NAMED[WALL], NAMED[ALTAR],
                                                        NAMED[ADDING_MACHINE])
    assert written[1] == 'object 312'  # placeholder of the tiny index

    # idempotence, interrupted run, overwrite, nproc=2
    outputs = ['images_detectron2', 'annotations_detectron2', 'ade847_classes.txt']
    before = {k: v for k, v in read_bytes(raw).items() if k.split(os.sep)[0] in outputs}
    assert len(before) == 5
    assert ade20k_847.convert(raw)['converted'] == 0
    assert {k: v for k, v in read_bytes(raw).items() if k in before} == before
    os.remove(osp.join(lab_dir, 'ADE_val_00000002.tif'))
    assert ade20k_847.convert(raw)['converted'] == 1
    assert {k: v for k, v in read_bytes(raw).items() if k in before} == before
    assert ade20k_847.convert(raw, overwrite=True)['converted'] == 2
    assert {k: v for k, v in read_bytes(raw).items() if k in before} == before
    other = str(tmp_path / 'nproc2')
    assert ade20k_847.convert(raw, other, nproc=2)['converted'] == 2
    assert read_bytes(other) == before


def test_ade847_cli(tmp_path):
    raw, _ = make_full(tmp_path / 'raw')
    out = str(tmp_path / 'out')
    proc = run_tool('tools/dataset_converters/prepare_ade20k_847.py', raw, '--out-dir', out,
                    '--nproc', '1')
    assert proc.returncode == 0, proc.stderr
    assert 'ADE20K-847: 2 converted' in proc.stdout
    assert sorted(os.listdir(osp.join(out, 'annotations_detectron2', 'validation'))) == [
        'ADE_val_00000001.tif', 'ADE_val_00000002.tif']
    assert osp.isfile(osp.join(out, 'ade847_classes.txt'))
    assert not osp.exists(osp.join(raw, 'images_detectron2'))


def test_ade847_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='ADE20K_2021_17_01.*directory at .*nothing'):
        ade20k_847.convert(str(tmp_path / 'nothing'))
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(FileNotFoundError, match='index_ade20k.pkl'):
        ade20k_847.convert(str(tmp_path / 'empty'))

    raw, _ = make_full(tmp_path / 'garbage', write_files=False)
    with open(osp.join(raw, 'index_ade20k.pkl'), 'wb') as f:
        f.write(b'not a pickle')
    with pytest.raises(InvalidInputError, match='index_ade20k.pkl is not a readable pickle'):
        ade20k_847.convert(raw)

    with open(osp.join(raw, 'index_ade20k.pkl'), 'wb') as f:
        pickle.dump(dict(filename=[], folder=[]), f)
    with pytest.raises(InvalidInputError, match='index_ade20k.pkl must be a dict.*objectnames'):
        ade20k_847.convert(raw)

    # an index whose objectnames stop before the ids 3101..3156 of the table
    raw, _ = make_full(tmp_path / 'short', objectnames=placeholder_objectnames(3100),
                       write_files=False)
    with pytest.raises(InvalidInputError, match=r'index_ade20k.pkl.*3100 entries.*\[3144'):
        ade20k_847.convert(raw)
    assert not osp.exists(osp.join(raw, 'ade847_classes.txt'))


def test_ade847_file_errors(tmp_path):
    raw, _ = make_full(tmp_path / 'missing')
    seg = osp.join(raw, 'images', 'ADE', 'validation', 'street', 'ADE_val_00000002_seg.png')
    os.remove(seg)
    with pytest.raises(FileNotFoundError, match='ADE_val_00000002_seg.png'):
        ade20k_847.convert(raw)

    raw, _ = make_full(tmp_path / 'gray')
    seg = osp.join(raw, 'images', 'ADE', 'validation', 'bathroom', 'ADE_val_00000001_seg.png')
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(seg)
    with pytest.raises(InvalidInputError, match='ADE_val_00000001_seg.png must be an 8-bit RGB'):
        ade20k_847.convert(raw)

    Image.fromarray(encode_seg(np.zeros((41, 60), np.int64))).save(seg)
    with pytest.raises(InvalidInputError, match='ADE_val_00000001_seg.png has size'):
        ade20k_847.convert(raw)
    assert not osp.exists(osp.join(raw, 'annotations_detectron2', 'validation',
                                   'ADE_val_00000001.tif'))


# ------------------------------------------------------------- ADE20K-847: safe unpickling


class CreatesFile:
    """Unpickling it would create ``self.path`` (the side effect a tampered index could have)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def realistic_index(names):
    """An index with the value types of the official one: object arrays of strings, numeric
    arrays of several dtypes, numpy scalars, nested dicts and lists."""
    filenames = np.array(['ADE_val_00000001.jpg', 'ADE_train_00000001.jpg'], dtype=object)
    return dict(
        filename=filenames,
        folder=np.array(['ADE20K_2021_17_01/images/ADE/validation/bathroom',
                         'ADE20K_2021_17_01/images/ADE/training/street'], dtype=object),
        scene=np.array(['/bathroom', '/street'], dtype=object),
        objectnames=np.array(names, dtype=object),
        objectPresence=np.zeros((len(names), 2), dtype=np.int16),
        objectIsPart=np.zeros((len(names), 2), dtype=np.uint8),
        objectcounts=np.arange(len(names), dtype=np.int64),
        proportionClassIsPart=np.linspace(0, 1, len(names)),
        wordnet_found=np.ones(len(names), dtype=bool),
        wordnet_level1=np.array([['a', 'b']] * 3, dtype='<U4'),
        num_images=np.int64(2), mean_area=np.float32(0.5), flag=np.bool_(True),
        description=dict(filename='array of length N', sizes=[(1, 2), {3, 4}, 1.5 + 2j]),
    )


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_ade847_realistic_index_loads(tmp_path, protocol):
    names = placeholder_objectnames(3160, NAMED)
    index = realistic_index(names)
    path = str(tmp_path / 'index_ade20k.pkl')
    with open(path, 'wb') as f:
        pickle.dump(index, f, protocol=protocol)
    loaded = ade20k_847.load_index(path)
    assert sorted(loaded) == sorted(index)
    for key, value in index.items():
        if isinstance(value, np.ndarray):
            assert loaded[key].dtype == value.dtype
            np.testing.assert_array_equal(loaded[key], value)
        else:
            assert loaded[key] == value and type(loaded[key]) is type(value)
    assert ade20k_847.class_names(loaded, path)[0] == NAMED[WALL]


def test_ade847_malicious_index_refused(tmp_path):
    raw, _ = make_full(tmp_path / 'evil', write_files=False)
    index_path = osp.join(raw, 'index_ade20k.pkl')
    marker = str(tmp_path / 'pwned')
    payloads = [
        CreatesFile(marker),  # a callable of an allowed-looking module (os)
        dict(filename=[], folder=[], objectnames=[CreatesFile(marker)]),  # nested
        np.array([CreatesFile(marker)], dtype=object),  # inside an object array
    ]
    for payload in payloads:
        with open(index_path, 'wb') as f:
            pickle.dump(payload, f)
        with pytest.raises(InvalidInputError,
                           match=r'index_ade20k.pkl is not a plain data pickle.*refused global '
                                 r'(posix|os|nt)\.mkdir.*tampered'):
            ade20k_847.convert(raw)
        assert not osp.exists(marker)
    # the classic payload: os.system through a hand-written pickle (GLOBAL + REDUCE)
    with open(index_path, 'wb') as f:
        f.write(b"cos\nsystem\n(S'touch " + marker.encode() + b"'\ntR.")
    with pytest.raises(InvalidInputError, match=r'refused global os\.system'):
        ade20k_847.load_index(index_path)
    # builtins that run code are refused as well
    with open(index_path, 'wb') as f:
        f.write(b"cbuiltins\neval\n(S'1'\ntR.")
    with pytest.raises(InvalidInputError, match=r'refused global builtins\.eval'):
        ade20k_847.load_index(index_path)
    assert not osp.exists(marker)


def test_ade847_malicious_index_cli(tmp_path):
    raw, _ = make_full(tmp_path / 'raw', write_files=False)
    marker = str(tmp_path / 'pwned')
    with open(osp.join(raw, 'index_ade20k.pkl'), 'wb') as f:
        pickle.dump(CreatesFile(marker), f)
    proc = run_tool('tools/dataset_converters/prepare_ade20k_847.py', raw)
    assert proc.returncode != 0
    assert 'index_ade20k.pkl is not a plain data pickle' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not osp.exists(marker)
