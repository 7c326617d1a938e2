# ESC-Net (CLIP ViT-L/14@336px, 24 x 24 grid) trained on COCO-Stuff-171: 80k iterations, total batch 4.
# Table 2 (c) and Table 3 (d) of the paper.
#   tools/dist_train.sh configs/escnet_vitl14.py 4
_base_ = ['./escnet_vitb16.py']
model = dict(
    clip_resolution=336,
    backbone=dict(model_name='ViT-L-14-336', out_indices=(7, 15)))
# the neck's and head's CLIP widths (768, 1024) follow from the backbone (models/segmentors/model_sizes.py)
