# Zero-shot benchmark: ADE20K-150 (2000 val images, 150 classes).
# Prepare it with tools/dataset_converters/prepare_ade20k_150.py (see data/README.md).
_base_ = ['./protocol.py']
benchmark = dict(
    name='a150',
    vocabulary='ade150',
    test_cfg=_base_.benchmark_test_cfg,
    dataloader=dict(
        **_base_.benchmark_loader,
        dataset=dict(
            type='ADE150Dataset', data_root='data/ADEChallengeData2016',
            pipeline=_base_.benchmark_pipeline)),
    evaluator=dict(
        _delete_=True, type='IoUMetric', iou_metrics=['mIoU'], ignore_index=255))
