"""Crash-safe checkpoints: a kill at any moment of a save keeps a checkpoint to resume from, and
the resumed run ends with the weights of an uninterrupted one."""
import os
import os.path as osp
import signal
import subprocess
import sys

import pytest
import torch

from mmseg_escnet.engine import checkpoint_hook
from mmseg_escnet.engine.checkpoint_hook import find_resume_checkpoint, is_readable_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
KILLER = osp.join(osp.dirname(osp.abspath(__file__)), 'kill_during_save.py')


def _train(work_dir, data_root, *extra, env=None, script=None):
    options = [
        'train_cfg.max_iters=10', 'train_cfg.val_interval=100', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=1',
        'train_dataloader.batch_size=2', f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.dataset.splits.train=8', 'train_dataloader.dataset.splits.val=4']
    args = [sys.executable, script or 'tools/train.py', CONFIG, '--work-dir', str(work_dir),
            *extra, '--cfg-options', *options]
    run_env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(args, cwd=ROOT, env=run_env, capture_output=True, text=True,
                          timeout=600)


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp('uninterrupted')
    proc = _train(root / 'work', root / 'data')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p for p in os.listdir(root / 'work') if p.endswith('.pth')) == ['iter_10.pth']
    return dict(weights=_weights(root / 'work' / 'iter_10.pth'), data=root / 'data')


@pytest.mark.slow
def test_kills_during_saves_then_resumes_give_the_uninterrupted_weights(uninterrupted, tmp_path):
    """max_keep_ckpts=1, a save every 2 iterations; the run is killed at three moments of three
    saves and resumed after each kill; it ends with the weights of the uninterrupted run."""
    work = tmp_path / 'work'
    for step, stage, expected in [(4, 'writing', 'iter_2.pth'), (6, 'published', 'iter_4.pth'),
                                  (8, 'pointed', 'iter_8.pth')]:
        args = ('--resume', ) if step > 4 else ()
        proc = _train(work, uninterrupted['data'], *args,
                      env=dict(KILL_AT=str(step), KILL_STAGE=stage), script=KILLER)
        assert proc.returncode == -signal.SIGKILL, (stage, proc.stderr[-3000:])
        resume_from = find_resume_checkpoint(str(work))  # something survived the kill
        assert resume_from is not None and osp.basename(resume_from) == expected, stage
        assert is_readable_checkpoint(resume_from)
    proc = _train(work, uninterrupted['data'], '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [p for p in os.listdir(work) if '.tmp-' in p]  # leftovers of the kills removed
    final = _weights(work / 'iter_10.pth')
    assert final.keys() == uninterrupted['weights'].keys()
    for key, value in uninterrupted['weights'].items():
        assert torch.equal(final[key], value), key


def _save(path, step):
    torch.save(dict(state_dict=dict(w=torch.full((2, ), float(step))), meta=dict(iter=step)),
               path)


def test_resume_falls_back_to_the_newest_readable_checkpoint(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(checkpoint_hook, 'print_log', lambda msg, **kwargs: warnings.append(msg))
    for step in (2, 4, 6):
        _save(tmp_path / f'iter_{step}.pth', step)
    data = (tmp_path / 'iter_6.pth').read_bytes()
    (tmp_path / 'iter_6.pth').write_bytes(data[:len(data) // 2])  # cut short
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_6.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    # last_checkpoint naming a deleted file (MMEngine's own hook after a kill)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_8.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    assert 'iter_8.pth, which does not exist; resuming from' in warnings[-1], warnings
    # a readable last_checkpoint wins over newer files
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert find_resume_checkpoint(str(empty)) is None


def test_every_config_saves_with_the_safe_hook():
    import glob
    from mmengine.config import Config
    for path in glob.glob(osp.join(ROOT, 'configs', '*.py')):
        cfg = Config.fromfile(path)
        assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook', path
        assert {h['type'] for h in cfg.custom_hooks} >= {'CheckpointFitHook',
                                                        'VocabularyCheckHook'}, path


LIMITER = osp.join(osp.dirname(osp.abspath(__file__)), 'limited_write.py')


@pytest.mark.slow
def test_full_disk_save_cleans_up_and_resume_frees_space(uninterrupted, tmp_path):
    """A file-size limit (EFBIG, like ENOSPC on a full disk): the failed save removes its
    temporary file and says what it needed; the log file that cannot be written is reported on
    one line (no 'Logging error' tracebacks); --resume first removes the temporary files of dead
    processes; the final checkpoint carries its SHA-256 sidecar."""
    import hashlib
    work = tmp_path / 'work'
    proc = _train(work, uninterrupted['data'], env=dict(FSIZE_LIMIT=str(2_000_000)),
                  script=LIMITER)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('tools/train.py: error: [Errno 27] cannot save the checkpoint '
                           f'{work / "iter_2.pth"}: File too large'), last
    assert 'it needs about ' in last and ' MB, ' in last and f'free on the disk of {work}' in last
    assert 'its temporary file was removed' in last
    assert not [p for p in os.listdir(work) if '.tmp-' in p or p.endswith('.pth')]

    # leftovers of a dead process (removed) and of a running one (this test process: kept)
    dead = subprocess.Popen(['true'])
    dead.wait()
    stale = work / f'.iter_2.pth.tmp-{dead.pid}'
    stale.write_bytes(b'\0' * 1000)
    alive = work / f'.iter_2.pth.tmp-{os.getpid()}'
    alive.write_bytes(b'\0' * 10)
    # a limit the log file (environment and config dump) soon exceeds
    proc = _train(work, uninterrupted['data'], '--resume', env=dict(FSIZE_LIMIT=str(12_000)),
                  script=LIMITER)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert f'removed {stale}, left by an interrupted or failed save' in out
    assert not stale.exists() and alive.exists()
    assert 'Logging error' not in out and 'Traceback' not in out
    assert out.count('cannot write the log file') == 1
    last = proc.stderr.strip().splitlines()[-1]  # whatever write failed first names the place
    assert last.startswith('tools/train.py: error: [Errno 27]') and str(work) in last, last
    alive.unlink()

    proc = _train(work, uninterrupted['data'], '--resume')
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = work / 'iter_10.pth'
    sidecar = (work / 'iter_10.pth.sha256').read_text().split()
    assert sidecar == [hashlib.sha256(final.read_bytes()).hexdigest(), 'iter_10.pth']
    assert sorted(p for p in os.listdir(work) if '.pth' in p) == ['iter_10.pth',
                                                                  'iter_10.pth.sha256']


def test_resume_skips_a_checkpoint_that_fails_its_hash(tmp_path, monkeypatch):
    from mmseg_escnet.checkpoints.safe_loading import write_sha256_sidecar
    warnings = []
    monkeypatch.setattr(checkpoint_hook, 'print_log', lambda msg, **kwargs: warnings.append(msg))
    for step in (2, 4):
        _save(tmp_path / f'iter_{step}.pth', step)
        write_sha256_sidecar(str(tmp_path / f'iter_{step}.pth'))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_4.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')
    data = bytearray((tmp_path / 'iter_4.pth').read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit
    (tmp_path / 'iter_4.pth').write_bytes(bytes(data))
    assert find_resume_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    assert 'iter_4.pth, which is corrupt or was replaced: its SHA-256 is' in warnings[-1]


def test_remove_stale_temporary_files(tmp_path):
    dead = subprocess.Popen(['true'])
    dead.wait()
    names = [f'.iter_2.pth.tmp-{dead.pid}', f'last_checkpoint.tmp-{dead.pid}',
             f'.iter_4.pth.sha256.tmp-{dead.pid}', f'.iter_6.pth.tmp-{os.getpid()}',
             '.hidden', 'iter_8.pth', '.x.tmp-notapid']
    for name in names:
        (tmp_path / name).write_text('x')
    removed = checkpoint_hook.remove_stale_temporary_files(str(tmp_path))
    assert sorted(osp.basename(p) for p in removed) == sorted(names[:3])
    assert sorted(os.listdir(tmp_path)) == sorted(names[3:])
    assert checkpoint_hook.remove_stale_temporary_files(str(tmp_path / 'none')) == []
