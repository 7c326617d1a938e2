# ESC-Net ViT-L/14 with 128-wide VLFs: the cost volume, the VLF guidance and the decoder input at
# CAT-Seg's width (128) instead of the SAM width (256) of escnet_vitl14.py. About a quarter of the
# VLFs' compute, closer to the GFLOPs of the paper's Table 4, but about 10M parameters short of
# its 451.3M (docs/escnet.md, "Compute against Table 4").
_base_ = ['./escnet_vitl14.py']
model = dict(
    neck=dict(hidden_dim=128, appearance_guidance_dim=128, text_guidance_dim=128),
    decode_head=dict(hidden_dim=128))
