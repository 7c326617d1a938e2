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


DDP_CONFIGS = [*TINY_CONFIGS, *(osp.join(ROOT, 'configs', f'{name}_tiny_synthetic.py')
                               for name in ('sed', 'lmseg'))]


@pytest.mark.parametrize('config', DDP_CONFIGS, ids=osp.basename)
def test_dist_train_and_test_two_processes_gloo(tmp_path, config):
    """2 CPU processes over gloo through the launch scripts: DDP needs a gradient for every
    trainable parameter from the second iteration on, and every process must exit 0."""
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
    args = ['bash', 'tools/dist_test.sh', config, ckpt, '2', '--work-dir', str(tmp_path / 'test'),
            '--cfg-options', *_options(data_root, 4)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    assert 'mIoU' in log and 'terminate called' not in log
