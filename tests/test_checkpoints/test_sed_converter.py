"""tools/model_converters/sed2mmseg.py: official SED checkpoints -> our SED, every key checked.

The decoder's official names are checked against the official code's own state dict in
tests/test_models/test_sed/test_sed_conformance.py, the CLIP tower's (open_clip's names) in
tests/test_models/test_backbones/test_clip_convnext.py; here a whole checkpoint written under those
names is converted and loaded strictly into a config.
"""
import os.path as osp

import pytest
import torch
from conftest import build_random_tiny_model

import mmseg_escnet  # noqa: F401
from mmseg_escnet.checkpoints.convert import get_format
from mmseg_escnet.checkpoints.sed_official import convert_sed

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'sed_tiny_synthetic.py')
DECODER = 'sem_seg_head.predictor.transformer.'
CLIP = 'sem_seg_head.predictor.clip_model.'
#: mmpretrain's ConvNeXt block names -> the official decoder's
OFFICIAL_CNEXT = {'depthwise_conv': 'dwconv', 'pointwise_conv1': 'pwconv1',
                  'pointwise_conv2': 'pwconv2'}


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/model_converters/sed2mmseg.py')


@pytest.fixture(scope='module')
def ours():
    return build_random_tiny_model('sed').state_dict()


def _official(state):
    """Our state dict under the official SED names (a detectron2 checkpoint's 'model')."""
    out = {}
    for key, value in state.items():
        part, rest = key.split('.', 1)
        if part == 'backbone':
            out[CLIP + rest[len('clip_model.'):]] = value
        else:
            for ours_name, official in OFFICIAL_CNEXT.items():
                rest = rest.replace(f'cnext.{ours_name}.', f'cnext.{official}.')
            out[DECODER + rest] = value
    return out


def test_round_trip_through_the_tool(tool, ours, tmp_path):
    official = _official(ours)
    official[CLIP + 'attn_mask'] = torch.zeros(16, 16)  # an older open_clip's causal mask
    src = tmp_path / 'model_final.pth'
    torch.save(dict(model=official, iteration=79999), src)
    meta = tool.convert(str(src), str(tmp_path / 'out' / 'sed.pth'), config=TINY)
    converted = torch.load(tmp_path / 'out' / 'sed.pth', weights_only=True)
    assert meta['num_tensors'] == len(ours) and meta['architecture'] == 'custom'
    assert converted['state_dict'].keys() == ours.keys()
    assert all(torch.equal(converted['state_dict'][k], v) for k, v in ours.items())
    assert get_format('sed_official').convert is convert_sed  # the model zoo's converter


@pytest.mark.parametrize('edit, match', [
    (lambda s: s.update({DECODER + 'text_guidance_projection.0.weight': torch.zeros(1)}),
     'not part of SED.*text_guidance_projection'),
    (lambda s: s.update({'backbone.layers.0.weight': torch.zeros(1)}), 'not part of SED'),
    (lambda s: s.pop(DECODER + 'head.weight'), 'not a complete SED checkpoint'),
    (lambda s: s.update({DECODER + 'head0.weight': torch.zeros(1)}), 'shape mismatch.*head0'),
])
def test_bad_checkpoints_are_refused(tool, ours, tmp_path, edit, match):
    official = _official(ours)
    edit(official)
    torch.save(dict(model=official), tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=match):
        tool.convert(str(tmp_path / 'bad.pth'), str(tmp_path / 'out.pth'), config=TINY)


def test_another_architecture_and_converted_files_are_refused(tool, ours, tmp_path):
    torch.save(dict(model=_official(ours)), tmp_path / 'tiny.pth')
    with pytest.raises(ValueError, match='no default config'):  # neither SED-B nor SED-L
        tool.convert(str(tmp_path / 'tiny.pth'), str(tmp_path / 'out.pth'))
    torch.save(dict(state_dict=ours), tmp_path / 'converted.pth')
    with pytest.raises(ValueError, match='already converted'):
        tool.convert(str(tmp_path / 'converted.pth'), str(tmp_path / 'out.pth'), config=TINY)
