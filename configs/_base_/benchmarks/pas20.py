# Zero-shot benchmark: PASCAL-VOC-20 (VOC2012 val, 20 classes, background ignored).
# Prepare it with tools/dataset_converters/prepare_voc.py (see data/README.md).
_base_ = ['./protocol.py']
benchmark = dict(
    name='pas20',
    vocabulary='voc20',
    test_cfg=_base_.benchmark_test_cfg,
    dataloader=dict(
        **_base_.benchmark_loader,
        dataset=dict(
            type='VOC20Dataset', data_root='data/VOCdevkit/VOC2012',
            pipeline=_base_.benchmark_pipeline)),
    evaluator=dict(
        _delete_=True, type='IoUMetric', iou_metrics=['mIoU'], ignore_index=255))
