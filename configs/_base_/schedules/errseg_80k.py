# ERR-Seg's optimisation recipe (lchen1019/ERR-Seg, configs/config.yaml, convnext*_640.yaml,
# train_net.py build_optimizer, detectron2's defaults): AdamW 2e-4, weight decay 1e-4, every CLIP
# parameter at x0.01 (CLIP_MULTIPLIER, whose substring 'clip_model' is our 'backbone'), no
# gradient clipping, 1000 linear warm-up iterations from x0.001 then cosine to 0 at 80k
# (WarmupCosineLR), 80k iterations at a total batch of 4 (4 GPUs x 1 image: train_dataloader's
# batch_size=1 per GPU, tools/dist_train.sh CONFIG 4), validation once at the end.
# Weight decay follows detectron2's rule: 0 for norm layers (nn.LayerNorm / GroupNorm and their
# subclasses, CLIP's included; only trainable parameters are optimised, and under
# finetune='weight' CLIP's norms are frozen anyway), 1e-4 for everything else.
# The official training uses AMP (SOLVER.AMP.ENABLED): on CUDA add --amp to tools/train.py or
# tools/dist_train.sh (AmpOptimWrapper with a dynamic loss scale).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4),
    constructor='NormAwareOptimWrapperConstructor',
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.01)}, norm_decay_mult=0.0))
max_iters = 80000
warmup_iters = 1000
# detectron2's WarmupCosineLR: a linear warm-up from x0.001 over 1000 iterations, then the cosine
# (1 + cos(pi t / 80k)) / 2 to 0. The two schedulers below run together (mmengine multiplies their
# factors): lr(t) = 2e-4 * warmup(t) * cosine(t), warmup(t) = 0.001 + 0.999 t / 1000 for t < 1000,
# else 1. detectron2's warm-up ramps to the cosine's value at t = 1000 (x0.99904) instead, a
# difference of at most 0.1 % during the warm-up only. LinearLR reaches its end factor after
# end - begin - 1 steps, hence end=1001.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, end_factor=1.0, begin=0, end=warmup_iters + 1,
         by_epoch=False),
    dict(type='CosineAnnealingLR', eta_min=0.0, begin=0, end=max_iters, T_max=max_iters,
         by_epoch=False),
]
# EVAL_PERIOD 80000: validate once, at the end
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# The recipe's batch is 4 in total; mmengine scales the lr linearly if enabled for another batch.
auto_scale_lr = dict(enable=False, base_batch_size=4)
