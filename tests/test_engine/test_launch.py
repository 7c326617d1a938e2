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
