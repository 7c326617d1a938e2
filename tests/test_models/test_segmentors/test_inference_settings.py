"""The typed inference settings: ``test_cfg`` parsed and checked once, changed in one place."""
import copy
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.segmentors.inference_settings import InferenceSettings, ReadOnlyConfig
from mmseg_escnet.models.structures import ClassFilter

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def _model(name='catseg_tiny_synthetic.py', **test_cfg):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    cfg.model.test_vocabulary = ['sky', 'grass', 'sand', 'snow', 'brick']  # prompted as trained
    cfg.model.test_cfg = test_cfg or None
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


@pytest.mark.parametrize('cfg', [
    dict(mode='whole', class_filter=None, resize_probabilities=True),
    dict(mode='slide', class_filter=dict(type='topk', k=4), crop_size=(96, 64), stride=(32, 32)),
    dict(mode='sliding_global', class_filter=dict(type='pixel_topk', k=2), kernel=48,
         overlap=0.5, out_size=(96, 72), views_per_batch=2),
    dict(mode='whole', class_filter=None, resize_probabilities=False, precision='bfloat16'),
])
def test_parse_and_back_round_trips(cfg):
    settings = InferenceSettings.from_cfg(cfg)
    assert settings.to_cfg() == cfg
    assert InferenceSettings.from_cfg(settings.to_cfg()) == settings
    assert settings.class_filter == ClassFilter.from_cfg(cfg['class_filter'])


def test_defaults_and_an_int_size():
    assert InferenceSettings.from_cfg(None) == InferenceSettings()
    assert InferenceSettings.from_cfg({}).mode == 'whole'
    settings = InferenceSettings.from_cfg(dict(mode='sliding_global', out_size=384))
    assert (settings.kernel, settings.overlap, settings.out_size, settings.views_per_batch) == \
        (384, 0.333, (384, 384), 0)


@pytest.mark.parametrize('cfg, error, match', [
    (dict(mode='wole'), ValueError, "test_cfg.mode must be one of .* got 'wole'"),
    (dict(mode='whole', kernel=384), KeyError, r"mode 'whole' has unknown keys \['kernel'\]"),
    (dict(mode='sliding_global', overlapp=0.5), KeyError, r"unknown keys \['overlapp'\]"),
    (dict(mode='slide', crop_size=(96, 96)), KeyError, "needs 'stride'"),
    (dict(mode='slide', crop_size=(96, 0), stride=8), ValueError, 'test_cfg.crop_size'),
    (dict(mode='sliding_global', out_size=600), ValueError, 'uncovered'),
    (dict(mode='sliding_global', overlap=1.0), ValueError, r'test_cfg.overlap .* \[0, 1\)'),
    (dict(mode='sliding_global', views_per_batch=-1), ValueError, 'views_per_batch'),
    (dict(mode='whole', resize_probabilities='yes'), ValueError, 'resize_probabilities'),
    (dict(class_filter=dict(type='topk', k=0)), ValueError, 'class_filter'),
    (dict(precision='fp16'), ValueError, r"test_cfg.precision must be one of \['float32', "
     r"'float16', 'bfloat16'\], got 'fp16'"),
])
def test_bad_settings_name_the_key(cfg, error, match):
    with pytest.raises(error, match=match):
        InferenceSettings.from_cfg(cfg)


def test_replace_keeps_the_filter_and_resets_the_other_mode():
    base = InferenceSettings.from_cfg(dict(mode='sliding_global', kernel=48, overlap=0.5,
                                           out_size=96, class_filter=dict(type='topk', k=3)))
    whole = base.replace(mode='whole')
    assert whole.to_cfg() == dict(mode='whole', class_filter=dict(type='topk', k=3),
                                  resize_probabilities=False)
    back = whole.replace(mode='sliding_global')
    assert back.kernel == 384 and back.class_filter == base.class_filter  # defaults again
    assert base.replace(views_per_batch=1).kernel == 48  # same mode: the rest is kept
    assert base.replace(class_filter=None).class_filter is None


def test_class_filter_stages():
    assert [ClassFilter(rule, 1).stage for rule in ('topk', 'pixel_topk', 'sed_cer')] == \
        ['neck', 'neck', 'head']


def test_model_test_cfg_is_a_read_only_view():
    model = _model(mode='whole', class_filter=dict(type='topk', k=2))
    assert model.test_cfg.mode == 'whole' and model.test_cfg['class_filter']['k'] == 2
    for write in (lambda c: c.__setitem__('mode', 'slide'), lambda c: setattr(c, 'mode', 'x'),
                  lambda c: c.class_filter.__setitem__('k', 5),
                  lambda c: c.__delitem__('class_filter')):
        with pytest.raises(TypeError, match='read-only.*set_inference_settings'):
            write(model.test_cfg)
    assert model.inference_settings.class_filter == ClassFilter('topk', 2)
    view = model.test_cfg
    assert copy.deepcopy(view) == view and pickle.loads(pickle.dumps(view)) == view
    assert isinstance(copy.deepcopy(model).test_cfg, ReadOnlyConfig)


def test_settings_change_in_one_place_and_a_refused_change_keeps_the_old():
    model = _model()
    assert model.inference_settings == InferenceSettings()
    new = model.set_inference_settings(dict(mode='sliding_global', kernel=48, out_size=80,
                                            overlap=0.333))
    assert model.inference_settings is new and model.test_cfg.kernel == 48
    model.test_cfg = dict(mode='whole')  # what mmseg does: the same method
    assert model.inference_settings == InferenceSettings()
    with pytest.raises(ValueError, match="'sed_cer' needs a decode head"):
        model.set_inference_settings(dict(class_filter=dict(type='sed_cer', k=2)))
    with pytest.raises(KeyError, match='unknown keys'):
        model.test_cfg = dict(mode='whole', stride=3)
    assert model.inference_settings == InferenceSettings()


def test_each_stage_gets_only_its_own_filter():
    """A neck-stage filter reaches the neck, a head-stage one the head (SED), never both."""
    model = _model('sed_tiny_synthetic.py', class_filter=dict(type='sed_cer', k=2))
    images = torch.randn(1, 3, 64, 64)
    seen = {}
    model.neck.register_forward_pre_hook(
        lambda module, args, kwargs: seen.__setitem__('neck', kwargs.get('class_filter')),
        with_kwargs=True)
    with torch.no_grad():
        inputs = model.extract_feat(images)
        assert seen['neck'] is None and inputs.class_filter == ClassFilter('sed_cer', 2)
        model.set_inference_settings(model.inference_settings.replace(
            class_filter=dict(type='pixel_topk', k=2)))
        inputs = model.extract_feat(images)
        assert seen['neck'] == ClassFilter('pixel_topk', 2) and inputs.class_filter is None
        model.train()
        inputs = model.extract_feat(images)
        assert seen['neck'] is None and inputs.class_filter is None  # no filter in training


@pytest.mark.parametrize('mode', ['whole', 'slide', 'sliding_global'])
def test_half_precision_off_cuda_is_refused_before_any_work(mode):
    extra = dict(slide=dict(crop_size=96, stride=64), sliding_global=dict(kernel=96,
                 out_size=96)).get(mode, {})
    model = _model(mode=mode, precision='float16', **extra)
    calls = []
    model.backbone.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=r"test_cfg.precision='float16' runs on CUDA only "
                       r"\(autocast\); this model runs on cpu: use precision='float32'"):
        model.predict(torch.randn(1, 3, 96, 96))
    assert not calls
    model.set_inference_settings(model.inference_settings.replace(precision='float32'))
    assert model.predict(torch.randn(1, 3, 96, 96))[0].pred_sem_seg.data.shape == (1, 96, 96)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('precision', ['float16', 'bfloat16'])
def test_half_precision_on_cuda_gives_float32_logits_close_to_float32(precision):
    if precision == 'bfloat16' and not torch.cuda.is_bf16_supported():
        pytest.skip('no bfloat16 on this GPU')
    model = _model().cuda()
    images = torch.randn(1, 3, 96, 96, device='cuda')
    with torch.no_grad():
        full = model.predict(images)[0].seg_logits.data
        model.set_inference_settings(model.inference_settings.replace(precision=precision))
        half = model.predict(images)[0].seg_logits.data
    assert half.dtype == torch.float32
    assert float((half - full).abs().max()) < 0.05
