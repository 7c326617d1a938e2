"""Config loading and CPU-distributed setup used by tools/train.py and tools/test.py."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

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
