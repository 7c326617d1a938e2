"""Loading MMEngine checkpoints under torch >= 2.6 without giving up ``weights_only``.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``. MMEngine 0.10.x calls
``torch.load(filename, map_location)`` for local files, and the checkpoints its own Runner writes hold
a few Python objects besides tensors (``HistoryBuffer`` in ``message_hub``, NumPy scalars and arrays in
``meta`` and the message hub). Such files then fail with ``UnpicklingError``, which breaks
``tools/test.py <local ckpt>``, ``load_from`` and ``--resume``.

The fix here keeps the safe unpickler and allow-lists exactly the types that MMEngine itself writes,
(``load_from``, ``--resume``, ``tools/test.py`` go through MMEngine's local-file scheme, which
:mod:`mmseg_escnet.engine.checkpoint_schemes` points here). Anything else in
a file is still refused, with an error that names the offending globals instead of a bare
``UnpicklingError``. :mod:`mmseg_escnet.engine.checkpoint_schemes` makes MMEngine use it.
"""
import os.path as osp
import pickle
import zipfile
from typing import Any, Callable, List, Optional, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_globals() -> List[Any]:
    """NumPy types that appear when NumPy scalars or arrays are pickled."""
    found: List[Any] = [np.ndarray, np.dtype]
    # Scalars pickle through ``numpy.core.multiarray.scalar`` (NumPy 1.x) or
    # ``numpy._core.multiarray.scalar`` (NumPy 2.x); arrays through ``_reconstruct``.
    for module_name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            module = __import__(module_name, fromlist=['scalar'])
        except ImportError:
            continue
        found += [getattr(module, name) for name in ('scalar', '_reconstruct') if hasattr(module, name)]
    # dtype classes such as ``numpy.dtypes.Float64DType`` (NumPy >= 1.25).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]
    return found


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to what pickled ``HistoryBuffer`` objects need.

    A ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``. An
    unrestricted ``getattr`` would let a malicious file reach any callable, so only the registered
    statistics of ``HistoryBuffer`` are served.
    """
    # The defaults are registered only once a HistoryBuffer is instantiated, so name them here.
    allowed = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({obj!r}, {name!r}), which is not '
                                 f'allowed')


def trusted_checkpoint_globals() -> List[Any]:
    """The non-tensor types MMEngine's Runner writes into its checkpoints."""
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'), *_numpy_globals()]


def checkpoint_file_problem(path: str) -> Optional[str]:
    """What is wrong with a checkpoint file, or None if it looks complete.

    A torch checkpoint is a zip archive (torch >= 1.6) or a legacy pickle stream. A zip file cut
    short by a kill, a full disk or an interrupted download has lost its end record; anything
    else (a text file, an HTML error page) is not a checkpoint. Only the zip directory is read.

    Args:
        path (str): The file.

    Returns:
        str, optional: e.g. ``'is empty'``, ``'is cut short (...)'``, ``'is not a torch
        checkpoint (...)'``; None when the file can be given to ``torch.load``.
    """
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty'
    with open(path, 'rb') as f:
        head = f.read(4)
    if head.startswith(b'PK'):
        try:
            with zipfile.ZipFile(path) as archive:
                if any(name.endswith('.pkl') for name in archive.namelist()):
                    return None
            return 'is a zip archive without a pickled checkpoint in it'
        except (zipfile.BadZipFile, OSError):
            return ('is cut short: its zip directory is missing (an interrupted save or '
                    'download, or a full disk)')
    if head.startswith(b'\x80'):  # a legacy (pre-zip) torch file is a pickle stream
        return None
    return f'is not a torch checkpoint (it starts with {head!r})'


def load_local_checkpoint(filename: str, map_location: Optional[Union[str, Callable]] = None, *,
                          mmap: bool = False) -> Any:
    """Load a local checkpoint with ``weights_only=True`` and MMEngine's own types allow-listed.

    The one place where this package unpickles a checkpoint (TorchScript and safetensors files
    have readers of their own).

    Args:
        filename (str): Path of the checkpoint file.
        map_location (str | Callable, optional): Same as :func:`torch.load`.
        mmap (bool): Memory-map the tensors (zip checkpoints only): reading a few entries of a
            large file, such as SAM's decoder or a checkpoint's meta, costs no memory.

    Returns:
        The unpickled checkpoint (usually a dict).

    Raises:
        FileNotFoundError: If ``filename`` does not exist.
        ValueError: If it is empty, cut short or not a torch checkpoint.
        pickle.UnpicklingError: If the file holds objects outside the allow-list; the message names
            them.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    problem = checkpoint_file_problem(filename)
    if problem is not None:
        raise ValueError(f'checkpoint {filename} {problem}')
    with torch.serialization.safe_globals(trusted_checkpoint_globals()):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(filename))
        except pickle.UnpicklingError as error:
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
            except Exception:  # not a zip checkpoint: report the original error only
                unsafe = []
            raise pickle.UnpicklingError(
                f'refusing to unpickle {filename}: it holds Python objects that are neither tensors '
                f'nor the types MMEngine writes ({", ".join(unsafe) or "see below"}). Only load '
                f'checkpoints you trust; strip them to plain tensors with tools/publish_model.py, or '
                f'extend mmseg_escnet.checkpoints.safe_loading.trusted_checkpoint_globals. '
                f'Original error: {error}') from error
