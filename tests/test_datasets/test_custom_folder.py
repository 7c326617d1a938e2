"""CustomFolderDataset: a user's folder in both layouts, and its one-shot folder check."""
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS
from mmseg.structures import SegDataSample
from PIL import Image

from mmseg_escnet.datasets import (CustomFolderDataset, FolderProblemsError,
                                   check_segmentation_folder, scan_folder)
from mmseg_escnet.engine import VocabularyCheckHook
from mmseg_escnet.text import Vocabulary

CLASSES = 'sky\ngrass, lawn\nsand\n'
LOAD = [dict(type='LoadAnnotations')]


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmseg')  # 'LoadAnnotations' is mmseg's


def _image(path, width=8, height=8, exif_orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs['exif'] = exif.tobytes()
    Image.fromarray(rgb).save(path, **kwargs)


def _mask(path, values, width=8, height=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.resize(np.asarray(values, np.uint8), (height, width))
    Image.fromarray(array).save(path)
    return array


def _classes(root, text=CLASSES, name='classes.txt'):
    path = root / name
    path.write_text(text)
    return str(path)


def mmseg_folder(root, split='val', stems=('b', 'a', 'c')):
    """img_dir/<split>/*.jpg and ann_dir/<split>/*.png holding classes 0..2 and 255."""
    for k, stem in enumerate(stems):
        _image(root / 'img_dir' / split / f'{stem}.jpg')
        _mask(root / 'ann_dir' / split / f'{stem}.png', [k % 3, 255, 0, 1])
    return _classes(root)


def flat_folder(root, stems=('b', 'a', 'c'), img_suffix='.png', seg_map_suffix='_mask.png'):
    for k, stem in enumerate(stems):
        _image(root / f'{stem}{img_suffix}', 12, 10)
        _mask(root / f'{stem}{seg_map_suffix}', [k % 3, 2], 12, 10)
    return _classes(root)


def _problems(match=None, **kwargs):
    with pytest.raises(FolderProblemsError, match=match) as info:
        CustomFolderDataset(**kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def _snapshot(root):
    return {os.path.relpath(os.path.join(d, n), root): os.stat(os.path.join(d, n)).st_mtime_ns
            for d, dirs, files in os.walk(root) for n in files + dirs}


def test_mmseg_layout_samples_sorted_and_metainfo(tmp_path):
    classes = mmseg_folder(tmp_path)
    mmseg_folder(tmp_path, split='train', stems=('z', ))
    ds = CustomFolderDataset(data_root=str(tmp_path), classes_file=classes)
    assert [os.path.basename(d['img_path']) for d in ds] == ['a.jpg', 'b.jpg', 'c.jpg']
    assert [os.path.relpath(d['seg_map_path'], tmp_path) for d in ds] == [
        'ann_dir/val/a.png', 'ann_dir/val/b.png', 'ann_dir/val/c.png']
    meta = ds.metainfo
    assert meta['classes'] == ('sky', 'grass', 'sand')
    assert meta['vocabulary'] == classes and meta['ignore_index'] == 255
    assert ds.label_map is None
    train = DATASETS.build(dict(type='CustomFolderDataset', data_root=str(tmp_path),
                                classes_file=classes, split='train'))
    assert [os.path.basename(d['img_path']) for d in train] == ['z.jpg']


def test_flat_layout_pairs_by_suffix(tmp_path):
    classes = flat_folder(tmp_path)  # a.png <-> a_mask.png: the longer suffix wins
    ds = CustomFolderDataset(data_root=str(tmp_path), classes_file=classes, layout='flat',
                             img_suffix='.png', seg_map_suffix='_mask.png')
    assert [(os.path.basename(d['img_path']), os.path.basename(d['seg_map_path']))
            for d in ds] == [('a.png', 'a_mask.png'), ('b.png', 'b_mask.png'),
                             ('c.png', 'c_mask.png')]
    # the other way round: images '_rgb.png', masks '.png'
    other = tmp_path / 'other'
    flat_folder(other, stems=('x', 'y'), img_suffix='_rgb.png', seg_map_suffix='.png')
    ds = CustomFolderDataset(data_root=str(other), classes_file=classes, layout='flat',
                             img_suffix='_rgb.png', seg_map_suffix='.png')
    assert [os.path.basename(d['seg_map_path']) for d in ds] == ['x.png', 'y.png']
    with pytest.raises(ValueError, match='different suffixes'):
        CustomFolderDataset(data_root=str(other), classes_file=classes, layout='flat',
                            img_suffix='.png', seg_map_suffix='.png')


def test_hidden_files_and_subfolders(tmp_path):
    classes = mmseg_folder(tmp_path)
    (tmp_path / 'img_dir' / 'val' / '._a.jpg').write_bytes(b'AppleDouble')
    _image(tmp_path / 'img_dir' / 'val' / '.ipynb_checkpoints' / 'a.jpg')
    _image(tmp_path / 'img_dir' / 'val' / 'sub' / 'd.jpg')
    _mask(tmp_path / 'ann_dir' / 'val' / 'sub' / 'd.png', [1])
    ds = CustomFolderDataset(data_root=str(tmp_path), classes_file=classes)
    assert [os.path.relpath(d['img_path'], tmp_path / 'img_dir' / 'val') for d in ds] == [
        'a.jpg', 'b.jpg', 'c.jpg', os.path.join('sub', 'd.jpg')]
    assert sorted(scan_folder(str(tmp_path / 'img_dir' / 'val'), str(tmp_path / 'ann_dir' / 'val'))
                  .paired_stems()) == ['a', 'b', 'c', 'sub/d']


def test_ann_file_selects_and_checks_only_its_samples(tmp_path):
    classes = flat_folder(tmp_path, stems=('a', 'b', 'c', 'd'), img_suffix='.jpg')
    _mask(tmp_path / 'd_mask.png', [9], 12, 10)  # broken, but not listed
    (tmp_path / 'splits').mkdir()
    (tmp_path / 'splits' / 'val.txt').write_text('c\na.jpg\n\n')
    kwargs = dict(data_root=str(tmp_path), classes_file=classes, layout='flat',
                  seg_map_suffix='_mask.png')
    ds = CustomFolderDataset(ann_file='splits/val.txt', **kwargs)
    assert [os.path.basename(d['img_path']) for d in ds] == ['c.jpg', 'a.jpg']
    (tmp_path / 'splits' / 'bad.txt').write_text('a\nnope\nd\n')
    message = _problems(ann_file='splits/bad.txt', **kwargs)
    assert re.search(r'1 sample listed in splits/bad.txt but with neither image nor mask:\n'
                     r'\s+nope', message)
    assert 'd_mask.png: 9' in message and 'b_mask' not in message
    _problems(r'sample list \(ann_file\) not found: splits/missing.txt',
              ann_file='splits/missing.txt', **kwargs)


def test_ignore_and_reduce_zero_label_through_load_annotations(tmp_path):
    classes = _classes(tmp_path)
    _image(tmp_path / 'img_dir' / 'val' / 'a.jpg')
    raw = _mask(tmp_path / 'ann_dir' / 'val' / 'a.png', [0, 1, 2, 3, 255])
    ds = CustomFolderDataset(data_root=str(tmp_path), classes_file=classes,
                             reduce_zero_label=True, pipeline=LOAD)
    loaded = ds[0]['gt_seg_map']
    expected = np.select([raw == 0, raw == 255], [255, 255], raw.astype(int) - 1)
    np.testing.assert_array_equal(loaded, expected)
    assert set(np.unique(loaded)) == {0, 1, 2, 255}
    # without reduce_zero_label, 3 is outside the classes 0..2
    message = _problems(data_root=str(tmp_path), classes_file=classes, pipeline=LOAD)
    assert 'set reduce_zero_label=True' in message and 'ann_dir/val/a.png: 3' in message
    # another ignore value: 255 is then outside the classes, 10 is ignored
    raw = _mask(tmp_path / 'ann_dir' / 'val' / 'a.png', [0, 1, 2, 10])
    ds = CustomFolderDataset(data_root=str(tmp_path), classes_file=classes, ignore_index=10,
                             pipeline=LOAD)
    np.testing.assert_array_equal(ds[0]['gt_seg_map'], raw)
    assert ds.metainfo['ignore_index'] == 10
    _mask(tmp_path / 'ann_dir' / 'val' / 'a.png', [0, 255])
    _problems(r'(?s)outside the 3 classes in 1 mask: 255 \(valid: 0..2 = classes, 10 = '
              r'ignore_index\).*255 is not ignored here', data_root=str(tmp_path),
              classes_file=classes, ignore_index=10)


def test_invalid_ignore_settings(tmp_path):
    classes = mmseg_folder(tmp_path)
    with pytest.raises(ValueError, match=r"ignore_index=0 is a class id \(class 0 is 'sky'.*"
                       r'set reduce_zero_label=True'):
        CustomFolderDataset(data_root=str(tmp_path), classes_file=classes, ignore_index=0)
    with pytest.raises(ValueError, match='ignore_index must be 255'):
        CustomFolderDataset(data_root=str(tmp_path), classes_file=classes, ignore_index=0,
                            reduce_zero_label=True)
    with pytest.raises(ValueError, match="layout must be one of"):
        CustomFolderDataset(data_root=str(tmp_path), classes_file=classes, layout='coco')
    many = _classes(tmp_path, ''.join(f'class {k}\n' for k in range(300)), 'many.txt')
    _problems("need 16-bit masks: load them with dict\\(type='LoadSegAnnotations'\\)",
              data_root=str(tmp_path), classes_file=many, ignore_index=65535, pipeline=LOAD)
    # 16-bit masks with ids above 255 pass the check and load with LoadSegAnnotations
    big = tmp_path / 'big'
    _image(big / 'img_dir' / 'val' / 'a.jpg')
    label = np.resize(np.array([0, 299, 65535, 256], np.uint16), (8, 8))
    (big / 'ann_dir' / 'val').mkdir(parents=True)
    Image.fromarray(label).save(big / 'ann_dir' / 'val' / 'a.png')
    ds = CustomFolderDataset(data_root=str(big), classes_file=many, ignore_index=65535,
                             pipeline=[dict(type='LoadSegAnnotations')])
    np.testing.assert_array_equal(ds[0]['gt_seg_map'], label)
    label[0, 0] = 300
    Image.fromarray(label).save(big / 'ann_dir' / 'val' / 'a.png')
    _problems(r'outside the 300 classes in 1 mask: 300 \(valid: 0..299 = classes, 65535',
              data_root=str(big), classes_file=many, ignore_index=65535)


@pytest.mark.parametrize('case', [
    'image without mask', 'mask without image', 'values', 'unreadable image', 'unreadable mask',
    'size', 'colour mask', 'grey as rgb', 'exif'])
def test_each_problem_has_its_clear_error(tmp_path, case):
    classes = mmseg_folder(tmp_path)
    img_dir, ann_dir = tmp_path / 'img_dir' / 'val', tmp_path / 'ann_dir' / 'val'
    if case == 'image without mask':
        _image(img_dir / 'lonely.jpg')
        match = (r'1 image without a mask \(expected ann_dir/val/<name>.png for each\):\n'
                 r'\s+img_dir/val/lonely.jpg')
    elif case == 'mask without image':
        _mask(ann_dir / 'orphan.png', [0])
        match = r'1 mask without an image .*:\n\s+ann_dir/val/orphan.png'
    elif case == 'values':
        _mask(ann_dir / 'a.png', [0, 7, 9, 255])
        _mask(ann_dir / 'b.png', [3])
        match = (r'label values outside the 3 classes in 2 masks: 3, 7, 9 \(valid: 0..2 = '
                 r'classes, 255 = ignore_index\):\n\s+ann_dir/val/a.png: 7, 9\n'
                 r'\s+ann_dir/val/b.png: 3')
    elif case == 'unreadable image':
        (img_dir / 'b.jpg').write_bytes(b'not a jpeg')
        match = r'1 unreadable file .*:\n\s+img_dir/val/b.jpg \(UnidentifiedImageError'
    elif case == 'unreadable mask':
        (ann_dir / 'b.png').write_bytes(b'')
        match = r'1 unreadable file .*:\n\s+ann_dir/val/b.png'
    elif case == 'size':
        _mask(ann_dir / 'c.png', [0], 12, 10)
        match = (r'1 mask whose size differs from its image \(width x height\):\n'
                 r'\s+ann_dir/val/c.png: 12x10, image img_dir/val/c.jpg: 8x8')
    elif case == 'colour mask':
        Image.fromarray(np.full((8, 8, 3), (200, 10, 10), np.uint8)).save(ann_dir / 'a.png')
        match = r'one class id per pixel.*\n\s+ann_dir/val/a.png: mode RGB, colour-coded: ' \
                r'convert each colour to its class id'
    elif case == 'grey as rgb':
        Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(ann_dir / 'a.png')
        match = r'ann_dir/val/a.png: mode RGB, grey values stored as colour: save one channel'
    else:  # the loaders rotate a JPEG with EXIF orientation 6: 12x8 is loaded as 8x12
        _image(img_dir / 'a.jpg', 12, 8, exif_orientation=6)
        _mask(ann_dir / 'a.png', [0], 12, 8)
        _image(img_dir / 'b.jpg', 12, 8, exif_orientation=6)
        _mask(ann_dir / 'b.png', [0], 8, 12)  # drawn on the rotated image: fine
        match = (r'1 mask whose size.*\n\s+ann_dir/val/a.png: 12x8, image img_dir/val/a.jpg: '
                 r'8x12 after its EXIF orientation 6\n')
    message = _problems(match, data_root=str(tmp_path), classes_file=classes)
    assert message.startswith(f"CustomFolderDataset: 1 problem in {tmp_path} (layout='mmseg', "
                              f'classes_file={classes}):\n1. ')
    assert message.endswith('\nnote: nothing was loaded: fix these problems (check_folder=False '
                            'skips the folder check, at your own risk)')


def test_folder_and_classes_file_problems(tmp_path):
    classes = _classes(tmp_path)
    _problems(r'empty dataset: no \*.jpg images and no \*.png masks in '
              rf'{re.escape(str(tmp_path))}', data_root=str(tmp_path), classes_file=classes,
              layout='flat')
    (tmp_path / 'img_dir' / 'train').mkdir(parents=True)
    message = _problems(data_root=str(tmp_path), classes_file=classes)
    assert 'folder not found: img_dir/val (img_dir holds train)' in message
    assert 'folder not found: ann_dir/val (ann_dir' not in message  # no ann_dir at all
    assert 'folder not found: ann_dir/val' in message
    _image(tmp_path / 'photo.jpg')
    message = _problems(data_root=str(tmp_path), classes_file=classes)
    assert re.search(r"\nnote: .* holds images \(photo.jpg\): for images and masks in one "
                     r"folder use layout='flat'", message)
    message = _problems(data_root=str(tmp_path), classes_file=classes, layout='flat',
                        seg_map_suffix='_mask.png')
    assert re.search(r'1 image without a mask \(expected <name>_mask.png beside each\):\n'
                     r'\s+photo.jpg', message)
    assert re.search(r"\nnote: .* has img_dir/: for img_dir/<split> and ann_dir/<split> use "
                     r"layout='mmseg'", message)
    # classes files: empty, malformed, missing; listed with the folder's problems
    mmseg_folder(tmp_path / 'ok')
    for text, match in [('# nothing\n\n', 'is empty: it holds no class names'),
                        ('sky\ngrass, , lawn\n', 'empty synonym'),
                        ('sky\nsky\n', 'duplicate class')]:
        bad = _classes(tmp_path, text, 'bad.txt')
        _problems(rf'1 problem.*\n1. classes file: .*{match}', data_root=str(tmp_path / 'ok'),
                  classes_file=bad)
    _image(tmp_path / 'ok' / 'img_dir' / 'val' / 'lonely.jpg')
    message = _problems(data_root=str(tmp_path / 'ok'), classes_file=str(tmp_path / 'no.txt'))
    assert message.count('\n1. ') == 1 and '\n2. 1 image without a mask' in message
    assert 'vocabulary file not found' in message
    with pytest.raises(FolderProblemsError, match='classes file'):  # even without the check
        CustomFolderDataset(data_root=str(tmp_path / 'ok'), classes_file=bad, check_folder=False)


def test_many_problems_in_one_error_with_capped_lists(tmp_path):
    classes = mmseg_folder(tmp_path)
    img_dir, ann_dir = tmp_path / 'img_dir' / 'val', tmp_path / 'ann_dir' / 'val'
    for k in range(15):
        _image(img_dir / f'lonely{k:02d}.jpg')
    _mask(ann_dir / 'orphan.png', [0])
    _mask(ann_dir / 'a.png', [5])
    _mask(ann_dir / 'b.png', [0], 4, 4)
    (img_dir / 'c.jpg').write_bytes(b'')
    message = _problems(data_root=str(tmp_path), classes_file=classes)
    assert message.startswith('CustomFolderDataset: 5 problems in ')
    groups = re.findall(r'^\d\. (.*)$', message, re.M)
    assert [g.split(' (')[0].split(':')[0] for g in groups] == [
        '15 images without a mask', '1 mask without an image', '1 unreadable file',
        '1 mask whose size differs from its image', 'label values outside the 3 classes in 1 mask']
    assert re.search(r'\n\s+img_dir/val/lonely09.jpg\n\s+and 5 more\n', message)
    assert 'lonely10' not in message


def test_nothing_is_written_into_the_folder(tmp_path):
    data = tmp_path / 'data'
    classes = mmseg_folder(data)
    before = _snapshot(data)
    CustomFolderDataset(data_root=str(data), classes_file=classes, pipeline=LOAD)[0]
    assert _snapshot(data) == before
    _mask(data / 'ann_dir' / 'val' / 'a.png', [9])
    _image(data / 'img_dir' / 'val' / 'lonely.jpg')
    before = _snapshot(data)
    _problems(data_root=str(data), classes_file=classes)
    CustomFolderDataset(data_root=str(data), classes_file=classes, check_folder=False)
    assert _snapshot(data) == before


def test_check_folder_false_skips_the_check(tmp_path):
    classes = mmseg_folder(tmp_path)
    _mask(tmp_path / 'ann_dir' / 'val' / 'a.png', [9], 12, 10)
    (tmp_path / 'ann_dir' / 'val' / 'b.png').write_bytes(b'')
    _image(tmp_path / 'img_dir' / 'val' / 'lonely.jpg')
    ds = CustomFolderDataset(data_root=str(tmp_path), classes_file=classes, check_folder=False)
    assert [os.path.basename(d['img_path']) for d in ds] == ['a.jpg', 'b.jpg', 'c.jpg',
                                                            'lonely.jpg']
    assert ds[3]['seg_map_path'].endswith('ann_dir/val/lonely.png')  # as mmseg pairs


def test_check_function_on_its_own(tmp_path):
    mmseg_folder(tmp_path)
    scan = scan_folder(str(tmp_path / 'img_dir' / 'val'), str(tmp_path / 'ann_dir' / 'val'))
    pairs = [(scan.images[s], scan.masks[s]) for s in scan.paired_stems()]
    assert check_segmentation_folder(pairs, 3) == []
    assert check_segmentation_folder(pairs, 3, reduce_zero_label=True) == []  # 0..2, 255 valid
    problems = check_segmentation_folder(pairs, 1, root=str(tmp_path))
    assert len(problems) == 1 and problems[0].startswith(
        'label values outside the 1 classes in 3 masks: 1, 2')
    with pytest.warns(UserWarning, match='binary masks saved as 0/255'):
        _mask(tmp_path / 'm.png', [0, 255])
        check_segmentation_folder([(pairs[0][0], str(tmp_path / 'm.png'))], 2)


def test_iou_metric_and_vocabulary_check_hook_accept_it(tmp_path):
    classes = mmseg_folder(tmp_path)
    ds = CustomFolderDataset(data_root=str(tmp_path), classes_file=classes, pipeline=LOAD,
                             test_mode=True)
    embedder = SimpleNamespace(vocabulary=Vocabulary(ds.metainfo['vocabulary']))
    metric = IoUMetric(ignore_index=ds.metainfo['ignore_index'])
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=ds),
                           evaluator=SimpleNamespace(metrics=[metric]))
    runner = SimpleNamespace(model=SimpleNamespace(test_text=embedder, train_text=embedder),
                             test_loop=loop, val_loop=loop, train_loop=loop)
    hook = VocabularyCheckHook()
    hook.before_test(runner)
    hook.before_val(runner)
    hook.before_train(runner)
    # a perfect prediction scores 100 mIoU over the classes present
    metric.dataset_meta = ds.metainfo
    for k in range(len(ds)):
        gt = torch.from_numpy(ds[k]['gt_seg_map'].astype(np.int64))[None]
        sample = SegDataSample(gt_sem_seg=PixelData(data=gt),
                               pred_sem_seg=PixelData(data=gt.clone()))
        metric.process([], [sample.to_dict()])
    assert metric.compute_metrics(metric.results)['mIoU'] == 100.0
    # the hook refuses another vocabulary or ignore value
    embedder.vocabulary = Vocabulary(['sky', 'sand', 'grass'])
    with pytest.raises(ValueError, match=f'model.test_vocabulary={re.escape(classes)}'):
        hook.before_test(runner)
    embedder.vocabulary = Vocabulary(classes)
    loop.evaluator.metrics = [IoUMetric(ignore_index=0)]
    with pytest.raises(ValueError, match='ignore_index=0 but CustomFolderDataset labels ignore '
                                         '255'):
        hook.before_val(runner)
