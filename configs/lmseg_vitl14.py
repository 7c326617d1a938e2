# LMSeg (CLIP ViT-L/14@336px, 24 x 24 grid; SAM ViT-B at 1024 px) trained on COCO-Stuff-171.
#   tools/dist_train.sh configs/lmseg_vitl14.py 4
_base_ = ['./lmseg_vitb16.py']
model = dict(
    clip_resolution=336,
    backbone=dict(model_name='ViT-L-14-336', out_indices=(7, 15)),
    fusion=dict(clip_dim=768),
    neck=dict(text_guidance_dim=768, appearance_guidance_dim=768),
    decode_head=dict(clip_width=1024))
