"""The open-vocabulary segmentor: losses, predictions, vocabulary switching, the vocabulary check."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_escnet  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


@pytest.fixture(scope='module')
def model():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'))
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def _batch(n=2, size=64, num_classes=5):
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(n)]
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size)))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def test_loss_and_backward(model):
    model.train()
    data = model.data_preprocessor(_batch(), training=True)
    losses = model.loss(data['inputs'], data['data_samples'])
    assert 'decode.loss_bce' in losses
    loss = losses['decode.loss_bce']
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # gradients reach CLIP
    model.zero_grad()


def test_predict_shapes_and_vocabulary_switch(model):
    model.eval()
    data = model.data_preprocessor(_batch(n=1, size=80), training=False)
    with torch.no_grad():
        out = model.predict(data['inputs'], data['data_samples'])
        assert out[0].seg_logits.data.shape == (5, 80, 80)
        assert out[0].pred_sem_seg.data.shape == (1, 80, 80)
        assert model.num_classes == 5
        model.set_vocabulary(['red thing', 'blue thing', 'green thing'])
        out = model.predict(data['inputs'], data['data_samples'])
        assert out[0].seg_logits.data.shape == (3, 80, 80)
        assert out[0].pred_sem_seg.data.max() < 3
        assert model.num_classes == 3
        # the training vocabulary is untouched
        model.train()
        assert model.num_classes == 5
    model.eval()
    model.set_vocabulary(['sky', 'grass', 'sand', 'snow', 'brick'])
    with pytest.raises(ValueError, match='which'):
        model.set_vocabulary(['a'], which='val')


def test_tensor_mode(model):
    model.eval()
    data = model.data_preprocessor(_batch(n=2, size=96), training=False)
    with torch.no_grad():
        logits = model(data['inputs'], mode='tensor')
    # 96 px CLIP input, patch 4 -> 24 x 24 grid -> logits at 4x the grid
    assert logits.shape == (2, 5, 96, 96)


def test_one_class_vocabulary_keeps_argmax_semantics(model):
    """mmseg would treat one channel as binary segmentation; here every pixel is the class."""
    model.eval()
    data = model.data_preprocessor(_batch(n=1, size=80), training=False)
    try:
        model.set_vocabulary(['sky'])
        with torch.no_grad():
            out = model.predict(data['inputs'], data['data_samples'])
            logits = model.inference(data['inputs'],
                                     [s.metainfo for s in data['data_samples']])  # (1, 1, 96, 96)
        logits = logits[:, :, :80, :80]  # the preprocessor padded 80 -> 96 at the bottom right
        assert out[0].seg_logits.data.shape == (1, 80, 80)
        torch.testing.assert_close(out[0].seg_logits.data, logits[0])   # logits, not sigmoid
        assert out[0].pred_sem_seg.data.shape == (1, 80, 80)
        assert (out[0].pred_sem_seg.data == 0).all()
    finally:
        model.set_vocabulary(['sky', 'grass', 'sand', 'snow', 'brick'])


def test_a_wrong_template_count_fails_at_build_naming_both_values():
    """SED's cost volume takes one channel per template: the neck's and head's prompt_channel
    follow from the training vocabulary; a configured value that differs, or a test vocabulary
    with another number of prompts per class, is refused when the model is built (and by
    set_vocabulary, which keeps the previous vocabulary), naming both values."""
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'sed_tiny_synthetic.py'))
    init_default_scope('mmseg')
    good = cfg.model.vocabulary
    assert 'prompt_channel' not in cfg.model.neck  # derived, not repeated
    cfg.model.vocabulary = dict(good, templates=['a photo of a {}.'])
    cfg.model.neck.prompt_channel = 3
    with pytest.raises(ValueError, match=r"neck\.prompt_channel=3 but the vocabulary's prompts "
                                         r'per class is 1'):
        MODELS.build(cfg.model)
    del cfg.model.neck.prompt_channel
    model = MODELS.build(cfg.model)  # one template: a P = 1 model
    assert model.neck.prompt_channel == model.decode_head.prompt_channel == 1
    cfg.model.vocabulary = good
    cfg.model.test_vocabulary = dict(classes=['cat', 'dog'], templates=['a {}.'])
    with pytest.raises(ValueError, match=r'gives 1 prompts per class.*neck\.prompt_channel=3.*'
                                         r'decode_head\.prompt_channel=3'):
        MODELS.build(cfg.model)
    del cfg.model.test_vocabulary
    model = MODELS.build(cfg.model)
    before = model.test_text.vocabulary
    with pytest.raises(ValueError, match='gives 1 prompts per class'):
        model.set_vocabulary(dict(classes=['cat', 'dog'], templates=['a {}.']))
    assert model.test_text.vocabulary is before


@pytest.mark.parametrize('name,key', [('catseg', 'embed_dim'), ('lmseg', 'embed_dim'),
                                      ('escnet', 'embed_dim'), ('errseg', 'embed_dim')])
def test_a_neck_width_that_does_not_fit_the_backbone_fails_at_build(name, key):
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(root, 'configs', f'{name}_tiny_synthetic.py'))
    cfg.model.neck[key] = 48  # the tiny CLIP embeds in 32 channels
    init_default_scope('mmseg')
    with pytest.raises(ValueError, match=rf'neck\.{key}=48 but backbone\.embed_dim is 32'):
        MODELS.build(cfg.model)
