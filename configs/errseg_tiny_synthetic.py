# Quick start for ERR-Seg on CPU: the synthetic data of catseg_tiny_synthetic.py (5 classes), with a
# tiny randomly initialised open_clip CLIP whose image tower is a timm ConvNeXt (stage widths
# 16-64) with ERR-Seg's stride-16 dense branch, a 32-wide ERR-Seg neck with 2 RRCA layers that keeps
# 3 of the 5 classes per image (in training the ground-truth classes first), and ERR-Seg's guided
# up-decoder. The 96 px images are squashed to 192 px (cost grids 6 x 6 and 12 x 12, logits at
# 48 x 48); at test time the compact vocabulary keeps K = 3 classes per image (RRHC).
#   python tools/train.py configs/errseg_tiny_synthetic.py
#   python tools/test.py configs/errseg_tiny_synthetic.py \
#       work_dirs/errseg_tiny_synthetic/iter_600.pth
#   every class at test time: --cfg-options model.test_cfg.class_filter=None
_base_ = ['./catseg_tiny_synthetic.py']
classes = ['sky', 'grass', 'sand', 'snow', 'brick']
image_size = 96
clip_resolution = 192
model = dict(
    _delete_=True,
    type='ERRSegEncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],  # ERR-Seg's (ImageNet) normalisation
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(image_size, image_size),
        test_cfg=None),  # no padding: the segmentor squashes the image itself
    clip_resolution=clip_resolution,
    vocabulary=dict(classes=classes, synonyms='first', templates='catseg'),
    test_vocabulary=None,
    backbone=dict(
        type='CLIPConvNeXtBackbone',
        model_name=None,
        model_cfg=dict(
            embed_dim=32,
            vision_cfg=dict(timm_model_name='convnext_base', timm_model_pretrained=False,
                            timm_pool='', timm_proj='linear', image_size=clip_resolution),
            text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)),
        # the last stage twice as wide as the third, as in ConvNeXt-B/L (the stride-16 branch
        # maps stage-3 features to the last stage's width)
        trunk_cfg=dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 64)),
        dense_os16=True,
        finetune='full',  # random CLIP: everything learns
        pretrained=None),
    # embed_dim, prompt_channel and image_guidance_dims: derived from the backbone and vocabulary
    neck=dict(
        type='ERRSegNeck',
        corr_fpn_inter_dim=16,
        guidance_fpn_inter_dim=16,
        aggregator_dim=32,
        aggregator_scale_ratio=(2, 2),  # 2 RRCA layers
        num_heads=2,
        class_pooling_size=2,
        drop_path_step=0.025,
        sample_classes_num=3),  # 3 of the 5 classes per image in training
    # decoder_guidance_dims: derived from the backbone
    decode_head=dict(
        type='ERRSegHead',
        hidden_dim=32,
        decoder_dims=(32, 16, 16),
        decoder_guidance_proj_dims=(8, 8, 8),
        channels_per_group=8,
        num_classes=len(classes),
        ignore_index=255,
        align_corners=False),
    train_cfg=dict(),
    test_cfg=dict(mode='whole', resize_probabilities=True, class_filter=dict(type='rrhc', k=3)))
