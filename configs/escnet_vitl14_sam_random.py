# Ablation, paper Table 2 (b): SAM blocks with the SAM architecture but randomly initialised. Nothing
# pretrained is left to preserve in them, so they (and the prompt encoder) learn at the base rate, 2e-4,
# like every other new layer (the 0.01 multiplier of escnet_80k.py is for the pretrained SAM weights).
_base_ = ['./escnet_vitl14.py']
model = dict(neck=dict(sam_init='random'))
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'neck.prompt_encoder': dict(lr_mult=1.0),
        'neck.sam_blocks': dict(lr_mult=1.0),
    }))
