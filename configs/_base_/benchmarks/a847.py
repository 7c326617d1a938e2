# Zero-shot benchmark: ADE20K-847 (2000 val images of ADE20K_2021_17_01, 847 classes).
# Prepare it with tools/dataset_converters/prepare_ade20k_847.py (see data/README.md).
_base_ = ['./protocol.py']
benchmark = dict(
    name='a847',
    vocabulary='ade847',
    test_cfg=_base_.benchmark_test_cfg,
    dataloader=dict(
        **_base_.benchmark_loader,
        dataset=dict(
            type='ADE847Dataset', data_root='data/ADE20K_2021_17_01',
            pipeline=_base_.benchmark_pipeline)),
    evaluator=dict(
        _delete_=True, type='IoUMetric', iou_metrics=['mIoU'], ignore_index=65535))
