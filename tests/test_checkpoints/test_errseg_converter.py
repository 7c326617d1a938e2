"""tools/model_converters/errseg2mmseg.py: official ERR-Seg checkpoints -> our ERR-Seg, every key
checked.

The decoder's official names are checked against the official code's own state dict in
tests/test_models/test_errseg/test_errseg_decoder_conformance.py (and here: every key of
``errseg_decoder_eval.pt`` maps to a distinct parameter of our neck and head); the CLIP tower's
(open_clip's names, plus ``visual.modify_downsample``) in
tests/test_models/test_backbones/test_errseg_clip.py. Here a whole checkpoint written under those
names is converted and loaded strictly into a config.
"""
import os.path as osp
import re

import pytest
import torch
import yaml
from conftest import build_errseg_decoder, build_random_tiny_model

import mmseg_escnet  # noqa: F401
from mmseg_escnet.checkpoints.convert import get_format
from mmseg_escnet.checkpoints.errseg_official import (ERRSEG_ARCHITECTURES, convert_errseg,
                                                      errseg_decoder_to_mmseg,
                                                      map_errseg_decoder_key)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'errseg_tiny_synthetic.py')
DECODER = 'sem_seg_head.decoder.'
CLIP = 'sem_seg_head.clip_model.'
STEM = CLIP + 'visual.trunk.stem.0.weight'
#: Our names (below neck./decode_head.) -> the official ones: the inverse of the converter's rules.
TO_OFFICIAL = [
    (re.compile(r'(aggregator_layers\.\d+\.spatial_fusion)\.mlp\.dwconv\.(weight|bias)'),
     r'\1.sa.mlp.dwconv.dwconv.\2'),
    (re.compile(r'(aggregator_layers\.\d+\.(spatial|class)_fusion)\.(.+)'), r'\1.sa.\3'),
    (re.compile(r'(up_decoder\d+\.textual_fusion)\.double_conv\.(.+)'), r'\1.\2'),
]


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/model_converters/errseg2mmseg.py')


@pytest.fixture(scope='module')
def ours():
    return build_random_tiny_model('errseg').state_dict()


def _official_name(key):
    part, rest = key.split('.', 1)
    if part == 'backbone':
        assert rest.startswith('clip_model.'), key
        return CLIP + rest[len('clip_model.'):]
    assert part in ('neck', 'decode_head'), key
    for pattern, replacement in TO_OFFICIAL:
        match = pattern.fullmatch(rest)
        if match:
            return DECODER + match.expand(replacement)
    return DECODER + rest


def _official(state):
    """Our state dict under the official ERR-Seg names (a detectron2 checkpoint's 'model')."""
    out = {_official_name(k): v for k, v in state.items()}
    assert len(out) == len(state)
    return out


def test_round_trip_through_the_tool(tool, ours, tmp_path):
    official = _official(ours)
    assert any('.sa.mlp.dwconv.dwconv.' in k for k in official)  # the renamed layers are there
    assert any(re.search(r'textual_fusion\.\d\.', k) for k in official)
    assert any(k.startswith(CLIP + 'visual.modify_downsample.') for k in official)
    mask = torch.full((16, 16), float('-inf')).triu(1)  # open_clip's text causal mask
    official[CLIP + 'attn_mask'] = mask
    src = tmp_path / 'model_final.pth'
    torch.save(dict(model=official, iteration=79999), src)
    meta = tool.convert(str(src), str(tmp_path / 'out' / 'errseg.pth'), config=TINY)
    converted = torch.load(tmp_path / 'out' / 'errseg.pth', weights_only=True)
    assert meta['num_tensors'] == len(ours) and meta['architecture'] == 'custom'
    assert meta['format'] == 'errseg_official'
    assert meta['converter'] == 'tools/model_converters/errseg2mmseg.py'
    assert converted['state_dict'].keys() == ours.keys()
    assert all(torch.equal(converted['state_dict'][k], v) for k, v in ours.items())
    assert get_format('errseg_official').convert is convert_errseg  # the model zoo's converter
    # the text causal mask is dropped, under its official name
    result = convert_errseg(dict(model=official))
    assert result.dropped.keys() == {CLIP + 'attn_mask'}
    assert torch.equal(result.dropped[CLIP + 'attn_mask'], mask)


def test_half_precision_is_converted_to_float32(ours):
    official = {k: v.half() if v.is_floating_point() else v for k, v in _official(ours).items()}
    state = convert_errseg(official).state_dict  # a bare state dict is accepted too
    assert state.keys() == ours.keys()
    assert all(v.dtype == (torch.float32 if ours[k].is_floating_point() else ours[k].dtype)
               for k, v in state.items())


@pytest.mark.parametrize('edit, match', [
    (lambda s: s.update({DECODER + 'text_guidance_projection.1.weight': torch.zeros(1)}),
     'not part of ERR-Seg.*text_guidance_projection.1.weight'),
    (lambda s: s.update({DECODER + 'aggregator_layers.0.spatial_fusion.sa.extra.weight':
                         torch.zeros(1)}),
     r'not part of ERR-Seg.*spatial_fusion\.sa\.extra\.weight'),
    (lambda s: s.update({'backbone.layers.0.weight': torch.zeros(1)}),
     r'1 entries are not part of ERR-Seg.*backbone\.layers\.0\.weight'),
    (lambda s: s.update({'sem_seg_head.predictor.transformer.conv1.weight': torch.zeros(1)}),
     'not part of ERR-Seg.*predictor'),  # a SED checkpoint's key
    (lambda s: s.pop(DECODER + 'head.weight'), 'not a complete ERR-Seg checkpoint.*head.weight'),
    (lambda s: s.pop(DECODER + 'low_corr_fusion.weight'),
     'not a complete ERR-Seg checkpoint.*low_corr_fusion'),
    (lambda s: s.pop(CLIP + 'visual.modify_downsample.2.weight'),
     'not a complete ERR-Seg checkpoint.*modify_downsample'),
    (lambda s: s.pop(STEM), 'not a complete ERR-Seg checkpoint.*stem'),
    (lambda s: s.update({DECODER + 'head.weight': torch.zeros(1)}), 'shape mismatch.*head'),
    (lambda s: s.pop(DECODER + 'head.bias'), r'missing keys.*decode_head\.head\.bias'),
])
def test_bad_checkpoints_are_refused(tool, ours, tmp_path, edit, match):
    official = _official(ours)
    edit(official)
    torch.save(dict(model=official), tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=match):
        tool.convert(str(tmp_path / 'bad.pth'), str(tmp_path / 'out.pth'), config=TINY)
    assert not (tmp_path / 'out.pth').exists()


def test_every_key_is_mapped_or_refused(ours):
    official = _official(ours)
    for key in official:
        if key.startswith(DECODER):
            assert _official_name(map_errseg_decoder_key(key)) == key
    with pytest.raises(KeyError, match='unknown ERR-Seg decoder key.*conv9'):
        map_errseg_decoder_key(DECODER + 'conv9.weight')
    with pytest.raises(KeyError, match=r'unknown ERR-Seg decoder keys.*conv9'):
        errseg_decoder_to_mmseg({DECODER + 'conv9.weight': torch.zeros(1)})
    with pytest.raises(TypeError, match='expected a checkpoint dict'):
        convert_errseg([1, 2])
    with pytest.raises(ValueError, match='not named tensors'):
        convert_errseg(dict(model=dict(official, iteration=3)))


@pytest.mark.parametrize('width, name', [(128, 'convnext_base_w_320'),
                                         (192, 'convnext_large_d_320'), (96, 'custom')])
def test_the_architecture_is_read_from_the_stem_width(ours, width, name):
    official = _official(ours)
    stem = official[STEM]
    official[STEM] = torch.zeros(width, *stem.shape[1:])
    converted = convert_errseg(dict(model=official))
    assert converted.architecture == converted.summary == name
    if width in ERRSEG_ARCHITECTURES:
        assert ERRSEG_ARCHITECTURES[width][1] == name
        assert get_format('errseg_official').default_configs[name] == \
            f"configs/errseg_convnext_{'base' if width == 128 else 'large'}.py"


def test_another_architecture_and_converted_files_are_refused(tool, ours, tmp_path):
    torch.save(dict(model=_official(ours)), tmp_path / 'tiny.pth')
    with pytest.raises(ValueError, match='no default config'):  # neither ERR-Seg-B nor -L
        tool.convert(str(tmp_path / 'tiny.pth'), str(tmp_path / 'out.pth'))
    torch.save(dict(state_dict=ours), tmp_path / 'converted.pth')
    with pytest.raises(ValueError, match='already converted'):
        tool.convert(str(tmp_path / 'converted.pth'), str(tmp_path / 'out.pth'), config=TINY)


def test_the_model_zoo_entries_use_this_format():
    """configs/errseg/metafile.yaml: every model's config is the format's default config for its
    CLIP, and published weights are official checkpoints on the Hub, converted on first use."""
    with open(osp.join(ROOT, 'configs', 'errseg', 'metafile.yaml')) as f:
        models = yaml.safe_load(f)['Models']
    defaults = get_format('errseg_official').default_configs
    assert {m['Name'] for m in models} == {'errseg_convnext_base', 'errseg_convnext_large'}
    for model in models:
        clip = re.fullmatch(r'ConvNeXt-[BL] \((\w+)\)', model['Metadata']['CLIP'])[1]
        assert model['Config'] == defaults[clip], model['Name']
        if model.get('Weights'):
            assert model['Weights'].startswith('https://huggingface.co/lchen1019/ERR-Seg/')
            assert model.get('Converter') == 'errseg_official', model['Name']


def test_the_official_decoder_keys_map_to_distinct_parameters(conformance):
    """Every key of the official Decoder's state dict (230 in errseg_decoder_eval.pt) names a
    distinct parameter of our neck and head built with that file's config, of the same shape."""
    data = conformance('errseg_decoder_eval.pt')
    cfg, official = data['config'], data['state_dict_official']
    assert len(official) == 230 and all(k.startswith(DECODER) for k in official)
    neck, head = build_errseg_decoder(cfg)
    targets = {f'neck.{k}': v for k, v in neck.state_dict().items()}
    targets.update({f'decode_head.{k}': v for k, v in head.state_dict().items()})
    mapped = {key: map_errseg_decoder_key(key) for key in official}
    assert len(set(mapped.values())) == len(official)  # distinct
    assert set(mapped.values()) == set(targets)  # onto every parameter of ours
    for key, ours_key in mapped.items():
        assert official[key].shape == targets[ours_key].shape, (key, ours_key)
    assert errseg_decoder_to_mmseg(official).keys() == set(targets)
