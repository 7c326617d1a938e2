# Zero-shot benchmark: PASCAL-Context-59 (5105 VOC2010 val images, 59 classes).
# Prepare it with tools/dataset_converters/prepare_pascal_context_59.py (see data/README.md).
_base_ = ['./protocol.py']
benchmark = dict(
    name='pc59',
    vocabulary='pc59',
    test_cfg=_base_.benchmark_test_cfg,
    dataloader=dict(
        **_base_.benchmark_loader,
        dataset=dict(
            type='PC59Dataset', data_root='data/VOCdevkit/VOC2010',
            pipeline=_base_.benchmark_pipeline)),
    evaluator=dict(
        _delete_=True, type='IoUMetric', iou_metrics=['mIoU'], ignore_index=255))
