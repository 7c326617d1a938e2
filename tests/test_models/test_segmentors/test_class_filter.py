"""Test-time class filtering (``test_cfg.class_filter``): LMSeg's top-k and SED's per-pixel top-k
rules, for CAT-Seg and ESC-Net."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.layers.cost_volume import correlation, filter_classes
from mmseg_escnet.models.structures import ClassFilter

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
CONFIGS = ['catseg_tiny_synthetic.py', 'escnet_tiny_synthetic.py']
VOCABULARY = ['sky', 'grass', 'sand', 'snow', 'brick', 'water', 'road', 'tree', 'wall']


def _model(name, mode='whole', **test_cfg):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    cfg.model.vocabulary = VOCABULARY
    cfg.model.test_cfg = dict(mode=mode, **test_cfg)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def _images():
    return torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))


def _initial_correlation(model, images):
    dense, *_ = model.backbone(images)
    return correlation(dense, model.text_embeddings()[None])  # (1, P, T, h, w)


@pytest.mark.parametrize('name', CONFIGS)
def test_a_filter_keeping_every_class_changes_nothing(name):
    model = _model(name)
    with torch.no_grad():
        reference = model._forward(_images())
        for rule in (dict(type='topk', k=len(VOCABULARY)), dict(type='pixel_topk', k=20)):
            model.test_cfg = dict(mode='whole', class_filter=rule)
            assert torch.equal(model._forward(_images()), reference), rule


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.parametrize('rule', [dict(type='topk', k=3), dict(type='pixel_topk', k=1)])
def test_filtered_out_classes_never_win(name, rule):
    model = _model(name, class_filter=rule)
    images = _images()
    with torch.no_grad():
        kept = filter_classes(_initial_correlation(model, images), ClassFilter.from_cfg(rule))[0]
        logits = model._forward(images)  # (1, T, 96, 96)
        labels = model.predict(images)[0].pred_sem_seg.data
    dropped = sorted(set(range(len(VOCABULARY))) - set(kept.tolist()))
    assert 0 < len(kept) < len(VOCABULARY)
    assert (logits[0, dropped] == -100).all() and (logits[0, kept] > -100).all()
    assert set(labels.unique().tolist()) <= set(kept.tolist())


def test_filter_rules():
    corr = torch.zeros(1, 2, 5, 2, 2)
    corr[0, 0, 3] = 0.9   # class 3 is the best everywhere (template 0)
    corr[0, 1, 1, 0, 0] = 0.8  # class 1 peaks at one pixel (template 1)
    corr[0, :, 4, 1, 1] = 0.85  # class 4: second best at one pixel
    assert filter_classes(corr, ClassFilter('topk', 2)).tolist() == [[3, 4]]
    # per pixel (templates averaged): pixel (0, 0): 3 (0.45), 1 (0.4); (1, 1): 4 (0.85), 3
    assert filter_classes(corr, ClassFilter('pixel_topk', 1)).tolist() == [[3, 4]]
    assert filter_classes(corr, ClassFilter('topk', 5)) is None
    assert filter_classes(corr, None) is None
    with pytest.raises(ValueError, match="'sed_cer' is applied by the decode head"):
        filter_classes(corr, ClassFilter('sed_cer', 1))


@pytest.mark.parametrize('bad', [dict(type='top', k=3), dict(type='topk'), dict(type='topk', k=0),
                                 dict(type='topk', k=2, extra=1), 'topk'])
def test_bad_filters_are_refused_when_the_model_is_built(bad):
    with pytest.raises(ValueError, match='class_filter'):
        ClassFilter.from_cfg(bad)
    with pytest.raises(ValueError, match='class_filter'):
        _model('catseg_tiny_synthetic.py', class_filter=bad)


def test_head_filters_and_unknown_test_cfg_keys_are_refused():
    with pytest.raises(ValueError, match="'sed_cer' needs a decode head"):
        _model('catseg_tiny_synthetic.py', class_filter=dict(type='sed_cer', k=8))  # no aux heads
    with pytest.raises(KeyError, match="unknown keys \\['kernel'\\]"):
        _model('catseg_tiny_synthetic.py', kernel=384)  # a sliding_global key in 'whole' mode
    with pytest.raises(ValueError, match='test_cfg.mode'):
        _model('catseg_tiny_synthetic.py', mode='wole')


def _samples(n, ori_shape, pad=(0, 3, 0, 5), flip=None):
    """Samples of (96, 96) padded inputs whose unpadded part is resized back to ``ori_shape``."""
    meta = dict(ori_shape=ori_shape, img_shape=(91, 93), pad_shape=(96, 96), padding_size=pad)
    if flip:
        meta.update(flip=True, flip_direction=flip)
    return [SegDataSample(metainfo=dict(meta)) for _ in range(n)]


def _mmseg_predict(model, images, samples):
    """mmseg's ``EncoderDecoder.predict`` with mmseg's dense post-processing."""
    logits = EncoderDecoder.inference(model, images, [s.metainfo for s in samples])
    return BaseSegmentor.postprocess_result(model, logits, samples)


@pytest.mark.parametrize('flip', [None, 'horizontal', 'vertical'])
def test_whole_mode_equals_mmseg_post_processing_without_a_filter(flip):
    """Without pruning, the class-sparse post-processing is mmseg's, bit for bit."""
    model = _model('catseg_tiny_synthetic.py')
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model.predict(images, _samples(2, (70, 50), flip=flip))
        mmseg = _mmseg_predict(model, images, _samples(2, (70, 50), flip=flip))
    for a, b in zip(ours, mmseg):
        assert a.metainfo['seg_logits_classes'].tolist() == list(range(len(VOCABULARY)))
        assert torch.equal(a.seg_logits.data, b.seg_logits.data)
        assert torch.equal(a.pred_sem_seg.data, b.pred_sem_seg.data)


@pytest.mark.parametrize('mode', ['whole', 'sliding_global'])
def test_with_a_filter_only_the_kept_classes_reach_the_image_size(mode):
    rule = dict(type='topk', k=3)
    protocol = dict(kernel=48, overlap=0.5, out_size=(96, 96)) if mode == 'sliding_global' else {}
    model = _model('escnet_tiny_synthetic.py', mode, class_filter=rule, **protocol)
    images = _images()
    with torch.no_grad():
        sparse = model.predict(images, _samples(1, (70, 50)))[0]
        if mode == 'whole':  # mmseg's dense post-processing of the same filtered logits
            dense = _mmseg_predict(model, images, _samples(1, (70, 50)))[0]
    classes = sparse.metainfo['seg_logits_classes']
    assert sparse.seg_logits.data.shape == (len(classes), 70, 50)
    assert set(sparse.pred_sem_seg.data.unique().tolist()) <= set(classes.tolist())
    if mode == 'sliding_global':  # the union of each view's top 3
        assert 3 <= len(classes) < len(VOCABULARY)
        return
    kept = filter_classes(_initial_correlation(model, images), ClassFilter.from_cfg(rule))[0]
    assert classes.tolist() == kept.tolist()
    # bilinear resizing of 3 instead of 9 channels may round differently (1 ulp)
    torch.testing.assert_close(sparse.seg_logits.data, dense.seg_logits.data[classes],
                               rtol=0, atol=1e-6)
    assert torch.equal(sparse.pred_sem_seg.data, dense.pred_sem_seg.data)


@pytest.mark.parametrize('resize_probabilities', [False, True])
def test_without_padding_one_resize_to_the_original_size(resize_probabilities):
    """detectron2's sem_seg_postprocess (CAT-Seg, SED): one bilinear resize; SED resizes the
    sigmoid probabilities."""
    model = _model('catseg_tiny_synthetic.py', resize_probabilities=resize_probabilities)
    images = _images()
    with torch.no_grad():
        out = model.predict(images, _samples(1, (70, 50), pad=(0, 0, 0, 0)))[0]
        low = model._forward(images)                                      # (1, T, 96, 96)
    resize = lambda x: F.interpolate(x, size=(70, 50), mode='bilinear', align_corners=False)  # noqa
    if resize_probabilities:
        torch.testing.assert_close(out.seg_logits.data.sigmoid(), resize(low.sigmoid())[0],
                                   rtol=0, atol=1e-6)
    else:
        assert torch.equal(out.seg_logits.data, resize(low)[0])
