# COCO-Stuff-171 with ERR-Seg's augmentation (lchen1019/ERR-Seg, configs/convnextB_640.yaml, the
# mask_former_semantic mapper): short side 640 (long side <= 1333) -> random 640 crop (no category
# constraint) -> photometric distortion (COLOR_AUG_SSD) -> horizontal flip -> pad to 640 x 640 with
# image value 128 and label 255 (SIZE_DIVISIBILITY 640). The padding happens here, on the 0-255
# image before normalisation, as official (the data preprocessor would pad after normalisation);
# it only matters for images with an aspect ratio above 1333 / 640, whose crop is smaller than 640.
# Validation resizes as the official test mapper (short side 800, long side <= 1333) before the
# segmentor squashes the image to its CLIP resolution.
_base_ = ['./coco_stuff171.py']
crop_size = (640, 640)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='ResizeShortestEdge', scale=crop_size[0], max_size=1333),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=1.0),
    dict(type='PhotoMetricDistortion'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=crop_size, pad_val=dict(img=128, seg=255)),  # mmcv's Pad: (w, h)
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=800, max_size=1333),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
