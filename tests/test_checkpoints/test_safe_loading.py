"""MMEngine checkpoints load under torch >= 2.6 through our safe local loader."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmseg_escnet
from mmseg_escnet.checkpoints.safe_loading import load_local_checkpoint


@pytest.fixture(autouse=True)
def our_loaders():
    """MMEngine's CheckpointLoader reads local files with our loader (as our tools make it)."""
    mmseg_escnet.register_checkpoint_loaders()


class NotAllowed:
    """A type that no checkpoint loader should unpickle silently."""


def _mmengine_like_checkpoint():
    buffer = HistoryBuffer()
    buffer.update(0.5)
    buffer.update(0.25)
    return {
        'state_dict': {'w': torch.arange(4.0)},
        'meta': {'iter': np.int64(12), 'seed': np.int32(3), 'lr': np.float64(1e-4),
                 'hist': np.arange(3), 'dataset_meta': {'classes': ('a', 'b')}},
        'message_hub': {'log_scalars': {'train/loss': buffer}},
    }


def test_plain_torch_load_refuses_mmengine_checkpoint(tmp_path):
    # The problem being fixed: torch's default weights_only unpickler rejects these files.
    path = tmp_path / 'ckpt.pth'
    torch.save(_mmengine_like_checkpoint(), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)


def test_checkpoint_loader_round_trip(tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save(_mmengine_like_checkpoint(), path)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.arange(4.0))
    assert loaded['meta']['iter'] == 12 and isinstance(loaded['meta']['iter'], np.int64)
    assert loaded['meta']['lr'] == 1e-4
    np.testing.assert_array_equal(loaded['meta']['hist'], np.arange(3))
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.mean() == pytest.approx(0.375)


def test_untrusted_object_is_refused_with_its_name(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': NotAllowed()}, path)
    with pytest.raises(pickle.UnpicklingError, match='NotAllowed'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_local_checkpoint(str(tmp_path / 'missing.pth'))


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    # An unrestricted getattr lets a file reach any callable (arbitrary code execution); only
    # HistoryBuffer's registered statistics are served.
    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, 'update')

    path = tmp_path / 'sneaky.pth'
    torch.save({'x': Sneaky()}, path)
    with pytest.raises(pickle.UnpicklingError, match='update'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def _flip_a_bit_in_the_tensor_data(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def test_flipped_bits_are_refused_with_the_file_name(tmp_path):
    """torch's zip reader loads such a file silently; the CRC-32 check refuses it."""
    from mmseg_escnet.checkpoints.safe_loading import CheckpointIntegrityError
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': {'w': torch.arange(100_000.0)}}, path)
    assert torch.equal(load_local_checkpoint(str(path))['state_dict']['w'], torch.arange(100_000.0))
    _flip_a_bit_in_the_tensor_data(path)
    torch.load(path, weights_only=True)  # what happened before: no complaint
    with pytest.raises(CheckpointIntegrityError,
                       match=r"checkpoint .*ckpt\.pth is corrupt: it has a corrupt record "
                             r"'ckpt/data/0' \(CRC-32 mismatch\)"):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    # memory-mapped loads (official downloads, verified by their hash when fetched) skip it
    load_local_checkpoint(str(path), mmap=True)


def test_sha256_sidecar_is_checked(tmp_path):
    from mmseg_escnet.checkpoints.safe_loading import (CheckpointIntegrityError, file_sha256,
                                                       write_sha256_sidecar)
    path = tmp_path / 'iter_8.pth'
    torch.save(_mmengine_like_checkpoint(), path)
    sidecar = write_sha256_sidecar(str(path))
    assert sidecar == str(path) + '.sha256'
    assert (tmp_path / 'iter_8.pth.sha256').read_text() == f'{file_sha256(str(path))}  iter_8.pth\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_8.pth', 'iter_8.pth.sha256']
    load_local_checkpoint(str(path))
    load_local_checkpoint(str(path), mmap=True)
    # another (valid) checkpoint under the same name: the sidecar tells
    torch.save({'state_dict': {'w': torch.zeros(3)}}, path)
    for mmap in (False, True):
        with pytest.raises(CheckpointIntegrityError,
                           match=r'checkpoint .*iter_8\.pth is corrupt or was replaced: its '
                                 r'SHA-256 is [0-9a-f]{16}\.\.\., its sidecar '
                                 r'.*iter_8\.pth\.sha256 records'):
            load_local_checkpoint(str(path), mmap=mmap)
    (tmp_path / 'iter_8.pth.sha256').write_text('garbage\n')
    with pytest.raises(CheckpointIntegrityError, match=r'iter_8\.pth\.sha256 is not a SHA-256 '
                                                       r'sidecar'):
        load_local_checkpoint(str(path))


def test_refused_legacy_checkpoint_names_what_it_holds(tmp_path):
    """A legacy (pre-zip) file holding a Python object is refused naming that object, read
    statically from its pickles (nothing is run)."""
    import argparse
    path = str(tmp_path / 'legacy.pth')
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'args': argparse.Namespace(lr=1)}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError) as error:
        load_local_checkpoint(path)
    assert 'argparse.Namespace' in str(error.value) and 'see below' not in str(error.value)
