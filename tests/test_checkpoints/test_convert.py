"""The convert-and-check driver: formats table, strict check against a config, sidecar, errors.

A small format ('test_linear': ``{'model': {'lin.w', 'lin.b'}}`` -> ``fc.*``) and a model
registered for the test keep this independent of the real models, which the converter tests
(test_catseg_converter.py, test_sed_converter.py, test_clip_official.py) cover.
"""
import dataclasses
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmseg.registry import MODELS

from mmseg_escnet.checkpoints import catseg_official, clip_official, errseg_official, sed_official
from mmseg_escnet.checkpoints.convert import (FORMATS, Converted, OfficialFormat,
                                              convert_and_check)
from mmseg_escnet.checkpoints.safe_loading import (CheckpointIntegrityError, file_sha256,
                                                   load_local_checkpoint, read_sha256_sidecar)


@MODELS.register_module(name='ConvertTestNet', force=True)
class ConvertTestNet(nn.Module):
    """What the test config builds."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)


def _convert(checkpoint, extra=None):
    """Official names -> ours; ``extra`` adds entries (to break the fit)."""
    state = {'fc.weight': checkpoint['model']['lin.w'], 'fc.bias': checkpoint['model']['lin.b']}
    state.update(extra or {})
    return Converted(state, 'linear-4x3', architecture='4x3', meta=dict(width=4))


@pytest.fixture
def fmt(monkeypatch):
    fmt = OfficialFormat('test_linear', 'linear', _convert, default_configs={'8x3': 'none.py'})
    monkeypatch.setitem(FORMATS, fmt.name, fmt)
    return fmt


@pytest.fixture
def files(tmp_path):
    """An official file and a config whose model it fits."""
    torch.manual_seed(0)
    net = ConvertTestNet()
    src = tmp_path / 'official.pth'
    torch.save(dict(model={'lin.w': net.fc.weight.data, 'lin.b': net.fc.bias.data},
                    iteration=7), src)
    config = tmp_path / 'net.py'
    config.write_text("model = dict(type='ConvertTestNet')\n")
    return str(src), str(config), net


def test_the_official_formats():
    assert {name: fmt.convert for name, fmt in FORMATS.items()} == {
        'catseg_official': catseg_official.convert_catseg,
        'sed_official': sed_official.convert_sed,
        'errseg_official': errseg_official.convert_errseg,
        'clip_official': clip_official.convert_clip}
    assert FORMATS['clip_official'].read is clip_official.read_clip_file


def test_round_trip_strict_check_and_sidecar(fmt, files, tmp_path):
    src, config, net = files
    dst = str(tmp_path / 'out' / 'converted.pth')
    result = convert_and_check('test_linear', src, dst, config, converter='a tool',
                               meta=dict(note='x'))
    assert result.report() == (f'converted 2 tensors (linear-4x3), loads strictly into '
                               f'{osp.abspath(config)} -> {dst}')
    saved = load_local_checkpoint(dst)  # checked against its sidecar
    assert saved['meta'] == dict(source=src, format='test_linear', converter='a tool',
                                 architecture='4x3', config=osp.abspath(config), width=4,
                                 num_tensors=2, note='x')
    assert saved['meta'] == result.meta
    assert saved['state_dict'].keys() == net.state_dict().keys()
    assert all(torch.equal(saved['state_dict'][k], v) for k, v in net.state_dict().items())
    assert read_sha256_sidecar(dst) == file_sha256(dst)
    assert not osp.exists(dst + '.part')

    torch.save(dict(state_dict={}), dst)  # replaced behind the sidecar's back
    with pytest.raises(CheckpointIntegrityError, match='converted.pth is corrupt or was replaced'):
        load_local_checkpoint(dst)
    convert_and_check('test_linear', src, dst, config)  # a new conversion, a new sidecar
    assert load_local_checkpoint(dst)['meta']['converter'] == 'test_linear'


def test_weights_that_do_not_fit_are_named_and_not_written(fmt, files, tmp_path, monkeypatch):
    src, config, _ = files
    monkeypatch.setitem(FORMATS, fmt.name, dataclasses.replace(fmt, convert=lambda ckpt: _convert(
        ckpt, {'fc.bias': torch.zeros(2), 'head.weight': torch.zeros(1)})))
    dst = tmp_path / 'out.pth'
    with pytest.raises(ValueError, match=(
            rf"^{src}: the converted weights do not fit {config}: unexpected keys "
            r"\['head\.weight'\]; shape mismatch \['fc\.bias: checkpoint \(2,\) vs model \(3,\)'\]$"
    )):
        convert_and_check('test_linear', src, str(dst), config)
    assert not dst.exists()


def test_default_config_and_no_check(fmt, files, tmp_path):
    src, _, _ = files
    dst = str(tmp_path / 'out.pth')
    with pytest.raises(ValueError, match=rf'^{src}: no default config for a 4x3 linear '
                       r'checkpoint; pass --config \(there are defaults for 8x3\)$'):
        convert_and_check('test_linear', src, dst)
    result = convert_and_check('test_linear', src, dst, check=False)  # the model zoo's way
    assert 'config' not in result.meta and result.report().endswith('(linear-4x3) -> ' + dst)


def test_bad_formats_and_converters(fmt, files, tmp_path, monkeypatch):
    src, config, _ = files
    with pytest.raises(KeyError, match=r"unknown official checkpoint format 'nope'; known: \["):
        convert_and_check('nope', src, str(tmp_path / 'out.pth'))
    monkeypatch.setitem(FORMATS, fmt.name, dataclasses.replace(
        fmt, convert=lambda checkpoint: {'fc.bias': torch.zeros(3)}))
    with pytest.raises(TypeError, match=r"'test_linear' converter must return a Converted .*"
                       r'official\.pth, got dict'):
        convert_and_check('test_linear', src, str(tmp_path / 'out.pth'), config)
