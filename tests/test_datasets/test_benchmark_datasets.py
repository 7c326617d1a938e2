"""Raw release -> converter -> dataset class -> IoU: exact labels, ids above 255, ignore values,
the PAS-20b background mapping, and clear errors."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.evaluation import IoUMetric
from PIL import Image
from raw_ade20k import make_ade150_release, make_ade_full_release, placeholder_objectnames
from raw_pascal import make_pc459_release, make_voc2012_release

import mmseg_escnet  # noqa: F401
from mmseg_escnet.datasets import (ADE150Dataset, ADE847Dataset, PC459Dataset, VOC20bDataset,
                                   VOC20Dataset)
from mmseg_escnet.datasets.preparation import ade20k_150, ade20k_847, pascal_context, voc
from mmseg_escnet.evaluation import IoUMetricWithBackground

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadSegAnnotations'),
            dict(type='PackSegInputs')]


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope('mmseg')


def _labels(dataset):
    """{image stem: (H, W) int64 ground truth} through the dataset's pipeline."""
    out = {}
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        stem = osp.splitext(osp.basename(sample.img_path))[0]
        out[stem] = sample.gt_sem_seg.data[0].numpy()
    return out


def _score(metric, dataset, predictions):
    """Run an mmseg metric on {stem: (H, W) prediction} against the dataset's labels."""
    metric.dataset_meta = dataset.metainfo
    for stem, gt in _labels(dataset).items():
        sample = dict(pred_sem_seg=dict(data=torch.from_numpy(predictions[stem])[None]),
                      gt_sem_seg=dict(data=torch.from_numpy(gt)[None]))
        metric.process({}, [sample])
    return metric.compute_metrics(metric.results)


def test_ade847_uint16_labels_survive_and_score(tmp_path):
    ids = ade20k_847.full_ade_ids()
    # full-ADE ids of train ids 0, 300 and 846; 0 = unlabelled; id 5 is not among the 847
    assert 5 not in ids
    classes = np.zeros((40, 60), dtype=np.int64)
    classes[:20, :30] = ids[0]
    classes[:20, 30:] = ids[300]
    classes[20:, :30] = ids[846]
    classes[20:, 30:45] = 5
    objectnames = placeholder_objectnames(max(ids))
    make_ade_full_release(str(tmp_path), [dict(filename='ADE_val_00000001.jpg', classes=classes)],
                          objectnames)
    root = osp.join(str(tmp_path), 'ADE20K_2021_17_01')
    ade20k_847.convert(root)
    dataset = ADE847Dataset(data_root=root, pipeline=PIPELINE)
    assert len(dataset) == 1 and len(dataset.metainfo['classes']) == 847
    gt = _labels(dataset)['ADE_val_00000001']
    expected = np.full((40, 60), 65535)
    expected[:20, :30], expected[:20, 30:], expected[20:, :30] = 0, 300, 846
    assert np.array_equal(gt, expected)
    # predict 300 where 846 is: IoU(300) = 600 / (600 + 600), IoU(846) = 0, IoU(0) = 100
    pred = np.where(gt == 65535, 5, gt)
    pred[20:, :30] = 300
    metrics = _score(IoUMetric(ignore_index=65535), dataset, dict(ADE_val_00000001=pred))
    assert metrics['mIoU'] == pytest.approx((100 + 50 + 0) / 3, abs=0.01)


def test_16bit_datasets_refuse_the_8bit_loader_and_class_subsets(tmp_path):
    label_dir = tmp_path / 'annotations_detectron2' / 'validation'
    image_dir = tmp_path / 'images_detectron2' / 'validation'
    label_dir.mkdir(parents=True)
    image_dir.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 700, dtype=np.uint16)).save(label_dir / 'a.tif')
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(image_dir / 'a.jpg')
    with pytest.raises(ValueError, match="LoadSegAnnotations.*casts them to uint8"):
        ADE847Dataset(data_root=str(tmp_path),
                      pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])
    with pytest.raises(ValueError, match='does not support class subsets'):
        ADE847Dataset(data_root=str(tmp_path), pipeline=PIPELINE,
                      metainfo=dict(classes=('wall', 'sky')))
    assert _labels(ADE847Dataset(data_root=str(tmp_path), pipeline=PIPELINE))['a'].max() == 700


def test_pc459_ids_above_255(tmp_path):
    names = [f'class {i}' for i in range(1, 460)]
    label = np.array([[1, 256, 300, 459]] * 3, dtype=np.uint16)
    base = make_pc459_release(str(tmp_path), {'2008_000002': label}, ['2008_000002'], names)
    os.makedirs(osp.join(base, 'JPEGImages'), exist_ok=True)
    Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8)).save(
        osp.join(base, 'JPEGImages', '2008_000002.jpg'))
    pascal_context.convert(base, classes=459)
    dataset = PC459Dataset(data_root=base, pipeline=PIPELINE)
    assert dataset.metainfo['ignore_index'] == 459
    assert np.array_equal(_labels(dataset)['2008_000002'], label.astype(np.int64) - 1)


def test_ade150_shift_and_ignore(tmp_path):
    label = np.array([[0, 1, 150, 37]] * 2, dtype=np.uint8)
    base = make_ade150_release(str(tmp_path), {'ADE_val_00000001': label})
    ade20k_150.convert(base)
    gt = _labels(ADE150Dataset(data_root=base, pipeline=PIPELINE))['ADE_val_00000001']
    assert np.array_equal(gt, np.array([[255, 0, 149, 36]] * 2))


def _voc_release(tmp_path):
    mask = np.zeros((6, 8), dtype=np.uint8)   # background
    mask[:3, :4] = 15                          # person -> 14
    mask[5, :] = 255                           # void border
    empty = np.full((6, 8), 255, dtype=np.uint8)  # nothing to score: not written for PAS-20
    base = make_voc2012_release(str(tmp_path), {'2007_000032': mask, '2007_000033': empty},
                                ['2007_000032', '2007_000033'], palette_ids=['2007_000032'])
    voc.convert(base)
    return base, mask


def test_voc20_and_voc20b_labels(tmp_path):
    base, mask = _voc_release(tmp_path)
    voc20 = _labels(VOC20Dataset(data_root=base, pipeline=PIPELINE))
    voc20b = _labels(VOC20bDataset(data_root=base, pipeline=PIPELINE))
    assert list(voc20) == ['2007_000032'] and list(voc20b) == ['2007_000032']
    expected = np.where(mask == 15, 14, 255)
    assert np.array_equal(voc20['2007_000032'], expected)
    expected_b = np.where(mask == 0, 20, expected)
    assert np.array_equal(voc20b['2007_000032'], expected_b)


def test_voc20b_predictions_past_20_count_as_background(tmp_path):
    base, mask = _voc_release(tmp_path)
    dataset = VOC20bDataset(data_root=base, pipeline=PIPELINE)
    gt = _labels(dataset)['2007_000032']
    # 59-class vocabulary: background pixels predicted as PASCAL-Context classes 20..58
    pred = np.where(gt == 20, 20 + np.arange(gt.size).reshape(gt.shape) % 39, gt)
    pred = np.where(gt == 255, 3, pred)
    metric = IoUMetricWithBackground(background_index=20, ignore_index=255)
    assert _score(metric, dataset, {'2007_000032': pred})['mIoU'] == 100.0
    # mmseg's plain metric would count those as wrong (and out of range)
    assert _score(IoUMetric(ignore_index=255), dataset, {'2007_000032': pred})['mIoU'] < 100.0
    with pytest.raises(ValueError, match='background_index=19 needs a dataset with 20 classes.*got 21'):
        _score(IoUMetricWithBackground(background_index=19), dataset, {'2007_000032': pred})


def test_missing_data_names_the_preparation_tool(tmp_path):
    with pytest.raises(FileNotFoundError, match='prepare_voc.py'):
        VOC20Dataset(data_root=str(tmp_path), pipeline=PIPELINE)
    labels = tmp_path / 'annotations_detectron2' / 'val'
    labels.mkdir(parents=True)
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(labels / 'x.png')
    with pytest.raises(FileNotFoundError, match='x.png has no image .*JPEGImages/x.jpg'):
        VOC20Dataset(data_root=str(tmp_path), pipeline=PIPELINE)


def test_loader_refuses_colour_labels(tmp_path):
    labels = tmp_path / 'annotations_detectron2' / 'val'
    images = tmp_path / 'JPEGImages'
    labels.mkdir(parents=True)
    images.mkdir()
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(labels / 'x.png')
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(images / 'x.jpg')
    dataset = VOC20Dataset(data_root=str(tmp_path), pipeline=PIPELINE)
    with pytest.raises(ValueError, match='x.png must be a single-channel uint8/uint16 image'):
        dataset[0]
