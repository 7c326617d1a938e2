# Quick start for SED on CPU: the synthetic data of catseg_tiny_synthetic.py, with a tiny randomly
# initialised open_clip CLIP whose image tower is a timm ConvNeXt (stage widths 16-48), SED's cost
# neck with 3 prompt templates, and SED's gradual fusion decoder with its auxiliary heads. The
# 96 px images are squashed to 192 px (6 x 6 cost grid, logits at 48 x 48).
#   python tools/train.py configs/sed_tiny_synthetic.py
#   python tools/test.py configs/sed_tiny_synthetic.py work_dirs/sed_tiny_synthetic/iter_600.pth
_base_ = ['./catseg_tiny_synthetic.py']
clip_resolution = 192
templates = ['a photo of a {}.', 'a {} in the scene.', 'a close-up photo of the {}.']
model = dict(
    data_preprocessor=dict(test_cfg=None),  # no padding: the segmentor squashes the image itself
    clip_resolution=clip_resolution,
    vocabulary=dict(templates=templates),
    backbone=dict(
        _delete_=True,
        type='CLIPConvNeXtBackbone',
        model_name=None,
        model_cfg=dict(
            embed_dim=32,
            vision_cfg=dict(timm_model_name='convnext_base', timm_model_pretrained=False,
                            timm_pool='', timm_proj='linear', image_size=clip_resolution),
            text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)),
        trunk_cfg=dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 48)),
        finetune='full',  # random CLIP: everything learns
        pretrained=None),
    neck=dict(_delete_=True, type='SEDCostNeck', hidden_dim=32, pad_len=0),
    decode_head=dict(
        _delete_=True,
        type='SEDHead',
        hidden_dim=32,
        decoder_dims=(32, 16, 16),  # skip widths and prompt_channel: derived
        decoder_guidance_proj_dims=(8, 8, 8),
        num_heads=2,
        kernel_sizes=(9, 9, 9),
        pooling_size=(2, 2),
        test_pooling_size=(1, 1),
        num_classes=5))
