"""tools/publish_model.py: strip training state, name the file with its own SHA-256."""
import hashlib
import importlib.util
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.runner import load_checkpoint

from mmseg_escnet.checkpoints.download import ChecksumError, download_checkpoint
from mmseg_escnet.checkpoints.safe_loading import load_local_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_checkpoints'))
from http_server import LocalHTTPServer  # noqa: E402

_spec = importlib.util.spec_from_file_location('publish_model',
                                               osp.join(ROOT, 'tools', 'publish_model.py'))
publish_model = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(publish_model)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


@pytest.fixture
def training_checkpoint(tmp_path, model):
    """A checkpoint as MMEngine's Runner writes it (message hub, optimizer, NumPy meta)."""
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    hub = MessageHub.get_instance('publish_model_test')
    hub.update_scalar('train/loss', 0.5)
    state = model.state_dict()
    big = torch.arange(100_000, dtype=torch.float32)
    state['extra.view'] = big[10:20]  # a view of a large storage
    state['extra.transposed'] = torch.randn(3, 5).t()  # not contiguous
    checkpoint = {
        'meta': {'epoch': np.int64(0), 'iter': np.int64(4), 'seed': 0,
                 'cfg': "model = dict(type='X')\n", 'experiment_name': 'run', 'time': '20260101',
                 'mmengine_version': '0.10.7',
                 'dataset_meta': {'classes': ('sky', 'grass'), 'palette': [[0, 0, 1], [0, 1, 0]],
                                  'label_map': np.arange(3)}},
        'state_dict': state,
        'message_hub': hub.state_dict(),
        'optimizer': optimizer.state_dict(),
        'param_schedulers': [{'last_step': 4}],
    }
    path = str(tmp_path / 'iter_4.pth')
    torch.save(checkpoint, path)
    return path, state


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_publish_strips_and_names_by_own_hash(training_checkpoint, tmp_path, capsys):
    source, state = training_checkpoint
    final = publish_model.main([source, str(tmp_path / 'out' / 'catseg_depth.pth')])
    sha = _sha256(final)
    # the name carries the hash of the written file; '.pth' stripped as a suffix, not characters
    assert osp.basename(final) == f'catseg_depth-{sha[:8]}.pth'
    assert os.listdir(tmp_path / 'out') == [osp.basename(final)]  # no temporary file left
    printed = capsys.readouterr().out
    assert f'published {final}' in printed and f'SHA-256: {sha}' in printed
    assert f'Weights: https://<host>/<path>/catseg_depth-{sha[:8]}.pth' in printed
    assert f'    Weights SHA-256: {sha}' in printed
    published = torch.load(final, map_location='cpu', weights_only=True)  # plain types only
    assert set(published) == {'state_dict', 'meta'}
    assert set(published['state_dict']) == set(state)
    for name, tensor in published['state_dict'].items():
        assert tensor.is_contiguous() and torch.equal(tensor, state[name]), name
    meta = published['meta']
    assert (meta['source_iter'], meta['source_epoch']) == (4, 0)
    assert type(meta['source_iter']) is int
    assert meta['config'] == "model = dict(type='X')\n"
    assert meta['dataset_meta'] == {'classes': ['sky', 'grass'],
                                    'palette': [[0, 0, 1], [0, 1, 0]], 'label_map': [0, 1, 2]}
    assert meta['trained_with_mmengine'] == '0.10.7'
    assert re.fullmatch(r'\d+\.\d+\.\d+.*', meta['mmseg_escnet_version'])
    # the view did not drag its 400 kB storage along
    assert osp.getsize(final) < osp.getsize(source) and osp.getsize(final) < 100_000
    # reproducible: publishing the same checkpoint again gives the same bytes, hence the same name
    again = publish_model.main([source, str(tmp_path / 'again' / 'catseg_depth.pth')])
    assert osp.basename(again) == osp.basename(final) and _sha256(again) == sha


def test_publish_as_safetensors_loads_everywhere_like_the_pth(training_checkpoint, tmp_path,
                                                            model):
    """OUT_FILE.safetensors: the same tensors and meta as the .pth, read by the package's loader
    and by MMEngine's load_checkpoint (no unpickling), named by its own hash, reproducible."""
    source, state = training_checkpoint
    pth = torch.load(publish_model.main([source, str(tmp_path / 'a' / 'm.pth')]),
                     weights_only=True)
    final = publish_model.main([source, str(tmp_path / 'b' / 'm.safetensors')])
    sha = _sha256(final)
    assert osp.basename(final) == f'm-{sha[:8]}.safetensors'
    loaded = load_local_checkpoint(final)
    assert loaded['meta'] == pth['meta']
    assert loaded['state_dict'].keys() == pth['state_dict'].keys()
    assert all(torch.equal(loaded['state_dict'][k], v) for k, v in pth['state_dict'].items())
    target = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    load_checkpoint(target, final, map_location='cpu', strict=False)  # MMEngine's loader
    assert all(torch.equal(target.state_dict()[k], model.state_dict()[k])
               for k in target.state_dict())
    again = publish_model.main([source, str(tmp_path / 'c' / 'm.safetensors')])
    assert _sha256(again) == sha


def test_refuses_files_that_are_not_training_checkpoints(tmp_path, model):
    plain = str(tmp_path / 'plain.pth')
    torch.save(model.state_dict(), plain)
    with pytest.raises(ValueError, match=r'plain\.pth: no state_dict in the checkpoint \(top-level '
                       r"keys: \['0\.bias'"):
        publish_model.main([plain, str(tmp_path / 'out.pth')])
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match=r'garbage\.pth is not a torch checkpoint'):
        publish_model.main([str(garbage), str(tmp_path / 'out.pth')])
    with pytest.raises(FileNotFoundError, match=r'checkpoint file not found: .*missing\.pth'):
        publish_model.main([str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth')])
    bad = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': {'w': torch.zeros(1), 'note': 'text'}}, bad)
    with pytest.raises(ValueError, match=r"state_dict entry 'note' is a str, not a tensor"):
        publish_model.main([bad, str(tmp_path / 'out.pth')])
    assert not [n for n in os.listdir(tmp_path) if n.startswith('out')]


def test_unwritable_output_folder_fails_before_reading(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('a regular file: no folder can be made below it')
    with pytest.raises(OSError, match=r'cannot write the published checkpoint into .*file/sub'):
        publish_model.main([str(tmp_path / 'missing.pth'), str(blocker / 'sub' / 'out.pth')])


def test_published_file_downloads_with_verification(training_checkpoint, tmp_path, model):
    source, _ = training_checkpoint
    served = tmp_path / 'served'
    final = publish_model.main([source, str(served / 'tiny.pth')])
    name = osp.basename(final)
    with LocalHTTPServer(str(served)) as server:
        url = server.url(name)  # the hash comes from the '-<sha8>' name alone
        path = download_checkpoint(url, progress=False)
        assert _sha256(path) == _sha256(final)
        other = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        load_checkpoint(other, url, map_location='cpu', strict=False)
        assert torch.equal(other[2].weight, model[2].weight)
        with open(final, 'r+b') as f:  # the server now has other bytes under the same name
            f.seek(osp.getsize(final) // 2)
            f.write(b'\x00corrupt\x00')
        with pytest.raises(ChecksumError, match=rf'but {name[-12:-4]} was expected'):
            download_checkpoint(url, cache_dir=str(tmp_path / 'other_cache'), progress=False)


def test_output_folder_and_corrupt_input(training_checkpoint, tmp_path):
    source, _ = training_checkpoint
    folder = tmp_path / 'zoo'
    final = publish_model.main([source, str(folder) + os.sep])  # a new folder, named with '/'
    assert osp.dirname(final) == str(folder)
    assert re.fullmatch(r'iter_4-[0-9a-f]{8}\.pth', osp.basename(final))
    again = publish_model.main([source, str(folder)])  # an existing folder
    assert again == final
    assert not [p for p in os.listdir(tmp_path) if p.startswith('zoo-')]  # nothing beside it

    data = bytearray(open(source, 'rb').read())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the tensors
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r'checkpoint .*corrupt\.pth is corrupt: it has a corrupt '
                                         r'record .*CRC-32 mismatch'):
        publish_model.main([str(corrupt), str(tmp_path / 'out') + os.sep])
    # with a sidecar (written by training), the hash decides
    from mmseg_escnet.checkpoints.safe_loading import write_sha256_sidecar
    write_sha256_sidecar(source)
    with open(source, 'r+b') as f:
        f.seek(0, os.SEEK_END)
        f.write(b'\0')  # the zip still reads, the hash differs
    with pytest.raises(ValueError, match=r'iter_4\.pth is corrupt or was replaced: its SHA-256'):
        publish_model.main([source, str(tmp_path / 'out2.pth')])
    assert not osp.exists(tmp_path / 'out') or not os.listdir(tmp_path / 'out')


def _front_matter(path):
    import yaml
    text = open(path, encoding='utf-8').read()
    assert text.startswith('---\n')
    return yaml.safe_load(text.split('---\n')[1]), text


def test_hub_folder_with_card_config_and_results(training_checkpoint, tmp_path, capsys):
    import json
    source, state = training_checkpoint
    summary = tmp_path / 'eval_all.json'
    summary.write_text(json.dumps(dict(config='c.py', results=dict(
        a150=dict(mIoU=31.25, aAcc=70.0), pas20=dict(mIoU=94.5)))))
    out = tmp_path / 'hub'
    assert publish_model.main([source, 'catseg_vitb16', '--hub-folder', str(out),
                               '--license', 'apache-2.0', '--eval-all', str(summary)]) == str(out)
    printed = capsys.readouterr().out
    # published again (same bytes, same name): nothing else in the folder, no warning; weights of
    # an earlier publish are named in a warning
    stale = out / 'catseg_vitb16-0badc0de.safetensors'
    stale.write_bytes(b'old')
    publish_model.main([source, 'catseg_vitb16', '--hub-folder', str(out), '--license',
                        'apache-2.0', '--eval-all', str(summary)])
    assert 'also holds catseg_vitb16-0badc0de.safetensors from an earlier publish' in \
        capsys.readouterr().err
    stale.unlink()
    assert f'hf upload <user>/catseg_vitb16 {out}' in printed
    files = sorted(os.listdir(out))
    weights = [f for f in files if f.endswith('.safetensors')]  # the Hub's format
    assert files == sorted(weights + ['README.md', 'config.py']) and len(weights) == 1
    sha = _sha256(out / weights[0])
    assert weights[0] == f'catseg_vitb16-{sha[:8]}.safetensors'
    loaded = load_local_checkpoint(str(out / weights[0]))
    assert loaded['state_dict'].keys() == state.keys()
    assert all(torch.equal(loaded['state_dict'][k], v) for k, v in state.items())
    assert loaded['meta']['dataset_meta']['classes'] == ['sky', 'grass']
    assert (out / 'config.py').read_text() == "model = dict(type='X')\n"  # the training config
    meta, text = _front_matter(out / 'README.md')
    assert meta['license'] == 'apache-2.0' and meta['library_name'] == 'mmseg_escnet'
    assert meta['pipeline_tag'] == 'image-segmentation'
    assert {'image-segmentation', 'open-vocabulary', 'CAT-Seg'} <= set(meta['tags'])
    assert meta['datasets'] == ['COCO-Stuff-171']
    results = meta['model-index'][0]['results']  # only this checkpoint's own numbers
    assert [(r['dataset']['name'], r['metrics'][0]['value']) for r in results] == [
        ('ADE20K-150', 31.25), ('PASCAL-VOC-20', 94.5)]
    assert all('source' not in r for r in results)  # self-reported
    assert sha in text and 'Training classes: sky, grass.' in text
    # the architecture's published numbers, with their source, in the text only
    assert ('| ADE20K-150 | 31.8 | paper: CAT-Seg (CVPR 2024) Table 1 '
            '(https://arxiv.org/abs/2303.11797) |') in text
    assert '| ADE20K-150 | 31.2 |' in text and 'From tools/eval_all.py (eval_all.json).' in text


def test_hub_folder_refuses_bad_input(training_checkpoint, tmp_path):
    source, _ = training_checkpoint
    with pytest.raises(ValueError, match='not a Hugging Face Hub repository name'):
        publish_model.main([source, 'my model', '--hub-folder', str(tmp_path / 'a')])
    junk = tmp_path / 'junk.json'
    junk.write_text('{"results": {"a151": {"mIoU": 1}}}')
    with pytest.raises(ValueError, match=r"unknown benchmarks \['a151'\]"):
        publish_model.main([source, 'mine', '--hub-folder', str(tmp_path / 'b'), '--eval-all',
                            str(junk)])
    junk.write_text('not json')
    with pytest.raises(ValueError, match='not a readable eval_all.json'):
        publish_model.main([source, 'mine', '--hub-folder', str(tmp_path / 'c'), '--eval-all',
                            str(junk)])
    with pytest.raises(SystemExit):  # card options without --hub-folder
        publish_model.main([source, str(tmp_path / 'd.pth'), '--license', 'mit'])
    # a name outside the model zoo, no licence: 'other', no results, the checkpoint's config
    out = tmp_path / 'e'
    publish_model.main([source, 'my-model.v1', '--hub-folder', str(out)])
    meta, _ = _front_matter(out / 'README.md')
    assert meta['license'] == 'other' and 'model-index' not in meta and 'datasets' not in meta
