"""safetensors_io: our checkpoints as safetensors (tensors + JSON meta), read without unpickling."""
import os

import pytest
import torch
from safetensors.torch import save_file

from mmseg_escnet.checkpoints.safe_loading import checkpoint_file_problem, load_local_checkpoint
from mmseg_escnet.checkpoints.safetensors_io import (META_KEY, is_safetensors,
                                                     load_safetensors_checkpoint,
                                                     read_safetensors_meta,
                                                     save_safetensors_checkpoint)


def test_round_trip_with_tied_and_viewed_tensors(tmp_path):
    shared = torch.randn(4, 3)
    state = {'a.weight': shared, 'b.weight': shared, 'c.view': torch.arange(10.)[2:5],
             'd.t': torch.randn(2, 3).t(), 'e.half': torch.randn(5).half()}
    meta = {'dataset_meta': {'classes': ['sky', 'grass']}, 'source_iter': 4}
    path = str(tmp_path / 'w.safetensors')
    save_safetensors_checkpoint({'state_dict': state, 'meta': meta}, path)
    assert is_safetensors(path) and checkpoint_file_problem(path) is None
    loaded = load_local_checkpoint(path, map_location='cpu')  # the package's one loader
    assert loaded['meta'] == meta and loaded['state_dict'].keys() == state.keys()
    assert read_safetensors_meta(path) == meta  # from the header alone
    for name, tensor in state.items():
        assert torch.equal(loaded['state_dict'][name], tensor), name
        assert loaded['state_dict'][name].dtype == tensor.dtype
    # a file of another library (no meta of ours) loads with an empty meta
    other = str(tmp_path / 'other.safetensors')
    save_file({'x': torch.ones(2)}, other)
    assert load_safetensors_checkpoint(other)['meta'] == {}


def test_same_checkpoint_same_bytes(tmp_path):
    """safetensors writes its metadata in hash-map order; the header is made canonical, so the
    published name (its hash) does not depend on the run."""
    state = {f'layer{i}.weight': torch.randn(3, 2) for i in range(20)}
    meta = {'dataset_meta': {'classes': ['café', 'sky']}, 'b': 1, 'a': [1, 2]}
    blobs = set()
    for k in range(6):
        path = str(tmp_path / f'w{k}.safetensors')
        save_safetensors_checkpoint({'state_dict': state, 'meta': meta}, path)
        blobs.add(open(path, 'rb').read())
    assert len(blobs) == 1
    assert load_local_checkpoint(path)['meta'] == meta


def test_bad_files_are_one_error_naming_the_file(tmp_path):
    path = str(tmp_path / 'w.safetensors')
    save_safetensors_checkpoint({'state_dict': {'x': torch.randn(100)}}, path)
    data = open(path, 'rb').read()
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(data[:-50])
    assert checkpoint_file_problem(str(cut)).startswith('is cut short: its header announces')
    with pytest.raises(ValueError, match=r'cut\.safetensors is cut short'):
        load_local_checkpoint(str(cut))
    bad_meta = str(tmp_path / 'bad_meta.safetensors')
    save_file({'x': torch.ones(1)}, bad_meta, metadata={META_KEY: 'not json'})
    with pytest.raises(ValueError, match="bad_meta.safetensors: its 'mmseg_escnet.meta' metadata"):
        load_local_checkpoint(bad_meta)
    with pytest.raises(ValueError, match='named tensor'):
        save_safetensors_checkpoint({'state_dict': {'x': 1.0}}, str(tmp_path / 'n.safetensors'))
    for meta, message in (({'o': object()}, 'meta cannot be written as JSON'),
                          ({'nan': float('nan')}, 'meta cannot be written as JSON'),
                          ({'t': (1, 2)}, 'does not survive JSON unchanged'),
                          ({1: 'a'}, 'does not survive JSON unchanged')):
        with pytest.raises(ValueError, match=message):
            save_safetensors_checkpoint({'state_dict': {'x': torch.ones(1)}, 'meta': meta},
                                        str(tmp_path / 'm.safetensors'))
    with pytest.raises(ValueError, match="'s' is a torch.sparse_coo tensor"):
        save_safetensors_checkpoint({'state_dict': {'s': torch.eye(2).to_sparse()}},
                                    str(tmp_path / 's.safetensors'))
    with pytest.raises(ValueError, match='map_location must be a device'):
        load_local_checkpoint(path, map_location={'cpu': 'cpu'})
    # a sidecar written by training or the cache guards a safetensors file too
    from mmseg_escnet.checkpoints.safe_loading import (CheckpointIntegrityError,
                                                       write_sha256_sidecar)
    write_sha256_sidecar(path)
    flipped = bytearray(data)
    flipped[-10] ^= 1
    with open(path, 'wb') as f:
        f.write(bytes(flipped))
    os.utime(path, ns=(1, 1))
    with pytest.raises(CheckpointIntegrityError, match='is corrupt or was replaced'):
        load_local_checkpoint(path)
