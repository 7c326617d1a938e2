# CAT-Seg with CLIP ViT-B/16 at 384 px (24 x 24 grid), as the official model (cvlab-kaist/CAT-Seg;
# docs/catseg.md).
clip_mean = [122.7709383, 116.7460125, 104.09373615]
clip_std = [68.5005327, 66.6321579, 70.323163]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=clip_mean,
    std=clip_std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(384, 384),
    test_cfg=dict(size_divisor=32))
model = dict(
    type='OpenVocabEncoderDecoder',
    data_preprocessor=data_preprocessor,
    clip_resolution=384,
    vocabulary=dict(classes='coco_stuff171', synonyms='first', templates='catseg'),
    test_vocabulary=None,  # None: same as `vocabulary`; zero-shot: e.g. 'ade150'
    backbone=dict(
        type='CLIPBackbone',
        model_name='ViT-B-16',
        quick_gelu=True,
        out_indices=(3, 7),
        finetune='attention',
        pretrained='openai'),  # OpenAI weights: a local file, a URL, or open_clip's tag
    neck=dict(
        type='CATSegAggregator',
        text_guidance_dim=128,        # projected widths of the guidances (0: none)
        appearance_guidance_dim=128,
        num_layers=2,
        num_heads=4,
        hidden_dim=128,
        pooling_size=(2, 2),
        test_pooling_size=(1, 1),  # the reported evaluation protocol (eval.sh)
        feature_resolution=(24, 24),
        window_size=12,
        pad_len=256),  # embed_dim, prompt_channel: from the backbone and vocabulary
    decode_head=dict(
        type='CATSegHead',
        upsample_dims=(256, 128),
        decoder_guidance_proj_dims=(32, 16),
        decoder_dims=(64, 32),
        hidden_dim=128,
        num_classes=171,
        ignore_index=255,
        align_corners=False),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
