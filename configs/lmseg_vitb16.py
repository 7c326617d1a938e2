# LMSeg (CLIP ViT-B/16 at 384 px, SAM ViT-B at 1024 px) trained on COCO-Stuff-171 with CAT-Seg's
# recipe: 80k iterations, total batch 4, AdamW 2e-4 with CLIP at x0.01, SAM's encoder frozen.
# First write the training descriptions with your LLM (docs/lmseg.md):
#   python tools/generate_descriptions.py --vocab coco_stuff171 \
#       --out data/descriptions/coco_stuff171.json --model gpt-4o
#   tools/dist_train.sh configs/lmseg_vitb16.py 4
_base_ = [
    './_base_/models/lmseg_vitb16.py', './_base_/datasets/coco_stuff171.py',
    './_base_/schedules/catseg_80k.py', './_base_/default_runtime.py'
]
# SAM's encoder learns at CLIP's rate if it is unfrozen (model.sam_encoder.frozen=False)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'sam_encoder': dict(lr_mult=0.01)}))
