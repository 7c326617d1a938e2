# CAT-Seg's optimisation recipe (official configs/vitb_384.yaml and
# cat_seg/cat_seg_model.py of cvlab-kaist/CAT-Seg): AdamW 2e-4, CLIP at x0.01, weight decay 1e-4
# (0 for norm layers), full-model gradient clipping at L2 norm 0.01, cosine 1 -> 0 without warm-up,
# 80k iterations at a total batch of 4 (4 GPUs x 1 image).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.01)}, norm_decay_mult=0.0),
    clip_grad=dict(max_norm=0.01, norm_type=2))
param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min=0.0, begin=0, end=80000, T_max=80000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=5000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# The recipe's batch is 4 in total; mmengine scales the lr linearly if enabled for another batch.
auto_scale_lr = dict(enable=False, base_batch_size=4)
