"""MMEngine checkpoints load under torch >= 2.6 through our safe local loader."""
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

import mmseg_escnet  # noqa: F401  (installs the loader)
from mmseg_escnet.checkpoints.safe_loading import load_local_checkpoint


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
