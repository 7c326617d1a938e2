"""The whole ERR-Seg evaluation pipeline against the official code on one image.

``tests/data/conformance/errseg_model_eval.pt``: the official ``ERRSeg.forward`` in eval mode
(lchen1019/ERR-Seg@6e79c0d) with a tiny CLIP ConvNeXt and decoder (README there). Our segmentor
is built from the registry, the official weights go through our converter, and the image goes
through our data preprocessor, segmentor and class-sparse post-processing.
"""
from pathlib import Path

import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_escnet  # noqa: F401
from mmseg_escnet.checkpoints.errseg_official import convert_errseg
from mmseg_escnet.models.segmentors.class_sparse import postprocess_sparse

DATA = Path(__file__).parents[2] / 'data' / 'conformance'


@pytest.fixture(scope='module')
def reference():
    return torch.load(DATA / 'errseg_model_eval.pt', weights_only=False)


def build_segmentor(ref: dict):
    """Our ERR-Seg with the reference's sizes and its converted weights."""
    cfg, dec = ref['config'], ref['config']['decoder']
    init_default_scope('mmseg')
    model = MODELS.build(dict(
        type='ERRSegEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=cfg['clip_pixel_mean'],
                               std=cfg['clip_pixel_std'], bgr_to_rgb=False),
        clip_resolution=tuple(cfg['clip_resolution']),
        vocabulary=dict(classes=[f'class {i}' for i in range(cfg['T'])], synonyms='first',
                        templates='catseg'),
        backbone=dict(type='CLIPConvNeXtBackbone', model_name=None, dense_os16=True,
                      model_cfg=cfg['open_clip_model_cfg'],
                      trunk_cfg=dict(depths=cfg['timm_trunk']['depths'],
                                     dims=cfg['timm_trunk']['dims']),
                      finetune='weight'),
        neck=dict(type='ERRSegNeck', corr_fpn_inter_dim=dec['corr_fpn_inter_dim'],
                  guidance_fpn_inter_dim=dec['guidance_fpn_inter_dim'],
                  aggregator_dim=dec['aggregator_dim'],
                  aggregator_scale_ratio=dec['aggregator_scale_ratio'],
                  sample_classes_num=dec['sample_classes_num']),
        decode_head=dict(type='ERRSegHead', hidden_dim=dec['aggregator_dim'],
                         decoder_dims=dec['decoder_dims'],
                         decoder_guidance_proj_dims=dec['guidance_proj_dims'],
                         num_classes=cfg['T']),
        test_cfg=dict(mode='whole', resize_probabilities=True,
                      class_filter=dict(type='rrhc', k=cfg['K']))))
    converted = convert_errseg({'model': ref['state_dict_official']}).state_dict
    result = model.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    # the file holds the image tower and the decoder; the text tower is not used (text given)
    assert all(k.startswith('backbone.clip_model.') and '.visual.' not in k
               for k in result.missing_keys), result.missing_keys
    return model.eval()


def test_pipeline_matches_official(reference):
    cfg = reference['config']
    model = build_segmentor(reference)
    text = reference['text_embeds']  # (T, 1, C)
    data = model.data_preprocessor(dict(inputs=[reference['image_raw'][0]]), training=False)
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'], text=text)
        logits = model.decode_head(feats)
    assert torch.equal(feats.class_index, reference['selected_classes'].sort(dim=1).values)
    torch.testing.assert_close(logits, reference['logits'], rtol=0, atol=1e-5)

    # the segmentor's resize to the CLIP resolution is the official preprocessing
    resized = torch.nn.functional.interpolate(data['inputs'], size=tuple(cfg['clip_resolution']),
                                              mode='bilinear', align_corners=False)
    torch.testing.assert_close(resized, reference['image'], rtol=0, atol=1e-5)

    sample = SegDataSample(metainfo=dict(ori_shape=tuple(cfg['output_size']),
                                         img_shape=tuple(cfg['image_size'])))
    # the post-processing of whole mode (OpenVocabEncoderDecoder.predict)
    out = postprocess_sparse(logits, [sample], align_corners=False,
                             input_size=tuple(cfg['image_size']), resize_probabilities=True)[0]
    classes = out.metainfo['seg_logits_classes']
    assert torch.equal(classes, feats.class_index[0])
    probabilities = out.seg_logits.data.sigmoid()  # (K, H0, W0)
    torch.testing.assert_close(probabilities, reference['sem_seg'][classes], rtol=0, atol=1e-5)
    others = torch.ones(cfg['T'], dtype=torch.bool)
    others[classes] = False
    assert reference['sem_seg'][others].max() < 1e-30  # sigmoid(-100): never predicted
    assert torch.equal(out.pred_sem_seg.data[0], reference['sem_seg'].argmax(dim=0))
