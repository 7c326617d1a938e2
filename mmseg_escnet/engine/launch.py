"""Config loading and process-group setup shared by ``tools/train.py`` and ``tools/test.py``.

MMEngine's ``pytorch`` launcher assumes CUDA (``init_dist`` calls ``torch.cuda.set_device``, and the
Runner gives DDP ``device_ids=[local_rank]``). On a machine without CUDA we create a ``gloo`` process
group ourselves (MMEngine then skips its own ``init_dist``) and wrap the model in DDP without
``device_ids``, so ``tools/dist_train.sh CONFIG N`` also runs on CPUs.
"""
import argparse
import gc
import logging
import os
import os.path as osp
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..checkpoints.model_zoo import get_model, resolve_checkpoint_arg

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
#: Config keys that decide whether a model's weights fit another config's model.
ARCHITECTURE_KEYS = ('type', 'backbone.type', 'backbone.model_name', 'backbone.model_cfg',
                     'neck.type', 'decode_head.type')


def load_config(config: str, *, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Read a config file, apply ``--cfg-options`` and choose the work dir.

    Args:
        config (str): Path of the config file.
        cfg_options (dict, optional): Overrides in ``key=value`` form (already parsed).
        work_dir (str, optional): Work directory; defaults to ``./work_dirs/<config stem>``.
        launcher (str): One of ``'none'``, ``'pytorch'``, ``'slurm'``, ``'mpi'``.

    Returns:
        Config: The merged config.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        max_iters = (cfg.get('train_cfg') or {}).get('max_iters')
        cfg.merge_from_dict(cfg_options)
        if not any(key.startswith('param_scheduler') for key in cfg_options):
            follow_max_iters(cfg, max_iters)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def follow_max_iters(cfg: Config, previous: Optional[int]) -> None:
    """Stretch the iteration-based schedulers that ended at ``previous`` to the new max_iters.

    The configs write ``end=max_iters`` (and ``T_max=max_iters``) as numbers, so
    ``--cfg-options train_cfg.max_iters=N`` alone would leave the schedule unfinished (the cosine
    learning rate still near its peak at the last iteration). Schedulers that ended at the old
    ``max_iters`` now end at the new one; any other scheduler that no longer fits gets a warning.

    Args:
        cfg (Config): The config, after ``--cfg-options`` were merged into it.
        previous (int, optional): ``train_cfg.max_iters`` before the options.
    """
    current = (cfg.get('train_cfg') or {}).get('max_iters')
    schedulers = cfg.get('param_scheduler') or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else schedulers
    if previous is None or current is None or current == previous or not schedulers:
        return
    for scheduler in schedulers:
        name = scheduler.get('type', 'scheduler')
        if scheduler.get('by_epoch', True):
            print_log(f'{name} counts epochs: it does not follow train_cfg.max_iters={current}',
                      logger='current', level=logging.WARNING)
            continue
        followed = [key for key in ('end', 'T_max') if scheduler.get(key) == previous]
        for key in followed:
            scheduler[key] = current
        if followed:
            print_log(f'{name}: {"/".join(followed)} follow train_cfg.max_iters '
                      f'{previous} -> {current}', logger='current')
        elif scheduler.get('end', 0) > current:
            print_log(f'{name} ends at iteration {scheduler["end"]}, after train_cfg.max_iters='
                      f'{current}: set param_scheduler explicitly to change it',
                      logger='current', level=logging.WARNING)


def prepare_distributed(cfg: Config) -> Config:
    """Make a distributed launch work without CUDA (gloo process group, DDP without device ids).

    Does nothing for ``launcher='none'`` or when CUDA is available. Reads the usual torchrun
    variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return cfg
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'launcher {cfg.launcher!r} without CUDA is not supported; '
                           f'use tools/dist_train.sh (torchrun, launcher pytorch)')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the torchrun environment; missing {missing}. '
                           f'Start through tools/dist_train.sh or torchrun.')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.env_cfg = cfg.get('env_cfg') or {}
    cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = dict(cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel'))
    wrapper.update(device_ids=None, broadcast_buffers=False)
    cfg.model_wrapper_cfg = wrapper
    return cfg


def run_runner(cfg: Config, mode: str) -> None:
    """Build MMEngine's Runner from ``cfg``, run ``mode`` (``'train'`` or ``'test'``) and, in a
    distributed run, leave the process group cleanly.

    A gloo process group that is still alive while the interpreter exits can abort a process
    after a successful run (``terminate called without an active exception``). So the Runner
    (its model, DDP wrapper and data loaders) is released first, then every rank waits for the
    others and the group is destroyed.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    runner = Runner.from_cfg(cfg)
    getattr(runner, mode)()
    del runner
    shutdown_distributed()


def shutdown_distributed() -> None:
    """Destroy the default process group, if any, after all ranks reached this point."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()  # DDP's reducer and loader workers hold the group's resources
    dist.barrier()
    dist.destroy_process_group()


def enable_amp(cfg: Config) -> Config:
    """Switch the optimizer wrapper to ``AmpOptimWrapper`` with a dynamic loss scale."""
    if not torch.cuda.is_available():
        raise RuntimeError('--amp needs a CUDA device (MMEngine\'s AmpOptimWrapper refuses CPU '
                           'training); run without --amp')
    if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    elif cfg.optim_wrapper.type != 'AmpOptimWrapper':
        raise ValueError(f'--amp works with OptimWrapper, not {cfg.optim_wrapper.type}')
    return cfg


def set_local_rank(local_rank: int) -> None:
    """Export ``LOCAL_RANK`` for launchers that pass ``--local-rank`` instead."""
    os.environ.setdefault('LOCAL_RANK', str(local_rank))


def add_common_arguments(parser, choices: Sequence[str] = LAUNCHERS) -> None:
    """Arguments shared by train.py and test.py: --work-dir, --cfg-options, --launcher,
    --local-rank, --debug."""
    parser.add_argument('--work-dir', help='folder for logs and checkpoints '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.test_vocabulary=ade150 '
                        'train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=list(choices), default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')


def checkpoint_argument(value: str) -> str:
    """argparse ``type`` for a CHECKPOINT argument: a local file, a URL or a model-zoo name.

    A model-zoo name becomes ``zoo://NAME``; anything else unknown is refused while the arguments
    are parsed, before a model or a Runner is built.
    """
    try:
        return resolve_checkpoint_arg(value)
    except FileNotFoundError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _lookup(cfg: dict, dotted: str):
    for key in dotted.split('.'):
        if not isinstance(cfg, dict):
            return None
        cfg = cfg.get(key)
    return cfg


def check_zoo_checkpoint(cfg: Config, checkpoint: str) -> None:
    """Refuse model-zoo weights made for another architecture than the config's model.

    MMEngine loads ``load_from`` non-strictly: ViT-B/16 weights given to a ViT-L/14 config would only
    log size mismatches and then evaluate a mostly random model. For ``zoo://NAME`` the model of
    NAME's config is compared with ``cfg.model`` on :data:`ARCHITECTURE_KEYS`.

    Args:
        cfg (Config): The config about to be run.
        checkpoint (str): The checkpoint argument (``zoo://NAME``; anything else is not checked).

    Raises:
        ValueError: Naming the model, both configs and the first differing key.
    """
    if not checkpoint.startswith('zoo://'):
        return
    info = get_model(checkpoint[len('zoo://'):])
    zoo_model = Config.fromfile(info.config).model.to_dict()
    model = cfg.model.to_dict()
    for key in ARCHITECTURE_KEYS:
        if _lookup(model, key) != _lookup(zoo_model, key):
            raise ValueError(
                f'model-zoo weights {info.name!r} are for the model of {info.config}, but '
                f'{cfg.filename} builds another one: model.{key} is {_lookup(model, key)!r} here '
                f'and {_lookup(zoo_model, key)!r} there. Use the matching config (e.g. '
                f'configs/{info.name}_<benchmark>.py) or a checkpoint made for this one.')
