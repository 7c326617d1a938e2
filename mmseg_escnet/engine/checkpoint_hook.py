"""Crash-safe checkpoints: a kill or a full disk during a save never loses the last good one.

MMEngine's :class:`~mmengine.hooks.CheckpointHook` deletes the oldest checkpoint first, then
writes the new one in place, then points ``last_checkpoint`` at it. A kill in between leaves a
partial file, and with ``max_keep_ckpts=1`` no checkpoint at all; ``last_checkpoint`` may name a
deleted file. :class:`SafeCheckpointHook` saves in the order that keeps a good checkpoint on
disk at every moment:

1. write ``.<name>.tmp-<pid>`` and fsync it;
2. hash it, remove a stale ``<name>.sha256``, rename the file to ``<name>`` (atomic on POSIX),
   write its SHA-256 sidecar ``<name>.sha256`` (which every load checks) and fsync the folder;
3. write ``last_checkpoint`` the same way;
4. only then delete the checkpoints beyond ``max_keep_ckpts`` (and their sidecars).

A save that fails (full disk ``ENOSPC``, file size limit ``EFBIG``) removes its temporary file
and raises one :class:`OSError` naming the checkpoint, the bytes it needs (about the size of the
tensors being written) and the free space; the previous checkpoint stays.
:func:`remove_stale_temporary_files` (``tools/train.py``, before the Runner writes anything)
deletes the temporary files left by processes that no longer run.

:func:`find_resume_checkpoint` is what ``tools/train.py --resume`` resumes from: the file named
by ``last_checkpoint`` if it is a readable checkpoint, else (with a warning) the newest readable
``iter_*.pth`` / ``epoch_*.pth`` of the work dir.
"""
import errno
import glob
import logging
import os
import os.path as osp
import re
import shutil
from typing import Any, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..checkpoints.safe_loading import (checkpoint_file_problem, file_sha256, sha256_sidecar,
                                        write_sha256_sidecar)

__all__ = ['SafeCheckpointHook', 'find_resume_checkpoint', 'is_readable_checkpoint',
           'remove_stale_temporary_files', 'disk_space_message']

_TMP_MARK = '.tmp-'
_STEP_RE = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    with open(path, 'rb') as f:
        os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and an atomic rename."""
    tmp = f'{path}{_TMP_MARK}{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(osp.dirname(osp.abspath(path)))


def is_readable_checkpoint(path: str) -> bool:
    """Whether ``path`` is a complete, intact torch checkpoint (``checkpoint_file_problem`` with
    the SHA-256 sidecar or zip CRC check)."""
    return checkpoint_file_problem(path, verify=True) is None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporary_files(folder: str) -> List[str]:
    """Delete the temporary files (``.<name>.tmp-<pid>``, ``last_checkpoint.tmp-<pid>``) that
    processes which no longer run left in ``folder`` (a save killed or failed on a full disk).

    Args:
        folder (str): A work dir (nothing happens if it does not exist).

    Returns:
        list[str]: The removed files.
    """
    removed = []
    candidates = glob.glob(osp.join(folder, f'.*{_TMP_MARK}*')) + glob.glob(
        osp.join(folder, f'last_checkpoint{_TMP_MARK}*'))
    for path in candidates:
        pid = path.rsplit(_TMP_MARK, 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:  # another process cleaned it first
            continue
        removed.append(path)
    return removed


def _human(num_bytes: float) -> str:
    for unit in ('B', 'KB', 'MB', 'GB'):
        if abs(num_bytes) < 1000 or unit == 'GB':
            return f'{num_bytes:.0f} {unit}' if unit == 'B' else f'{num_bytes:.1f} {unit}'
        num_bytes /= 1000
    return f'{num_bytes:.1f} TB'


def disk_space_message(folder: str) -> str:
    """``'X free on the disk of FOLDER'`` (or why it is unknown)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError as error:
        return f'free space of {folder} unknown ({error.strerror})'
    return f'{_human(free)} free on the disk of {folder}'


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested dict / list (what a checkpoint mostly is)."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _checkpoint_bytes(runner, with_optimizer: bool) -> int:
    """About the size of a checkpoint of ``runner``: its model and optimizer tensors."""
    size = _tensor_bytes(runner.model.state_dict())
    if with_optimizer and getattr(runner, 'optim_wrapper', None) is not None:
        try:
            size += _tensor_bytes(runner.optim_wrapper.state_dict())
        except Exception:  # noqa: BLE001  (an estimate only)
            pass
    return size


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _checkpoints_by_step(folder: str) -> List[str]:
    """``iter_*.pth`` / ``epoch_*.pth`` files of ``folder``, newest (highest step) first."""
    found = []
    for path in glob.glob(osp.join(folder, '*.pth')):
        match = _STEP_RE.match(osp.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def find_resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` continues from, or None if the work dir has none.

    Args:
        work_dir (str): The run's work dir (holding ``last_checkpoint`` and the checkpoints).

    Returns:
        str, optional: ``last_checkpoint``'s file when it is readable; otherwise the newest
        readable ``iter_*.pth`` / ``epoch_*.pth`` (a warning names what was skipped and why).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer, encoding='utf-8') as f:
            named = f.read().strip() or None
        if named is not None and is_readable_checkpoint(named):
            return named
    for path in _checkpoints_by_step(work_dir):
        if is_readable_checkpoint(path):
            if named is not None:
                problem = checkpoint_file_problem(named, verify=True)
                print_log(f'last_checkpoint names {named}, which {problem}; resuming from the '
                          f'newest readable checkpoint {path} instead', logger='current',
                          level=logging.WARNING)
            return path
    if named is not None:
        print_log(f'last_checkpoint names {named}, which is not a readable checkpoint, and '
                  f'{work_dir} has no other one: starting from scratch', logger='current',
                  level=logging.WARNING)
    return None


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` that saves atomically and deletes last.

    Same arguments and behaviour as MMEngine's hook (interval, ``max_keep_ckpts``, best
    checkpoints, ...); only the order of the file operations differs (module docstring). Other
    storage backends than local files fall back to MMEngine's own saving.
    """

    def before_train(self, runner) -> None:
        """MMEngine's preparation, then the temporary files of a killed save are removed."""
        super().before_train(runner)
        if is_main_process() and isinstance(self.file_backend, LocalBackend) \
                and osp.isdir(self.out_dir):
            for path in glob.glob(osp.join(self.out_dir, f'.*{_TMP_MARK}*')) + glob.glob(
                    osp.join(runner.work_dir, f'last_checkpoint{_TMP_MARK}*')):
                os.remove(path)
                runner.logger.info(f'removed {path}, left by an interrupted save')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        expired = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                expired.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self._previous_ckpt = getattr(self, 'last_ckpt', None)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        tmp_name = f'.{filename}{_TMP_MARK}{os.getpid()}'
        self._write_temporary(runner, tmp_name, meta)
        if not is_main_process():
            return
        self._publish(osp.join(self.out_dir, tmp_name), self.last_ckpt)
        self._point_last_checkpoint(runner)
        self._remove_expired(expired)

    def _write_temporary(self, runner, tmp_name: str, meta: dict) -> None:
        """Step 1: the whole checkpoint into a hidden temporary file (main process).

        Raises:
            OSError: The write failed (e.g. a full disk); the temporary file is removed and the
                message names the checkpoint, the bytes needed and the free space.
        """
        tmp_path = osp.join(self.out_dir, tmp_name)
        try:
            runner.save_checkpoint(self.out_dir, tmp_name, self.file_client_args,
                                   save_optimizer=self.save_optimizer,
                                   save_param_scheduler=self.save_param_scheduler, meta=meta,
                                   by_epoch=self.by_epoch, backend_args=self.backend_args,
                                   **self.args)
        except OSError as error:
            _remove_quietly(tmp_path)
            raise self._save_error(runner, error) from None
        except BaseException:
            _remove_quietly(tmp_path)
            raise

    def _save_error(self, runner, error: OSError) -> OSError:
        """One-line :class:`OSError` for a failed save (same errno)."""
        needed = _checkpoint_bytes(runner, self.save_optimizer)
        reason = error.strerror or str(error)
        hint = ''
        if error.errno == errno.EFBIG:
            hint = ' (a file size limit, see ulimit -f)'
        elif error.errno in (errno.ENOSPC, getattr(errno, 'EDQUOT', -1)):
            hint = ('; free space, lower default_hooks.checkpoint.max_keep_ckpts or save to '
                    'another disk (default_hooks.checkpoint.out_dir)')
        previous = getattr(self, '_previous_ckpt', None)
        kept = (f'; the previous checkpoint {previous} is intact'
                if previous and osp.isfile(previous) else '')
        return OSError(error.errno, f'cannot save the checkpoint {self.last_ckpt}: {reason}'
                       f'{hint}; it needs about {_human(needed)}, '
                       f'{disk_space_message(self.out_dir)}; its temporary file was removed'
                       f'{kept}')

    def _publish(self, tmp_path: str, path: str) -> None:
        """Step 2: fsync and hash the temporary file, rename it into place with its SHA-256
        sidecar, fsync the folder."""
        _fsync_file(tmp_path)
        sha256 = file_sha256(tmp_path)  # read back from the page cache
        if osp.exists(sha256_sidecar(path)):  # an older file's hash never describes this one
            os.remove(sha256_sidecar(path))
        os.replace(tmp_path, path)
        try:
            write_sha256_sidecar(path, sha256)
        except OSError as error:  # the checkpoint is complete; it only cannot be verified
            print_log(f'could not write {sha256_sidecar(path)} ({error}): {path} will load '
                      'without a hash check', logger='current', level=logging.WARNING)
        _fsync_dir(self.out_dir)

    def _point_last_checkpoint(self, runner) -> None:
        """Step 3: ``last_checkpoint`` names the new file (atomically)."""
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)

    def _remove_expired(self, steps: List[int]) -> None:
        """Step 4: delete the checkpoints beyond ``max_keep_ckpts``."""
        for step in steps:
            path = osp.join(self.out_dir, self.filename_tmpl.format(step))
            for name in (path, sha256_sidecar(path)):
                if osp.isfile(name):
                    os.remove(name)
