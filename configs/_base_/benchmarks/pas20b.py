# Zero-shot benchmark: PASCAL-VOC-20b (VOC2012 val, 20 classes + background). The text vocabulary
# has 59 classes and every prediction >= 20 counts as background, as CAT-Seg's VOCbEvaluator.
# Prepare it with tools/dataset_converters/prepare_voc.py (see data/README.md).
_base_ = ['./protocol.py']
benchmark = dict(
    name='pas20b',
    vocabulary='voc20b',
    test_cfg=_base_.benchmark_test_cfg,
    dataloader=dict(
        **_base_.benchmark_loader,
        dataset=dict(
            type='VOC20bDataset', data_root='data/VOCdevkit/VOC2012',
            pipeline=_base_.benchmark_pipeline)),
    evaluator=dict(
        _delete_=True,
        type='IoUMetricWithBackground',
        background_index=20,
        iou_metrics=['mIoU'],
        ignore_index=255))
