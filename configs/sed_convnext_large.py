# SED (CLIP ConvNeXt-L, 768 px) trained on COCO-Stuff-171: 80k iterations, total batch 4.
#   tools/dist_train.sh configs/sed_convnext_large.py 4
_base_ = ['./sed_convnext_base.py']
model = dict(
    backbone=dict(
        model_name='convnext_large_d_320',
        # SED's open_clip config has dropout 0.1 in the MLP projection head (open_clip's: 0);
        # drop path 0.1 is in both
        vision_overrides=dict(timm_drop=0.1),
        pretrained='laion2b_s29b_b131k_ft_soup'))
# the head's skip widths (768, 384, 192: res4, res3, res2 of ConvNeXt-L) follow from the backbone
