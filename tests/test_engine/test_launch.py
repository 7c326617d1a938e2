"""Config loading and CPU-distributed setup used by tools/train.py and tools/test.py."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg_escnet.engine import launch
from mmseg_escnet.engine.launch import (check_zoo_checkpoint, enable_amp, load_config,
                                        prepare_distributed)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')


def test_load_config_overrides_and_work_dir():
    cfg = load_config(TINY, cfg_options={'train_cfg.max_iters': 7, 'model.test_vocabulary': 'ade150'})
    assert cfg.train_cfg.max_iters == 7 and cfg.model.test_vocabulary == 'ade150'
    assert cfg.work_dir == osp.join('./work_dirs', 'catseg_tiny_synthetic')
    assert load_config(TINY, work_dir='/tmp/x').work_dir == '/tmp/x'
    with pytest.raises(FileNotFoundError, match='no_such.py'):
        load_config('no_such.py')
    with pytest.raises(ValueError, match='launcher'):
        load_config(TINY, launcher='k8s')


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU behaviour')
def test_cpu_distributed_setup(monkeypatch):
    cfg = load_config(TINY)
    assert prepare_distributed(cfg) is cfg and 'model_wrapper_cfg' not in cfg  # launcher none
    cfg = load_config(TINY, launcher='pytorch')
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match='torchrun'):
        prepare_distributed(cfg)
    with pytest.raises(RuntimeError, match='launcher'):
        prepare_distributed(load_config(TINY, launcher='slurm'))


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU behaviour')
def test_amp_refused_on_cpu():
    with pytest.raises(RuntimeError, match='--amp needs a CUDA device'):
        enable_amp(Config(dict(optim_wrapper=dict(type='OptimWrapper'))))


def test_zoo_weights_must_fit_the_config():
    """zoo://NAME is checked against the config before MMEngine's non-strict load_from."""
    def config(name):
        return load_config(osp.join(ROOT, 'configs', name))

    check_zoo_checkpoint(config('catseg_vitb16_a150.py'), 'zoo://catseg_vitb16')  # fits
    check_zoo_checkpoint(config('catseg_vitb16_a150.py'), 'work_dirs/x.pth')       # not checked
    with pytest.raises(ValueError, match=r"'catseg_vitb16' are for the model of .*catseg_vitb16.py, "
                       r"but .*catseg_vitl14_a150.py builds another one: "
                       r"model.backbone.model_name is 'ViT-L-14-336' here and 'ViT-B-16' there"):
        check_zoo_checkpoint(config('catseg_vitl14_a150.py'), 'zoo://catseg_vitb16')
    with pytest.raises(ValueError, match=r'model.neck.type is .ESCNeck. here and .CATSegAggregator'):
        check_zoo_checkpoint(config('escnet_vitb16.py'), 'zoo://catseg_vitb16')


def _lr_at_the_end(cfg):
    """The learning rate the config's schedulers give at the last iteration."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    model = torch.nn.Linear(2, 2)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optim_wrapper))
                  for s in cfg.param_scheduler]
    for _ in range(cfg.train_cfg.max_iters - 1):
        optim_wrapper.step()
        for scheduler in schedulers:
            scheduler.step()
    return optim_wrapper.get_lr()['lr'][0]


@pytest.mark.parametrize('config', ['catseg_tiny_synthetic.py', 'escnet_vitl14.py'])
def test_schedule_follows_max_iters(config):
    """--cfg-options train_cfg.max_iters=N shortens the cosine schedule with it."""
    path = osp.join(ROOT, 'configs', config)
    cfg = load_config(path, cfg_options={'train_cfg.max_iters': 40})
    assert cfg.param_scheduler[0].end == 40 and cfg.param_scheduler[0].T_max == 40
    base = Config.fromfile(path).optim_wrapper.optimizer.lr
    assert _lr_at_the_end(cfg) < 0.01 * base  # annealed to (almost) zero
    stale = Config.fromfile(path)
    stale.merge_from_dict({'train_cfg.max_iters': 40})  # what MMEngine alone does
    assert _lr_at_the_end(stale) > 0.9 * base


def test_explicit_schedule_is_kept_and_a_misfit_warns(monkeypatch):
    cfg = load_config(TINY, cfg_options={'train_cfg.max_iters': 40, 'param_scheduler.0.end': 30})
    assert cfg.param_scheduler[0].end == 30  # the user's own schedule is not touched
    messages = []
    monkeypatch.setattr(launch, 'print_log', lambda msg, **kwargs: messages.append(msg))
    cfg = Config(dict(train_cfg=dict(max_iters=40), param_scheduler=[
        dict(type='LinearLR', by_epoch=False, begin=0, end=500),  # warm-up beyond the new end
        dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=600, T_max=600)]))
    launch.follow_max_iters(cfg, 600)
    assert cfg.param_scheduler[1].end == 40 and cfg.param_scheduler[1].T_max == 40
    assert cfg.param_scheduler[0].end == 500
    assert any('LinearLR ends at iteration 500, after train_cfg.max_iters=40' in m
               for m in messages), messages


def test_dist_timeout_setting(monkeypatch):
    """env_cfg.dist_cfg.timeout (seconds), overridden by $MMSEG_ESCNET_DIST_TIMEOUT."""
    monkeypatch.delenv(launch.DIST_TIMEOUT_ENV, raising=False)
    assert launch.dist_timeout(Config(dict())) == launch.DEFAULT_DIST_TIMEOUT == 1800
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=300))))
    assert launch.dist_timeout(cfg) == 300
    monkeypatch.setenv(launch.DIST_TIMEOUT_ENV, '20')
    assert launch.dist_timeout(cfg) == 20
    for bad in ('0', '-5', 'soon', 'inf'):
        monkeypatch.setenv(launch.DIST_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=r'\$MMSEG_ESCNET_DIST_TIMEOUT must be a positive '
                                             r'number of seconds.*collective time-out'):
            launch.dist_timeout(cfg)
    monkeypatch.delenv(launch.DIST_TIMEOUT_ENV)
    with pytest.raises(ValueError, match='env_cfg.dist_cfg.timeout must be a positive'):
        launch.dist_timeout(Config(dict(env_cfg=dict(dist_cfg=dict(timeout=0)))))


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU behaviour')
def test_dist_timeout_reaches_the_process_group(monkeypatch):
    import datetime
    calls = []
    monkeypatch.setattr(launch.dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(launch.dist, 'init_process_group',
                        lambda **kwargs: calls.append(kwargs))
    for key, value in dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT='29999').items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(launch.DIST_TIMEOUT_ENV, '42')
    cfg = prepare_distributed(load_config(TINY, launcher='pytorch'))
    assert calls == [dict(backend='gloo', timeout=datetime.timedelta(seconds=42))]
    assert cfg.env_cfg.dist_cfg.timeout == 42  # what MMEngine's init_dist reads (CUDA runs)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'


@pytest.mark.parametrize('value', [0, -5, 2.5, '100'])
def test_train_length_must_be_positive(value):
    cfg = load_config(TINY, cfg_options={'train_cfg.max_iters': value})
    assert cfg.param_scheduler[0].end == 600  # not stretched to a meaningless length
    with pytest.raises(ValueError, match=rf'train_cfg.max_iters must be a positive whole number '
                                         rf'.*got {value!r}'):
        launch.check_train_length(cfg)
    launch.check_train_length(load_config(TINY, cfg_options={'train_cfg.max_iters': 1}))
    with pytest.raises(ValueError, match='train_cfg.max_epochs must be a positive'):
        launch.check_train_length(Config(dict(train_cfg=dict(max_epochs=0))))


def test_train_tool_names_max_iters(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, 'tools/train.py', TINY, '--work-dir', str(tmp_path),
                           '--cfg-options', 'train_cfg.max_iters=0'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        'tools/train.py: error: train_cfg.max_iters must be a positive whole number (the length '
        'of the training and of the learning-rate schedule), got 0 (--debug shows the traceback)')


def test_collective_timeout_is_recognised(monkeypatch):
    monkeypatch.setattr(launch.dist, 'is_initialized', lambda: True)
    gloo = RuntimeError('[third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out '
                        'waiting 20000ms for recv operation to complete')
    assert launch.is_collective_timeout(gloo)
    assert not launch.is_collective_timeout(RuntimeError('HTTP read timeout for https://x'))
    assert not launch.is_collective_timeout(ValueError('gloo timed out'))
    monkeypatch.setattr(launch.dist, 'get_rank', lambda: 1)
    monkeypatch.setattr(launch.dist, 'get_world_size', lambda: 4)
    monkeypatch.setenv(launch.DIST_TIMEOUT_ENV, '20')
    message = launch.collective_timeout_message(gloo, Config(dict()))
    assert message.startswith('rank 1 of 4 waited 20 s in a collective operation and gave up: '
                              'one of the ranks [0, 2, 3] stalled or died')
    assert 'env_cfg.dist_cfg.timeout or $MMSEG_ESCNET_DIST_TIMEOUT' in message
    assert message.endswith('Timed out waiting 20000ms for recv operation to complete')
