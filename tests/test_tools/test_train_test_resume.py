"""End to end through the tools: train, test on the local checkpoint, resume, and a 2-process DDP run.

These run tools/train.py, tools/test.py and tools/dist_train.sh as a user would, on the tiny
synthetic config with a handful of iterations (the full quick start is measured in the README).
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
TINY_CONFIGS = [CONFIG, osp.join(ROOT, 'configs', 'escnet_tiny_synthetic.py')]
pytestmark = pytest.mark.slow


def _options(data_root, iters):
    return [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1',
        f'param_scheduler.0.end={iters}', f'param_scheduler.0.T_max={iters}',
        'train_dataloader.batch_size=2',
        f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.dataset.splits.train=8', 'train_dataloader.dataset.splits.val=4',
        f'val_dataloader.dataset.data_root={data_root}',
        'val_dataloader.dataset.splits.train=8', 'val_dataloader.dataset.splits.val=4',
        f'test_dataloader.dataset.data_root={data_root}',
        'test_dataloader.dataset.splits.train=8', 'test_dataloader.dataset.splits.val=4',
    ]


def _run(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc.stdout + proc.stderr


def _scalars(work_dir):
    """All json log records written by the Runner under work_dir."""
    records = []
    for dirpath, _, files in os.walk(work_dir):
        for name in files:
            if name.endswith('.json') and name != 'scalars.json':
                with open(osp.join(dirpath, name)) as f:
                    records += [json.loads(line) for line in f if line.strip()]
    return records


@pytest.mark.parametrize('config', TINY_CONFIGS, ids=osp.basename)
def test_train_test_resume(tmp_path, config):
    data_root = str(tmp_path / 'data')
    work_dir = str(tmp_path / 'work')
    _run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
          '--cfg-options', *_options(data_root, 4)], cwd=ROOT)
    ckpt = osp.join(work_dir, 'iter_4.pth')
    assert osp.isfile(ckpt)
    # our own Runner checkpoint holds message_hub / numpy meta: must load under torch >= 2.6
    out = _run([sys.executable, 'tools/test.py', config, ckpt, '--work-dir', str(tmp_path / 'test'),
                '--cfg-options', *_options(data_root, 4)], cwd=ROOT)
    assert 'mIoU' in out
    assert any('mIoU' in r for r in _scalars(str(tmp_path / 'test')))
    # --resume continues from iter 4 up to 6 (fails if the checkpoint could not be read)
    out = _run([sys.executable, 'tools/train.py', config, '--work-dir', work_dir, '--resume',
                '--cfg-options', *_options(data_root, 6)], cwd=ROOT)
    assert 'resumed' in out.lower() or 'Load checkpoint' in out
    assert osp.isfile(osp.join(work_dir, 'iter_6.pth'))
    state = torch.load(osp.join(work_dir, 'iter_6.pth'), map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 6
    if config == CONFIG:
        _corrupt_checkpoint_is_refused(tmp_path, config, data_root,
                                       osp.join(work_dir, 'iter_6.pth'))


def _corrupt_checkpoint_is_refused(tmp_path, config, data_root, ckpt):
    """Training wrote the checkpoint's SHA-256 beside it; tools/test.py and --resume refuse a copy
    with one flipped bit (torch's reader would load it and evaluate wrong weights)."""
    import hashlib
    import shutil
    with open(ckpt, 'rb') as f:
        data = bytearray(f.read())
    with open(ckpt + '.sha256', encoding='utf-8') as f:
        assert f.read().split() == [hashlib.sha256(data).hexdigest(), osp.basename(ckpt)]
    flipped = tmp_path / 'flipped'
    flipped.mkdir()
    copy = str(flipped / 'iter_6.pth')
    shutil.copy(ckpt + '.sha256', copy + '.sha256')
    data[len(data) // 2] ^= 0x08
    with open(copy, 'wb') as f:
        f.write(bytes(data))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, 'tools/test.py', config, copy, '--work-dir',
                           str(tmp_path / 'test_flipped'), '--cfg-options',
                           *_options(data_root, 4)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'tools/test.py: error: checkpoint {copy} is corrupt or was replaced: '
                           'its SHA-256 is'), last
    assert 'mIoU: ' not in proc.stdout + proc.stderr  # no evaluation of the wrong weights


DDP_CONFIGS = [*TINY_CONFIGS, *(osp.join(ROOT, 'configs', f'{name}_tiny_synthetic.py')
                               for name in ('sed', 'lmseg', 'errseg'))]


@pytest.mark.parametrize('config', DDP_CONFIGS, ids=osp.basename)
def test_dist_train_and_test_two_processes_gloo(tmp_path, config):
    """2 CPU processes over gloo through the launch scripts: DDP needs a gradient for every
    trainable parameter from the second iteration on, and every process must exit 0. Testing
    with tools/dist_test.sh is checked for CAT-Seg and ESC-Net (the sharding and the gathering of
    the metric are the same for every family)."""
    data_root = str(tmp_path / 'data')
    work_dir = str(tmp_path / 'work')
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT=str(29500 + os.getpid() % 1000))
    args = ['bash', 'tools/dist_train.sh', config, '2', '--work-dir', work_dir,
            '--cfg-options', *_options(data_root, 4)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # 2 processes, gloo
    assert 'terminate called' not in log
    ckpt = osp.join(work_dir, 'iter_4.pth')
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 4
    if config not in TINY_CONFIGS:  # evaluation under 2 processes does not depend on the family
        return
    args = ['bash', 'tools/dist_test.sh', config, ckpt, '2', '--work-dir', str(tmp_path / 'test'),
            '--cfg-options', *_options(data_root, 4)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    assert 'mIoU' in log and 'terminate called' not in log


def _children(pid):
    """Pids of the direct children of ``pid`` (from /proc)."""
    children = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def _rank_pid(launcher_pid, rank):
    """Pid of the torchrun worker of ``rank`` (its RANK environment variable), or None."""
    for pid in _children(launcher_pid):
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = f.read().split(b'\0')
        except OSError:
            continue
        if f'RANK={rank}'.encode() in env:
            return pid
    return None


@pytest.mark.skipif(not osp.isdir('/proc') or torch.cuda.is_available(),
                    reason='needs /proc and a CPU (gloo) run')
def test_frozen_rank_ends_the_run_after_the_timeout(tmp_path):
    """A rank frozen with SIGSTOP during training: the other rank gives up after the collective
    time-out ($MMSEG_ESCNET_DIST_TIMEOUT, 20 s here) with a message naming the stalled rank, and
    the launch ends with a non-zero status instead of hanging for 30 minutes."""
    import signal
    import time
    data_root = str(tmp_path / 'data')
    work_dir = str(tmp_path / 'work')
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT=str(30500 + os.getpid() % 1000),
               MMSEG_ESCNET_DIST_TIMEOUT='20')
    args = ['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir', work_dir,
            '--cfg-options', *_options(data_root, 2000)]
    log_path = tmp_path / 'launch.log'
    frozen = None
    with open(log_path, 'w') as log_file:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while 'Iter(train) [' not in log_path.read_text():  # rank 0 logs every iteration
            assert proc.poll() is None, log_path.read_text()[-5000:]
            assert time.monotonic() < deadline, 'training did not start'
            time.sleep(0.5)
        frozen = _rank_pid(proc.pid, 1)
        assert frozen is not None, 'rank 1 not found among the launcher\'s children'
        os.kill(frozen, signal.SIGSTOP)
        returncode = proc.wait(timeout=120)  # 20 s time-out + torchrun stopping the workers
    finally:
        if frozen is not None:
            try:
                os.kill(frozen, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:  # the launcher hangs: stop its workers, then it
            for pid in _children(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert returncode != 0
    assert 'rank 0 of 2 waited 20 s in a collective operation and gave up: rank 1 stalled' in log
    assert 'MMSEG_ESCNET_DIST_TIMEOUT' in log
