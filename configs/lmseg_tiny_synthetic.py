# Quick start for LMSeg on CPU: the tiny CLIP and synthetic data of catseg_tiny_synthetic.py, a
# tiny randomly initialised SAM image encoder (96 px, patch 4 -> the same 24 x 24 grid), the
# per-pixel fusion, and the shipped attribute descriptions of the five synthetic classes
# (mmseg_escnet/text/descriptions/synthetic_shapes.json). The text context is CLIP's 77 tokens,
# as descriptions are full sentences.
#   python tools/train.py configs/lmseg_tiny_synthetic.py
#   python tools/test.py configs/lmseg_tiny_synthetic.py work_dirs/lmseg_tiny_synthetic/iter_600.pth
_base_ = ['./catseg_tiny_synthetic.py']
model = dict(
    type='LMSegEncoderDecoder',
    vocabulary=dict(templates=dict(_delete_=True, type='descriptions', file='synthetic_shapes',
                                   reduce='mean',
                                   class_name_template='A photo of a {} in the scene')),
    backbone=dict(model_cfg=dict(text_cfg=dict(context_length=77))),
    sam_encoder=dict(
        type='SAMImageEncoder',
        arch=dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1, )),
        img_size=96,
        patch_size=4,
        window_size=6,
        out_chans=32,
        checkpoint=None,
        frozen=False),  # random SAM: it learns too
    fusion=dict(type='SAMCLIPFusion', sam_dim=32, mode='pixel', hidden_dim=16,
                init_weight=0.5,
                zero_init_adapter=False))  # random CLIP: no cost volume to protect; SAM gets a gradient
