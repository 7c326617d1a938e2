# LMSeg (CLIP ViT-L/14@336px, 24 x 24 grid; SAM ViT-B at 1024 px) trained on COCO-Stuff-171.
#   tools/dist_train.sh configs/lmseg_vitl14.py 4
_base_ = ['./lmseg_vitb16.py']
model = dict(
    clip_resolution=336,
    backbone=dict(model_name='ViT-L-14-336', out_indices=(7, 15)))
# the fusion's, neck's and head's CLIP widths (768, 1024) follow from the backbone
# (models/segmentors/model_sizes.py)
