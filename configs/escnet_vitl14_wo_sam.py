# Ablation, paper Table 2 (a): without SAM blocks (and so without PPG): the VLF is guided by the unrefined,
# projected CLIP features.
_base_ = ['./escnet_vitl14.py']
model = dict(neck=dict(use_sam=False))
