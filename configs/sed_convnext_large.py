# SED (CLIP ConvNeXt-L, 768 px) trained on COCO-Stuff-171: 80k iterations, total batch 4.
#   tools/dist_train.sh configs/sed_convnext_large.py 4
_base_ = ['./sed_convnext_base.py']
model = dict(
    backbone=dict(model_name='convnext_large_d_320', pretrained='laion2b_s29b_b131k_ft_soup'),
    decode_head=dict(decoder_guidance_dims=(768, 384, 192)))  # res4, res3, res2 of ConvNeXt-L
