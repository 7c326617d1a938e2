"""Tests of the PASCAL-Context-59 / -459 preparation tools on tiny official-format releases."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image
from prep_helpers import finish, read_bytes, start_tool
from raw_pascal import detail_category, detail_image, make_detail_json, make_pc459_release

from mmseg_escnet.datasets.preparation import pascal_context as pc
from mmseg_escnet.datasets.preparation.common import InvalidInputError
from mmseg_escnet.text import Vocabulary

PC459_NAMES = Vocabulary('pc459').names  # CAT-Seg's 459 names, in labels.txt order

# prepare_pascal_context_59.py:9-16 before its np.sort.
OFFICIAL_UNSORTED = [
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162,
    420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72,
    458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115]


def box(shape, rows, cols):
    mask = np.zeros(shape, np.uint8)
    mask[rows, cols] = 1
    return mask


# ----------------------------------------------------------------------------- PC-59 release
S = (4, 6)
# (stem, Detail category id, mask) in file order. Overlaps: the later annotation wins.
ANNOTATIONS = [
    ('2008_000002', 2, box(S, slice(0, 4), slice(0, 3))),     # aeroplane -> 0
    ('2008_000008', 9, box((2, 2), slice(None), slice(None))),  # train image: not converted
    ('2008_000002', 9, box(S, slice(1, 3), slice(2, 5))),     # bag -> 1, over aeroplane
    ('2008_000002', 300, box(S, slice(3, 4), slice(2, 6))),   # not a PC-59 class -> 255
    ('2008_000002', 458, box(S, slice(0, 1), slice(4, 6))),   # wood -> 58 (list counts)
    ('2008_000002', 397, box(S, slice(2, 3), slice(5, 6))),   # table ("diningtable") -> 49
]
EXPECTED_59 = [[0, 0, 0, 255, 58, 58],
               [0, 0, 1, 1, 1, 255],
               [0, 0, 1, 1, 1, 49],
               [0, 0, 255, 255, 255, 255]]
# ----------------------------------------------------------------------------- PC-459 release
LABEL_MAP = np.array([[1, 2, 256, 257], [300, 459, 60, 1]], np.uint16)
RANDOM_MAP = np.random.default_rng(0).integers(1, 460, (5, 7)).astype(np.uint16)


def make_release(root):
    images = [detail_image('2008_000002', *S, 'val'), detail_image('2008_000003', 3, 3, 'val'),
              detail_image('2008_000008', 2, 2, 'train')]
    categories = [detail_category(i, PC459_NAMES[i - 1]) for i in (1, 2, 9, 300, 397, 458)]
    make_detail_json(root, images, ANNOTATIONS, categories,
                     compressed=[True, True, True, True, False, True])
    rng = np.random.default_rng(1)
    return make_pc459_release(
        root, {'2008_000002': LABEL_MAP, '2008_000007': RANDOM_MAP,
               '2008_000008': LABEL_MAP},  # 2008_000008 is not in the list
        ['2008_000002', '2008_000003', '2008_000007'],  # 2008_000003 has no .mat
        PC459_NAMES, label_order=rng.permutation(459))  # labels.txt lines out of order


@pytest.fixture
def release(tmp_path):
    return make_release(str(tmp_path / 'raw'))


def test_pc59_id_table_matches_official_and_vocabularies():
    assert pc.PC59_IDS == tuple(sorted(OFFICIAL_UNSORTED)) and len(set(pc.PC59_IDS)) == 60
    assert pc.PC59_MAPPING[0] == 255 and pc.PC59_MAPPING[2] == 0 and pc.PC59_MAPPING[458] == 58
    pc59 = Vocabulary('pc59').names
    for raw in pc.PC59_IDS[1:]:
        expected = 'diningtable' if raw == 397 else PC459_NAMES[raw - 1]
        assert pc59[pc.PC59_MAPPING[raw]] == expected
    assert pc.LUT_59[1] == pc.LUT_59[300] == pc.LUT_59[459] == 255


def test_pc59_paint_order_values_layout(release):
    result = pc.convert(release, classes=59)
    assert (result['total'], result['converted'], result['skipped']) == (2, 2, 0)
    assert result['empty'] == ['2008_000003']
    assert result['out_dir'] == osp.join(release, 'annotations_detectron2', 'pc59_val')
    assert sorted(os.listdir(result['out_dir'])) == ['2008_000002.png', '2008_000003.png']
    label = cv2.imread(osp.join(result['out_dir'], '2008_000002.png'), cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, EXPECTED_59)
    empty = cv2.imread(osp.join(result['out_dir'], '2008_000003.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(empty, np.full((3, 3), 255))


def test_pc459_values_layout_classes(release):
    result = pc.convert(release, classes=459)
    assert (result['total'], result['converted'], result['skipped']) == (2, 2, 0)
    assert result['missing'] == ['2008_000003']
    out_dir = osp.join(release, 'annotations_detectron2', 'pc459_val')
    assert result['out_dir'] == out_dir
    assert sorted(os.listdir(out_dir)) == ['2008_000002.tif', '2008_000007.tif']
    label = cv2.imread(osp.join(out_dir, '2008_000002.tif'), cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint16
    np.testing.assert_array_equal(label, [[0, 1, 255, 256], [299, 458, 59, 0]])
    with Image.open(osp.join(out_dir, '2008_000007.tif')) as image:  # PIL agrees with cv2
        np.testing.assert_array_equal(np.array(image), RANDOM_MAP.astype(np.int64) - 1)
    with open(result['classes_file']) as f:
        assert f.read().splitlines() == list(PC459_NAMES)
    assert result['classes_file'] == osp.join(release, 'pc459_classes.txt')


@pytest.mark.parametrize('classes', [59, 459])
def test_idempotent_interrupted_overwrite_and_workers(release, tmp_path, classes):
    out = str(tmp_path / 'out')
    pc.convert(release, out, classes=classes)
    first = read_bytes(out)
    again = pc.convert(release, out, classes=classes)
    assert (again['converted'], again['skipped']) == (0, 2) and read_bytes(out) == first
    folder = 'pc59_val' if classes == 59 else 'pc459_val'
    os.remove(osp.join(out, 'annotations_detectron2', folder, os.listdir(
        osp.join(out, 'annotations_detectron2', folder))[0]))
    assert pc.convert(release, out, classes=classes)['converted'] == 1
    assert read_bytes(out) == first
    assert pc.convert(release, out, overwrite=True, classes=classes)['converted'] == 2
    assert read_bytes(out) == first
    pc.convert(release, str(tmp_path / 'two'), nproc=2, classes=classes)
    assert read_bytes(str(tmp_path / 'two')) == first


def test_cli_both_tools(release, tmp_path):
    procs = [start_tool(f'tools/dataset_converters/{tool}.py', release, '--out-dir',
                        str(tmp_path / tool), '--nproc', '1')
             for tool in ('prepare_pascal_context_59', 'prepare_pascal_context_459')]
    run59, run459 = [finish(p) for p in procs]
    (out59, err59), (out459, err459) = (run59.stdout, run59.stderr), (run459.stdout, run459.stderr)
    assert run59.returncode == 0, err59
    assert run459.returncode == 0, err459
    assert '1 val images have no annotation' in out59
    assert "1 listed ids have no .mat and were skipped: ['2008_000003']" in out459
    assert os.listdir(tmp_path / 'prepare_pascal_context_59' / 'annotations_detectron2') == [
        'pc59_val']
    assert osp.isfile(tmp_path / 'prepare_pascal_context_459' / 'pc459_classes.txt')


def test_pc59_errors(release):
    json_path = osp.join(release, 'trainval_merged.json')
    with open(json_path) as f:
        data = json.load(f)
    with pytest.raises(FileNotFoundError, match='elsewhere.json'):
        pc.convert(release, json_file=osp.join(release, 'elsewhere.json'))

    def rewrite(content):
        with open(json_path, 'w') as f:
            f.write(content if isinstance(content, str) else json.dumps(content))

    rewrite('{"images": [')
    with pytest.raises(InvalidInputError, match='trainval_merged.json is not valid JSON'):
        pc.convert(release)
    declared = [c for c in data['categories'] if c['category_id'] != 2]  # 2 no longer declared
    rewrite(dict(data, categories=declared))
    with pytest.raises(InvalidInputError, match='json: annotation 1 .*category_id 2'):
        pc.convert(release)
    rewrite({k: v for k, v in data.items() if k != 'annos_segmentation'})
    with pytest.raises(InvalidInputError, match='trainval_merged.json: expected'):
        pc.convert(release)
    bad = json.loads(json.dumps(data))
    bad['annos_segmentation'][0]['segmentation']['size'] = [5, 6]  # not the image's 4 x 6
    rewrite(bad)
    with pytest.raises(InvalidInputError, match='trainval_merged.json: image 2008_000002'):
        pc.convert(release)
    bad['annos_segmentation'][0]['segmentation'] = dict(size=[4, 6], counts='\x7f\x7f!!')
    rewrite(bad)
    with pytest.raises(InvalidInputError, match='trainval_merged.json: image 2008_000002'):
        pc.convert(release)
    rewrite(dict(data, images=[dict(img, phase='train') for img in data['images']]))
    with pytest.raises(InvalidInputError, match='trainval_merged.json has no image'):
        pc.convert(release)


def test_pc459_errors(release):
    split = osp.join(release, 'pascalcontext_val.txt')
    os.rename(split, split + '.bak')
    with pytest.raises(FileNotFoundError, match='pascalcontext_val.txt'):
        pc.convert(release, classes=459)
    os.rename(split + '.bak', split)
    labels = osp.join(release, 'labels.txt')
    os.rename(labels, labels + '.bak')
    with pytest.raises(FileNotFoundError, match='labels.txt'):
        pc.convert(release, classes=459)
    make_pc459_release(osp.dirname(osp.dirname(release)), {}, None,
                       PC459_NAMES[:458])
    with pytest.raises(InvalidInputError, match='labels.txt has 458 labels'):
        pc.convert(release, classes=459)
    with open(labels, 'a') as f:
        f.write('459 wool\n')
    with pytest.raises(InvalidInputError, match='labels.txt line 459'):
        pc.convert(release, classes=459)
    os.replace(labels + '.bak', labels)
    mat = osp.join(release, 'trainval', '2008_000002.mat')
    for content, message in (({'LabelMap': np.array([[0, 5]], np.uint16)}, 'span 0..5'),
                             ({'LabelMap': np.array([[1, 460]], np.uint16)}, 'span 1..460'),
                             ({'LabelMap': np.array([[1.0, 2.0]])}, 'integer array'),
                             ({'Other': np.ones((2, 2), np.uint16)}, 'no LabelMap')):
        scipy.io.savemat(mat, content)
        with pytest.raises(InvalidInputError, match=f'2008_000002.mat.*{message}'):
            pc.convert(release, classes=459)
    with open(mat, 'wb') as f:
        f.write(b'garbage')
    with pytest.raises(InvalidInputError, match='2008_000002.mat is not a readable'):
        pc.convert(release, classes=459)
    with open(split, 'w') as f:
        f.write('2009_000001\n')
    with pytest.raises(FileNotFoundError, match='none of the 1 ids'):
        pc.convert(release, classes=459)
