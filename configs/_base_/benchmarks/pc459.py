# Zero-shot benchmark: PASCAL-Context-459 (5104 VOC2010 val images, 459 classes).
# Prepare it with tools/dataset_converters/prepare_pascal_context_459.py (see data/README.md).
_base_ = ['./protocol.py']
benchmark = dict(
    name='pc459',
    vocabulary='pc459',
    test_cfg=_base_.benchmark_test_cfg,
    dataloader=dict(
        **_base_.benchmark_loader,
        dataset=dict(
            type='PC459Dataset', data_root='data/VOCdevkit/VOC2010',
            pipeline=_base_.benchmark_pipeline)),
    evaluator=dict(
        _delete_=True, type='IoUMetric', iou_metrics=['mIoU'], ignore_index=459))
