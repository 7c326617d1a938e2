# Ablation, paper Table 3 (a): pseudo prompts = point (the main model, (d), uses point + mask).
_base_ = ['./escnet_vitl14.py']
model = dict(neck=dict(ppg=dict(use_points=True, use_boxes=False, use_masks=False)))
