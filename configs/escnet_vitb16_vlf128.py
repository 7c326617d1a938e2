# ESC-Net ViT-B/16 with 128-wide VLFs (see escnet_vitl14_vlf128.py).
_base_ = ['./escnet_vitb16.py']
model = dict(
    neck=dict(hidden_dim=128, appearance_guidance_dim=128, text_guidance_dim=128),
    decode_head=dict(hidden_dim=128))
