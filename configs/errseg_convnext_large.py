# ERR-Seg (CLIP ConvNeXt-L, 640 px) trained on COCO-Stuff-171: 80k iterations, total batch 4
# (lchen1019/ERR-Seg, configs/convnextL_640.yaml; docs/errseg.md). Trained at 640 px; its
# benchmark configs test at 768 px, as the official eval.sh. The official training uses AMP: add
# --amp on CUDA.
#   tools/dist_train.sh configs/errseg_convnext_large.py 4 --amp
_base_ = ['./errseg_convnext_base.py']
model = dict(
    backbone=dict(
        model_name='convnext_large_d_320',
        # ERR-Seg's open_clip fork (as SED's) has dropout 0.1 in the MLP projection head
        # (open_clip's config: 0); drop path 0.1 is in both
        vision_overrides=dict(timm_drop=0.1),
        pretrained='laion2b_s29b_b131k_ft_soup'))
# embed_dim (768), the neck's image_guidance_dims (1536, 768, ...) and the head's
# decoder_guidance_dims (768, 384, 192: os16, os8, os4 of ConvNeXt-L) follow from the backbone
