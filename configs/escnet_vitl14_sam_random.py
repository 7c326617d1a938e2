# Ablation, paper Table 2 (b): SAM blocks with the SAM architecture but randomly initialised.
_base_ = ['./escnet_vitl14.py']
model = dict(neck=dict(sam_init='random'))
