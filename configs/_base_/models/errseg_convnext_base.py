# ERR-Seg with the CLIP ConvNeXt-B image tower at 640 px, as the official model
# (lchen1019/ERR-Seg, configs/convnextB_640.yaml; arXiv:2501.17642; docs/errseg.md): dense features
# at strides 32 and 16 (20 x 20 and 40 x 40 cost grids), a compact vocabulary of K classes per
# image (RRHC), RRCA aggregation and a guided up-decoder (logits at 160 x 160).
data_preprocessor = dict(
    type='SegDataPreProcessor',
    # ERR-Seg normalises with the ImageNet statistics (CLIP_PIXEL_MEAN / CLIP_PIXEL_STD), not
    # CLIP's
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    # training crops are already padded to 640 x 640 (value 128) by the pipeline, before
    # normalisation, as the official mapper; this only pads a batch of smaller images
    size=(640, 640),
    # no test-time padding: the segmentor squashes the image itself to 640 x 640, and padding
    # would be squashed with it
    test_cfg=None)
model = dict(
    type='ERRSegEncoderDecoder',
    data_preprocessor=data_preprocessor,
    clip_resolution=640,  # the whole image is squashed to 640 x 640 (INPUT.CROP.SIZE), as official
    # the single template 'A photo of a {} in the scene', first synonym of every class only
    vocabulary=dict(classes='coco_stuff171', synonyms='first', templates='catseg'),
    test_vocabulary=None,  # None: same as `vocabulary`; zero-shot: e.g. 'ade150'
    backbone=dict(
        type='CLIPConvNeXtBackbone',
        model_name='convnext_base_w_320',
        dense_os16=True,  # the stride-16 dense branch (visual.modify_downsample)
        # CLIP_FINETUNE "weight": layer scales and the mlp / conv_dw weights of the image tower,
        # attn.in_proj_weight and mlp.c_fc.weight of the text tower train (at x0.01, see the
        # schedule); everything else of CLIP is frozen
        finetune='weight',
        pretrained='laion_aesthetic_s13b_b82k'),  # open_clip tag, a local file or a URL
    # embed_dim (640), prompt_channel (1, the template) and image_guidance_dims (1024, 512, ...:
    # the stage widths of ConvNeXt-B, deepest first) follow from the backbone and the vocabulary
    neck=dict(
        type='ERRSegNeck',
        corr_fpn_inter_dim=256,
        guidance_fpn_inter_dim=256,
        aggregator_dim=128,
        aggregator_scale_ratio=(2, 2, 2, 2),  # 4 RRCA layers, key/value reduction 2
        num_heads=4,
        class_pooling_size=2,
        drop_path_step=0.025,
        sample_classes_num=32,  # K in training: the ground-truth classes first, then the most
        # frequent ones of the stride-16 correlation (SAMPLE_CLASSES_NUM)
        class_chunk_size=None),
    # decoder_guidance_dims (512, 256, 128: os16, os8, os4 of ConvNeXt-B) follow from the backbone
    decode_head=dict(
        type='ERRSegHead',
        hidden_dim=128,
        decoder_dims=(64, 32, 16),
        decoder_guidance_proj_dims=(32, 16, 8),
        channels_per_group=8,
        num_classes=171,
        ignore_index=255,
        align_corners=False),
    train_cfg=dict(),
    # the whole image at 640 x 640, sigmoid, probabilities resized to the image size (official);
    # the compact vocabulary keeps the K = 32 classes of highest frequency per image (RRHC)
    test_cfg=dict(mode='whole', resize_probabilities=True, class_filter=dict(type='rrhc', k=32)))
