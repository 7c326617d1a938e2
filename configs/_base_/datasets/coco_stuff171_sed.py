# COCO-Stuff-171 with SED's augmentation (xb534/SED, configs/convnextB_768.yaml): short side 768
# (long side <= 2666) -> random 768 crop -> photometric distortion -> horizontal flip.
_base_ = ['./coco_stuff171.py']
crop_size = (768, 768)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='ResizeShortestEdge', scale=crop_size[0], max_size=2666),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
