"""Model-zoo names: the index, weights by name, ``zoo://``, converters, tools/test.py NAME."""
import hashlib
import importlib.util
import logging
import os
import os.path as osp
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn as nn
import yaml
from filelock import FileLock
from http_server import LocalHTTPServer
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmseg_escnet
from mmseg_escnet.checkpoints import Converted
from mmseg_escnet.checkpoints.convert import FORMATS, OfficialFormat, get_format, register_format
from mmseg_escnet.checkpoints.download import (cache_path, default_cache_dir, download_checkpoint,
                                               file_sha256)
from mmseg_escnet.checkpoints.model_zoo import (fetch_weights, get_model, list_models,
                                                load_model_index, resolve_checkpoint_arg)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
CALLS = []


def _test_converter(checkpoint):
    """A 'third-party' checkpoint {'model': {'lin.w', 'lin.b'}} -> Net's names, values x 2."""
    CALLS.append(sorted(checkpoint['model']))
    return Converted({'fc.weight': checkpoint['model']['lin.w'] * 2,
                      'fc.bias': checkpoint['model']['lin.b'] * 2}, 'linear')


TEST_FORMAT = OfficialFormat('test_linear', 'linear', _test_converter)


@pytest.fixture(autouse=True)
def registered_test_converter(monkeypatch):
    monkeypatch.setitem(FORMATS, 'test_linear', TEST_FORMAT)
    CALLS.clear()
    mmseg_escnet.register_checkpoint_loaders()  # zoo:// through MMEngine


class Net(BaseModule):
    """A small module with a child, as init_cfg / load_from see a segmentor."""

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc = nn.Linear(4, 3)


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return Net()


def _write_yaml(path, data):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        yaml.safe_dump(data, f, sort_keys=False)


@pytest.fixture
def zoo(tmp_path, monkeypatch, linear):
    """A served folder, a model index in tmp_path and MMSEG_ESCNET_MODEL_INDEX pointing to it."""
    served = tmp_path / 'served'
    served.mkdir()
    torch.save({'state_dict': linear.state_dict(), 'meta': {'iter': 3}}, served / 'linear.pth')
    torch.save({'model': {'lin.w': linear.fc.weight.data, 'lin.b': linear.fc.bias.data},
                'iteration': 9}, served / 'third_party.pth')
    sha = hashlib.sha256((served / 'linear.pth').read_bytes()).hexdigest()
    with LocalHTTPServer(str(served)) as server:
        index = tmp_path / 'zoo' / 'model-index.yml'
        _write_yaml(str(index), {'Import': ['configs/tiny/metafile.yaml']})
        _write_yaml(str(tmp_path / 'zoo' / 'configs' / 'tiny' / 'metafile.yaml'), {
            'Collections': [{'Name': 'Tiny', 'README': 'configs/tiny/README.md'}],
            'Models': [
                {'Name': 'small_linear', 'In Collection': 'Tiny', 'Config': 'configs/small.py',
                 'Metadata': {'Training Data': 'none'},
                 'Results': [{'Task': 'Semantic Segmentation', 'Dataset': 'X',
                              'Metrics': {'mIoU': 1.5}}],
                 'Weights': server.url('linear.pth'), 'Weights SHA-256': sha.upper()},
                {'Name': 'converted_linear', 'In Collection': 'Tiny',
                 'Config': 'configs/small.py', 'Weights': server.url('third_party.pth'),
                 'Converter': 'test_linear'},
                {'Name': 'unpublished', 'In Collection': 'Tiny', 'Config': 'configs/u.py',
                 'Weights': None},
            ]})
        monkeypatch.setenv('MMSEG_ESCNET_MODEL_INDEX', str(index))
        server.sha = sha
        yield server


def test_index_entries(zoo, tmp_path):
    assert list_models() == ['converted_linear', 'small_linear', 'unpublished']
    assert list_models('*_linear') == ['converted_linear', 'small_linear']
    info = get_model('small_linear')
    assert (info.name, info.collection, info.sha256, info.converter) == ('small_linear', 'Tiny',
                                                                          zoo.sha, None)
    assert info.config == str(tmp_path / 'zoo' / 'configs' / 'small.py')  # relative to the index
    assert info.weights == zoo.url('linear.pth') and info.metadata == {'Training Data': 'none'}
    assert info.results[0]['Metrics'] == {'mIoU': 1.5}
    assert get_model('converted_linear').converter == 'test_linear'
    assert get_model('unpublished').weights is None


def test_unknown_name_suggests_close_matches(zoo):
    with pytest.raises(KeyError, match=r"unknown model-zoo name 'smal_linear'.*did you mean "
                       r'small_linear\?.*list_models\(\) lists the 3 known names'):
        get_model('smal_linear')


def test_entry_without_weights(zoo):
    with pytest.raises(FileNotFoundError, match=r"'unpublished' has no published weights \(no "
                       r'Weights in .*metafile\.yaml\); train it with `python tools/train.py '
                       r'.*configs/u\.py`'):
        fetch_weights('unpublished')


def test_zoo_scheme_through_mmengine(zoo, linear):
    other = Net()
    load_checkpoint(other, 'zoo://small_linear', map_location='cpu')
    assert torch.equal(other.fc.weight, linear.fc.weight)
    assert torch.equal(other.fc.bias, linear.fc.bias)
    cached = cache_path(zoo.url('linear.pth'), default_cache_dir())
    assert fetch_weights('small_linear') == cached
    zoo.stop()  # offline from here: the verified cache
    net = Net(init_cfg=dict(type='Pretrained', checkpoint='zoo://small_linear'))
    assert not torch.equal(net.fc.weight, linear.fc.weight)
    net.init_weights()
    assert torch.equal(net.fc.weight, linear.fc.weight)
    assert torch.equal(net.fc.bias, linear.fc.bias)


def test_converter_runs_once_and_is_reused(zoo, linear):
    path = fetch_weights('converted_linear')
    download = cache_path(zoo.url('third_party.pth'), default_cache_dir())
    assert path == download + '.converted.pth'
    assert CALLS == [['lin.b', 'lin.w']]
    saved = torch.load(path, map_location='cpu', weights_only=True)
    assert torch.equal(saved['state_dict']['fc.weight'], linear.fc.weight.data * 2)
    assert saved['meta']['converter'] == saved['meta']['format'] == 'test_linear'
    assert saved['meta']['source'] == zoo.url('third_party.pth')  # the stamp wins
    with open(path + '.sha256') as f:  # the training checkpoints' sidecar, checked on load
        assert f.read().split() == [file_sha256(path), osp.basename(path)]
    assert fetch_weights('converted_linear') == path
    other = Net()
    load_checkpoint(other, 'zoo://converted_linear', map_location='cpu')
    assert torch.equal(other.fc.bias, linear.fc.bias.data * 2)
    assert len(CALLS) == 1  # converted once, reused twice
    assert len(zoo.requests) == 1
    with open(path, 'wb') as f:  # a damaged conversion is redone from the cached download
        f.write(b'damaged')
    assert fetch_weights('converted_linear') == path and len(CALLS) == 2
    assert torch.equal(torch.load(path, weights_only=True)['state_dict']['fc.bias'],
                       linear.fc.bias.data * 2)
    assert len(zoo.requests) == 1


def test_conversion_waits_for_another_process(zoo):
    """A process that finds the conversion locked waits, then uses the other process's file."""
    download = download_checkpoint(zoo.url('third_party.pth'), progress=False)
    converted = download + '.converted.pth'
    logger, messages = MMLogger.get_current_instance(), []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    other_process = FileLock(converted + '.lock')  # another file descriptor: another holder
    other_process.acquire()
    results = []
    waiting = threading.Thread(target=lambda: results.append(fetch_weights('converted_linear')))
    try:
        waiting.start()
        deadline = time.monotonic() + 30
        while not any('is locked by another process' in m for m in messages):
            assert time.monotonic() < deadline and waiting.is_alive(), messages
            time.sleep(0.01)
        # the other process writes its conversion (recognisable values) and releases the lock
        theirs = {'fc.weight': torch.full((3, 4), 7.0), 'fc.bias': torch.zeros(3)}
        stamp = dict(converter='test_linear', source=zoo.url('third_party.pth'),
                     source_sha256=file_sha256(download))
        torch.save({'state_dict': theirs, 'meta': stamp}, converted)
    finally:
        other_process.release()
        waiting.join(timeout=30)
        logger.removeHandler(handler)
    assert results == [converted] and CALLS == []  # not converted a second time
    saved = torch.load(converted, map_location='cpu', weights_only=True)['state_dict']
    assert torch.equal(saved['fc.weight'], theirs['fc.weight'])


def _served_weights(tmp_path, name, state_dict):
    """Write ``{'state_dict': ...}`` as ``<tmp>/served/<name>``; returns (folder, its SHA-256)."""
    served = tmp_path / 'served'
    served.mkdir()
    torch.save({'state_dict': state_dict}, served / name)
    return served, hashlib.sha256((served / name).read_bytes()).hexdigest()


def test_index_hash_wins_over_a_dated_file_name(tmp_path, monkeypatch, linear):
    """``Weights SHA-256`` overrides a ``-<8 digits>`` name suffix that is a date, not a hash."""
    served, sha = _served_weights(tmp_path, 'iter_80000-20240115.pth', linear.state_dict())
    index = tmp_path / 'model-index.yml'
    with LocalHTTPServer(str(served)) as server:
        _write_yaml(str(index), {'Models': [{'Name': 'dated', 'Config': 'c.py',
                                             'Weights': server.url('iter_80000-20240115.pth'),
                                             'Weights SHA-256': sha}]})
        monkeypatch.setenv('MMSEG_ESCNET_MODEL_INDEX', str(index))
        path = fetch_weights('dated')
    with open(path, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha


def test_index_errors(tmp_path, monkeypatch):
    monkeypatch.setenv('MMSEG_ESCNET_MODEL_INDEX', str(tmp_path / 'missing.yml'))
    with pytest.raises(FileNotFoundError, match=r'model index file not found: .*missing\.yml'):
        list_models()
    index = str(tmp_path / 'model-index.yml')
    _write_yaml(index, {'Import': ['a.yaml', 'b.yaml']})
    _write_yaml(str(tmp_path / 'a.yaml'), {'Models': [{'Name': 'm', 'Config': 'c.py'}]})
    _write_yaml(str(tmp_path / 'b.yaml'), {'Models': [{'Name': 'm', 'Config': 'd.py'}]})
    with pytest.raises(ValueError, match=r"'m' is defined twice: in .*a\.yaml and in .*b\.yaml"):
        load_model_index(index)
    _write_yaml(str(tmp_path / 'b.yaml'), {'Models': [{'Name': 'n', 'Config': 'd.py',
                                                       'Converter': 'nope'}]})
    with pytest.raises(ValueError, match=r"b\.yaml: model 'n' names the unknown Converter 'nope'"):
        load_model_index(index)
    _write_yaml(str(tmp_path / 'b.yaml'), {'Models': [{'Name': 'n', 'Config': 'd.py',
                                                       'Weights SHA-256': 'xyz'}]})
    with pytest.raises(ValueError, match=r"model 'n': Weights SHA-256 must be 8 to 64 hex"):
        load_model_index(index)
    _write_yaml(str(tmp_path / 'b.yaml'), {'Models': [{'Name': 'n'}]})
    with pytest.raises(ValueError, match=r"b\.yaml: model 'n' has no Config"):
        load_model_index(index)
    _write_yaml(index, {'Import': ['gone.yaml']})
    with pytest.raises(FileNotFoundError, match=r'gone\.yaml \(named by .*model-index\.yml\)'):
        load_model_index(index)


def test_register_format(monkeypatch):
    with pytest.raises(KeyError, match="'test_linear' is already registered"):
        register_format(TEST_FORMAT)
    with pytest.raises(TypeError, match='expected an OfficialFormat, got function'):
        register_format(_test_converter)
    with pytest.raises(KeyError, match=r"unknown official checkpoint format 'other'; known: \["):
        get_format('other')
    other = OfficialFormat('test_linear', 'other', _test_converter)
    assert register_format(other, force=True) is other and get_format('test_linear') is other


def test_repository_index():
    """The real model-index.yml is readable and its converters are known."""
    names = list_models()
    assert 'catseg_vitb16' in names and 'escnet_vitl14' in names
    info = get_model('catseg_vitb16')
    assert osp.isfile(info.config) and info.config == osp.join(ROOT, 'configs', 'catseg_vitb16.py')
    assert info.converter == 'catseg_official' and info.weights.startswith('https://')


def test_resolve_checkpoint_arg(zoo, tmp_path):
    local = tmp_path / 'local.pth'
    local.write_bytes(b'x')
    assert resolve_checkpoint_arg(str(local)) == str(local)
    assert resolve_checkpoint_arg('https://h/x.pth') == 'https://h/x.pth'
    assert resolve_checkpoint_arg('small_linear') == 'zoo://small_linear'
    with pytest.raises(FileNotFoundError, match=r"'small_lin' is not an existing file, not a URL "
                       r'and not a model-zoo name .*Did you mean small_linear\?'):
        resolve_checkpoint_arg('small_lin')


def _tool_main(tool: str = 'test.py'):
    spec = importlib.util.spec_from_file_location('tool_under_test', osp.join(ROOT, 'tools', tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize('tool', ['test.py', 'eval_all.py'])
def test_tools_refuse_unknown_checkpoint_before_building(zoo, monkeypatch, capsys, tool):
    monkeypatch.setattr(sys, 'argv', [f'tools/{tool}', TINY_CONFIG, 'no_such_model'])
    monkeypatch.setenv('LOCAL_RANK', '0')  # the tools export it; restored afterwards
    with pytest.raises(SystemExit) as exit_info:
        _tool_main(tool)()
    assert exit_info.value.code == 2  # argparse's usage error, raised while parsing
    assert ("argument checkpoint: checkpoint 'no_such_model' is not an existing file, not a URL "
            'and not a model-zoo name') in capsys.readouterr().err


def test_tools_test_with_a_zoo_name(tmp_path, monkeypatch):
    """tools/test.py CONFIG NAME downloads the verified weights and evaluates them."""
    from mmseg.registry import MODELS

    import mmseg_escnet  # noqa: F401  (registers the models)
    init_default_scope('mmseg')
    cfg = Config.fromfile(TINY_CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    served, sha = _served_weights(tmp_path, 'tiny_catseg.pth', model.state_dict())
    index = tmp_path / 'model-index.yml'
    with LocalHTTPServer(str(served)) as server:
        _write_yaml(str(index), {'Models': [{'Name': 'tiny_catseg', 'Config': TINY_CONFIG,
                                             'Weights': server.url('tiny_catseg.pth'),
                                             'Weights SHA-256': sha}]})
        data_root = str(tmp_path / 'data')
        options = [f'test_dataloader.dataset.data_root={data_root}',
                   'test_dataloader.dataset.splits.train=2', 'test_dataloader.dataset.splits.val=2']
        env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT,
                   MMSEG_ESCNET_MODEL_INDEX=str(index))
        proc = subprocess.run(
            [sys.executable, 'tools/test.py', TINY_CONFIG, 'tiny_catseg', '--work-dir',
             str(tmp_path / 'work'), '--cfg-options', *options],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'Loads checkpoint by model_zoo backend from path: zoo://tiny_catseg' in out
    assert 'missing keys' not in out and 'unexpected key' not in out
    assert 'mIoU' in out
    assert [r.status for r in server.requests] == [200]
    cached = cache_path(server.url('tiny_catseg.pth'), osp.join(str(tmp_path), 'escnet_cache',
                                                                 'checkpoints'))
    assert hashlib.sha256(open(cached, 'rb').read()).hexdigest() == sha
