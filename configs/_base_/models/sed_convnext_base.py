# SED with the CLIP ConvNeXt-B image tower at 768 px (24 x 24 cost grid), as the official model
# (xb534/SED, configs/convnextB_768.yaml; docs/sed.md).
clip_mean = [122.7709383, 116.7460125, 104.09373615]
clip_std = [68.5005327, 66.6321579, 70.323163]
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=clip_mean,
    std=clip_std,
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(768, 768),
    # no test-time padding: the segmentor squashes the image itself to 768 x 768, and padding
    # would be squashed with it (official: size_divisibility -1 at test)
    test_cfg=None)
model = dict(
    type='OpenVocabEncoderDecoder',
    data_preprocessor=data_preprocessor,
    clip_resolution=768,  # the whole image is squashed to 768 x 768, as official
    # 80 ImageNet templates kept as cost channels; ', '-separated synonyms averaged per template
    vocabulary=dict(classes='coco_stuff171', synonyms='all', templates='imagenet'),
    test_vocabulary=None,  # None: same as `vocabulary`; zero-shot: e.g. 'ade150'
    backbone=dict(
        type='CLIPConvNeXtBackbone',
        model_name='convnext_base_w_320',
        finetune='visual',  # image tower trained (at x0.01, see the schedule), text frozen
        pretrained='laion_aesthetic_s13b_b82k'),  # open_clip tag, a local file or a URL
    # prompt_channel (80, the templates) and the head's skip widths (512, 256, 128: res4, res3,
    # res2 of ConvNeXt-B) follow from the vocabulary and the backbone (model_sizes.py)
    neck=dict(type='SEDCostNeck', hidden_dim=128, pad_len=0),
    decode_head=dict(
        type='SEDHead',
        hidden_dim=128,
        decoder_dims=(64, 32, 16),
        decoder_guidance_proj_dims=(32, 16, 8),
        num_heads=4,
        kernel_sizes=(9, 9, 9),
        pooling_size=(2, 2),
        test_pooling_size=(1, 1),  # eval.sh: POOLING_SIZES [1, 1]
        num_classes=171,
        ignore_index=255,
        align_corners=False),
    train_cfg=dict(),
    # the whole image at 768 x 768; probabilities resized to the image size (official)
    test_cfg=dict(mode='whole', resize_probabilities=True))
