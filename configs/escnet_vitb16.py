# ESC-Net (CLIP ViT-B/16, 384 px) trained on COCO-Stuff-171: 80k iterations, total batch 4.
#   tools/dist_train.sh configs/escnet_vitb16.py 4
_base_ = [
    './_base_/models/escnet_vitb16.py', './_base_/datasets/coco_stuff171.py',
    './_base_/schedules/escnet_80k.py', './_base_/default_runtime.py'
]
