# Runtime shared by every config: registries, hooks, logging, visualisation.
default_scope = 'mmseg'
# mmseg_escnet registers the models; importing ...register_checkpoint_loaders makes MMEngine read
# checkpoints with our safe, verified loaders (zoo://NAME, verified URLs), also in mmseg's own
# tools (docs/checkpoints.md). Remove it to keep MMEngine's loaders.
custom_imports = dict(
    imports=['mmseg_escnet', 'mmseg_escnet.engine.register_checkpoint_loaders'],
    allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/train.py switches to gloo when there is no CUDA
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
# True: a checkpoint that does not fit the model is refused (CheckpointFitHook); False: MMEngine's
# non-strict loading of what fits, for fine-tuning from another model.
load_from_strict = True
resume = False
# True: evaluate although the test vocabulary names other classes than the dataset (same number).
allow_vocabulary_mismatch = False
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # atomic saves, old checkpoints deleted last: a kill during a save keeps the previous one
    checkpoint=dict(type='SafeCheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# Refuse to evaluate when the test vocabulary and the dataset's classes differ, and to load a
# checkpoint made for another model.
custom_hooks = [dict(type='VocabularyCheckHook'), dict(type='CheckpointFitHook')]
