# Quick start: a tiny CAT-Seg that trains and evaluates on CPU in a few minutes, with no data to prepare.
# The synthetic dataset (5 named classes, 96 x 96 images) is generated under data/synthetic_shapes on
# first use. CLIP is a tiny randomly initialised open_clip ViT (patch 4 -> 24 x 24 grid), fully trained.
#   python tools/train.py configs/catseg_tiny_synthetic.py
#   python tools/test.py configs/catseg_tiny_synthetic.py work_dirs/catseg_tiny_synthetic/iter_600.pth
_base_ = ['./_base_/models/catseg_vitb16.py', './_base_/default_runtime.py']

classes = ['sky', 'grass', 'sand', 'snow', 'brick']
image_size = 96
model = dict(
    data_preprocessor=dict(size=(image_size, image_size)),
    clip_resolution=image_size,
    vocabulary=dict(classes=classes, templates='catseg'),
    backbone=dict(
        model_name=None,
        model_cfg=dict(
            embed_dim=32,
            vision_cfg=dict(image_size=image_size, layers=3, width=64, head_width=32, patch_size=4),
            text_cfg=dict(context_length=16, vocab_size=49408, width=64, heads=2, layers=2)),
        out_indices=(0, 1),
        finetune='full',  # random CLIP: everything learns
        pretrained=None),
    neck=dict(
        text_guidance_dim=32,
        appearance_guidance_dim=32,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        pad_len=0),
    decode_head=dict(
        upsample_dims=(32, 16),
        decoder_guidance_proj_dims=(16, 8),
        decoder_dims=(32, 16),
        hidden_dim=32,
        num_classes=len(classes)))

data_root = 'data/synthetic_shapes'
splits = dict(train=200, val=40)
dataset = dict(type='SyntheticShapesDataset', data_root=data_root, splits=splits, image_size=image_size)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackSegInputs'),
        ]))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs'),
        ]))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=255)
test_evaluator = val_evaluator

max_iters = 600
optim_wrapper = dict(
    type='OptimWrapper',
    # 1e-3 can leave this model on a plateau (about 0.35 BCE, 19-29 mIoU, depending on the float
    # rounding of the machine); 5e-4 trains it reliably
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min=0.0, begin=0, end=max_iters, T_max=max_iters, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
