# SED (CLIP ConvNeXt-B, 768 px) trained on COCO-Stuff-171: 80k iterations, total batch 4.
#   tools/dist_train.sh configs/sed_convnext_base.py 4
_base_ = [
    './_base_/models/sed_convnext_base.py', './_base_/datasets/coco_stuff171_sed.py',
    './_base_/schedules/sed_80k.py', './_base_/default_runtime.py'
]
