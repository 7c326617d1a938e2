# ERR-Seg (CLIP ConvNeXt-B, 640 px) trained on COCO-Stuff-171: 80k iterations, total batch 4
# (lchen1019/ERR-Seg, configs/convnextB_640.yaml; arXiv:2501.17642; docs/errseg.md). The official
# training uses AMP: add --amp on CUDA.
#   tools/dist_train.sh configs/errseg_convnext_base.py 4 --amp
_base_ = [
    './_base_/models/errseg_convnext_base.py', './_base_/datasets/coco_stuff171_errseg.py',
    './_base_/schedules/errseg_80k.py', './_base_/default_runtime.py'
]
