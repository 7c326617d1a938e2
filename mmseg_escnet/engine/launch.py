"""Config loading and process-group setup shared by ``tools/train.py`` and ``tools/test.py``.

MMEngine's ``pytorch`` launcher assumes CUDA (``init_dist`` calls ``torch.cuda.set_device``, and the
Runner gives DDP ``device_ids=[local_rank]``). On a machine without CUDA we create a ``gloo`` process
group ourselves (MMEngine then skips its own ``init_dist``) and wrap the model in DDP without
``device_ids``, so ``tools/dist_train.sh CONFIG N`` also runs on CPUs.

Collective time-out: a rank that stops answering (frozen, swapped out, stuck in I/O) makes the
others wait in their next collective. They give up after ``env_cfg.dist_cfg.timeout`` seconds
(default 1800, torch's own default), or the value of the environment variable
``MMSEG_ESCNET_DIST_TIMEOUT`` which wins over the config; the error then names the waiting rank,
the rank(s) it waited for, the time-out and the setting (:func:`dist_timeout`,
:func:`run_runner`). A log file that cannot be written (full disk) is reported once
(:func:`quiet_log_file_errors`).
"""
import argparse
import datetime
import errno
import gc
import logging
import os
import os.path as osp
import sys
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..checkpoints.model_zoo import get_model, resolve_checkpoint_arg
from .checkpoint_hook import disk_space_message

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
#: Environment variable with the collective time-out in seconds (wins over the config).
DIST_TIMEOUT_ENV = 'MMSEG_ESCNET_DIST_TIMEOUT'
#: Default collective time-out in seconds (torch's default for gloo and nccl).
DEFAULT_DIST_TIMEOUT = 1800.0
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
    if isinstance(current, bool) or not isinstance(current, int) or current < 1:
        return  # refused with a clear message by check_train_length
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


def dist_timeout(cfg: Config) -> float:
    """The collective time-out in seconds: ``$MMSEG_ESCNET_DIST_TIMEOUT``, else
    ``env_cfg.dist_cfg.timeout``, else :data:`DEFAULT_DIST_TIMEOUT`.

    Raises:
        ValueError: If the value is not a positive number (naming where it came from).
    """
    dist_cfg = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
    if os.environ.get(DIST_TIMEOUT_ENV, '').strip():
        source, value = f'${DIST_TIMEOUT_ENV}', os.environ[DIST_TIMEOUT_ENV].strip()
    elif dist_cfg.get('timeout') is not None:
        source, value = 'env_cfg.dist_cfg.timeout', dist_cfg['timeout']
    else:
        return DEFAULT_DIST_TIMEOUT
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float('nan')
    if not seconds > 0 or seconds == float('inf'):
        raise ValueError(f'{source} must be a positive number of seconds (the collective '
                         f'time-out of a distributed run), got {value!r}')
    return seconds


def check_train_length(cfg: Config) -> None:
    """Refuse a training length that is not a positive whole number.

    MMEngine would fail later, in a parameter scheduler that follows it, with "end should be
    larger than begin", which names neither the setting nor its value.

    Raises:
        ValueError: Naming ``train_cfg.max_iters`` / ``train_cfg.max_epochs`` and the value.
    """
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs'):
        value = train_cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'train_cfg.{key} must be a positive whole number (the length of '
                             f'the training and of the learning-rate schedule), got {value!r}')


def prepare_distributed(cfg: Config) -> Config:
    """Make a distributed launch work without CUDA (gloo process group, DDP without device ids)
    and set the collective time-out (:func:`dist_timeout`) on every launch.

    Without CUDA the gloo process group is created here with the time-out; with CUDA MMEngine
    creates it from ``env_cfg.dist_cfg`` whose ``timeout`` is set here. Does nothing for
    ``launcher='none'``. Reads the usual torchrun variables (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``).
    """
    if cfg.launcher == 'none':
        return cfg
    timeout = dist_timeout(cfg)
    cfg.env_cfg = cfg.get('env_cfg') or {}
    cfg.env_cfg.setdefault('dist_cfg', {})['timeout'] = timeout
    if torch.cuda.is_available():
        return cfg
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'launcher {cfg.launcher!r} without CUDA is not supported; '
                           f'use tools/dist_train.sh (torchrun, launcher pytorch)')
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch needs the torchrun environment; missing {missing}. '
                           f'Start through tools/dist_train.sh or torchrun.')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', timeout=datetime.timedelta(seconds=timeout))
    cfg.env_cfg.dist_cfg['backend'] = 'gloo'
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
    quiet_log_file_errors()
    try:
        runner = Runner.from_cfg(cfg)
        getattr(runner, mode)()
    except Exception as error:
        if is_collective_timeout(error):
            raise CollectiveTimeoutError(collective_timeout_message(error, cfg)) from error
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS \
                and not error.filename and 'free on the disk' not in str(error):
            raise OSError(error.errno, f'{error.strerror or error} while writing in the work dir '
                          f'{cfg.work_dir} ({disk_space_message(cfg.work_dir)})') from error
        raise
    del runner
    shutdown_distributed()


#: ``errno`` values of a write that failed for lack of room.
DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, 'EDQUOT', None)) if code)


def _report_log_file_error(handler: logging.FileHandler, record: logging.LogRecord) -> None:
    """``handleError`` of file handlers: one line on stderr the first time a log file cannot be
    written (full disk), then silence, instead of a traceback for every record."""
    if getattr(handler, '_escnet_error_reported', False):
        return
    handler._escnet_error_reported = True
    error = sys.exc_info()[1]
    sys.stderr.write(f'cannot write the log file {handler.baseFilename} ({error}); its further '
                     'lines are dropped, the console log goes on\n')


def quiet_log_file_errors() -> None:
    """Make every :class:`logging.FileHandler` (MMEngine's log files) report a failed write once
    instead of printing ``--- Logging error ---`` with a traceback for each record."""
    logging.FileHandler.handleError = _report_log_file_error


class CollectiveTimeoutError(RuntimeError):
    """A collective operation of a distributed run timed out (another rank stalled)."""


def is_collective_timeout(error: BaseException) -> bool:
    """Whether ``error`` is a distributed collective giving up (gloo / nccl time-out)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    text = str(error).lower()
    if not isinstance(error, RuntimeError) or not ('timed out' in text or 'timeout' in text):
        return False
    dist_error = getattr(dist, 'DistError', None)
    return (dist_error is not None and isinstance(error, dist_error)) or any(
        marker in text for marker in ('gloo', 'nccl', 'processgroup', 'watchdog', 'collective'))


def collective_timeout_message(error: BaseException, cfg: Config) -> str:
    """One-line message for a collective time-out: this rank, the ranks it waited for, the
    time-out and how to change it, then torch's own message (gloo names the peer)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    others = [r for r in range(world) if r != rank]
    waited = f'rank {others[0]}' if len(others) == 1 else f'one of the ranks {others}'
    seconds = dist_timeout(cfg)
    detail = ' '.join(str(error).split())
    return (f'rank {rank} of {world} waited {seconds:g} s in a collective operation and gave up: '
            f'{waited} stalled or died (frozen, swapped out or stuck in I/O?). The time-out is '
            f'env_cfg.dist_cfg.timeout or ${DIST_TIMEOUT_ENV} (seconds). torch: {detail[:500]}')


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
