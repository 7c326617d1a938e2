"""ERRSegEncoderDecoder: ground-truth classes first in training, K per image at test, checks."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_escnet  # noqa: F401

CLASSES = ['sky', 'grass', 'sand', 'snow', 'brick', 'water']


def tiny_cfg(**backbone):
    return dict(
        type='ERRSegEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        clip_resolution=64,
        vocabulary=dict(classes=CLASSES, synonyms='first', templates='catseg'),
        backbone=dict(
            type='CLIPConvNeXtBackbone', model_name=None, finetune='weight',
            model_cfg=dict(embed_dim=16, vision_cfg=dict(
                timm_model_name='convnext_base', timm_model_pretrained=False, timm_pool='',
                timm_proj='linear', image_size=64), text_cfg=dict(
                context_length=16, vocab_size=49408, width=16, heads=2, layers=1)),
            trunk_cfg=dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 32)), **backbone),
        neck=dict(type='ERRSegNeck', corr_fpn_inter_dim=8, guidance_fpn_inter_dim=8,
                  aggregator_dim=8, aggregator_scale_ratio=(2, ), num_heads=2,
                  sample_classes_num=3),
        decode_head=dict(type='ERRSegHead', hidden_dim=8, decoder_dims=(8, 8, 8),
                         decoder_guidance_proj_dims=(8, 8, 8), num_classes=6),
        test_cfg=dict(mode='whole', resize_probabilities=True,
                      class_filter=dict(type='rrhc', k=2)))


@pytest.fixture(scope='module')
def model():
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(tiny_cfg(dense_os16=True))


def test_training_keeps_the_ground_truth_classes(model):
    model.train()
    labels = [torch.full((1, 64, 64), 5, dtype=torch.long), torch.zeros(1, 64, 64).long()]
    labels[0][:, :8] = 255  # ignored: not a class
    labels[1][:, :8] = 4
    samples = [SegDataSample(gt_sem_seg=PixelData(data=label)) for label in labels]
    for sample in samples:
        sample.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64)))
    kept = []
    handle = model.neck.register_forward_hook(lambda m, a, out: kept.append(out.class_index))
    try:
        losses = model.loss(torch.randn(2, 3, 64, 64), samples)
    finally:
        handle.remove()
    assert set(losses) == {'decode.loss_bce'} and losses['decode.loss_bce'].requires_grad
    assert kept[0].shape == (2, 3)
    assert 5 in kept[0][0].tolist() and {0, 4} <= set(kept[0][1].tolist())
    assert model.ground_truth_classes(samples)[0].tolist() == [5]


def test_inference_keeps_k_classes_per_image(model):
    model.eval()
    with torch.no_grad():
        out = model.predict(torch.randn(2, 3, 48, 80))
    for sample in out:
        assert sample.seg_logits.data.shape == (2, 48, 80)  # K = 2 of 6 classes
        assert len(sample.metainfo['seg_logits_classes']) == 2


def test_needs_the_stride_16_branch():
    init_default_scope('mmseg')
    with pytest.raises(ValueError, match='dense_os16=True'):
        MODELS.build(tiny_cfg())
