# Ablation, paper Table 3 (c): pseudo prompts = point + box (the main model, (d), uses point + mask).
_base_ = ['./escnet_vitl14.py']
model = dict(neck=dict(ppg=dict(use_points=True, use_boxes=True, use_masks=False)))
