"""Loading MMEngine checkpoints under torch >= 2.6 without giving up ``weights_only``.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``. MMEngine 0.10.x calls
``torch.load(filename, map_location)`` for local files, and the checkpoints its own Runner writes hold
a few Python objects besides tensors (``HistoryBuffer`` in ``message_hub``, NumPy scalars and arrays in
``meta`` and the message hub). Such files then fail with ``UnpicklingError``, which breaks
``tools/test.py <local ckpt>``, ``load_from`` and ``--resume``.

The fix here keeps the safe unpickler and allow-lists exactly the types that MMEngine itself writes,
(``load_from``, ``--resume``, ``tools/test.py`` go through MMEngine's local-file scheme, which
:func:`mmseg_escnet.register_checkpoint_loaders` points here). Anything else in
a file is still refused, with an error that names the offending globals instead of a bare
``UnpicklingError``. :mod:`mmseg_escnet.engine.checkpoint_schemes` makes MMEngine use it, once
registered (explicitly: importing the package does not).

Integrity: a checkpoint written by the training Runner has a sidecar ``<name>.sha256`` (the
``sha256sum`` format, written by :class:`~mmseg_escnet.engine.SafeCheckpointHook`). Every load
checks the file against it (:func:`verify_checkpoint_integrity`; a download-cache record of
:mod:`.download`, also ``<name>.sha256``, is trusted while the file keeps the size and
modification time it recorded); a checkpoint without a sidecar has the CRC-32 of its zip
records checked instead (torch's reader does not always do it), unless it is memory-mapped (the
official downloads, verified by their hash when they are fetched). A mismatch is a
:class:`CheckpointIntegrityError` naming the file. A verified file is remembered
by path, size and modification time, so a second load in the same process costs nothing extra.
"""
import hashlib
import json
import os
import os.path as osp
import pickle
import pickletools
import zipfile
from typing import Any, Callable, List, Optional, Set, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .safetensors_io import is_safetensors, load_safetensors_checkpoint, safetensors_problem


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


#: Suffix of the SHA-256 sidecar of a checkpoint (``iter_8.pth`` -> ``iter_8.pth.sha256``).
SIDECAR_SUFFIX = '.sha256'
_CHUNK = 1 << 20
_VERIFIED: Set[Tuple] = set()


class CheckpointIntegrityError(ValueError):
    """A checkpoint does not match its SHA-256 sidecar, or a zip record fails its CRC check."""


def sha256_sidecar(path: str) -> str:
    """Path of the SHA-256 sidecar of ``path``."""
    return path + SIDECAR_SUFFIX


def file_sha256(path: str) -> str:
    """SHA-256 of a file in hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def write_sha256_sidecar(path: str, sha256: Optional[str] = None) -> str:
    """Write ``<path>.sha256`` (``<hex>  <file name>``) through a temporary file and a rename.

    Args:
        path (str): The checkpoint.
        sha256 (str, optional): Its hash, if already known; computed otherwise.

    Returns:
        str: The sidecar's path.
    """
    sha256 = sha256 or file_sha256(path)
    sidecar = sha256_sidecar(path)
    tmp = f'{osp.join(osp.dirname(sidecar), "." + osp.basename(sidecar))}.tmp-{os.getpid()}'
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(f'{sha256}  {osp.basename(path)}\n')
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, sidecar)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return sidecar


def read_sha256_sidecar(path: str) -> Optional[str]:
    """The SHA-256 recorded for ``path`` in its sidecar, or None without a sidecar.

    Two formats: ``<hex>  <name>`` (training checkpoints) and the JSON record of the download
    cache (``{"sha256", "size", "mtime_ns", "url"}``, see :mod:`.download`).

    Raises:
        CheckpointIntegrityError: If the sidecar does not hold a SHA-256.
    """
    record = _read_sidecar(path)
    return None if record is None else record['sha256']


def _read_sidecar(path: str) -> Optional[dict]:
    sidecar = sha256_sidecar(path)
    if not osp.isfile(sidecar):
        return None
    with open(sidecar, encoding='utf-8', errors='replace') as f:
        text = f.read()
    record: dict = {}
    if text.lstrip().startswith('{'):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        record = loaded if isinstance(loaded, dict) else {}
        digest = str(record.get('sha256', '')).lower()
    else:
        digest = text.split()[0].lower() if text.split() else ''
    if len(digest) != 64 or any(c not in '0123456789abcdef' for c in digest):
        raise CheckpointIntegrityError(f'{sidecar} is not a SHA-256 sidecar (expected 64 hex '
                                       f'digits and the file name), so {path} cannot be checked')
    return dict(record, sha256=digest)


def _zip_crc_problem(path: str) -> Optional[str]:
    """The first zip record of ``path`` whose data fail their CRC-32, as a message, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, RuntimeError) as error:  # e.g. a corrupt record header
        return f'cannot be read as a zip archive ({error})'
    if bad is not None:
        return f'has a corrupt record {bad!r} (CRC-32 mismatch)'
    return None


def verify_checkpoint_integrity(path: str, *, crc: bool = True) -> None:
    """Check ``path`` against its SHA-256 sidecar, or, without one, its zip CRC-32s.

    Args:
        path (str): An existing checkpoint file.
        crc (bool): Check the zip CRCs of a file without a sidecar (reads the whole file).

    Raises:
        CheckpointIntegrityError: On a hash or CRC mismatch (one line, naming the file).
    """
    record = _read_sidecar(path)
    expected = None if record is None else record['sha256']
    if expected is None and not (crc and zipfile.is_zipfile(path)):
        return  # nothing to check against
    stat = os.stat(path)
    if record is not None and (record.get('size'), record.get('mtime_ns')) == (
            stat.st_size, stat.st_mtime_ns):
        return  # the download cache hashed this very file when it stored it
    key = (osp.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, expected)
    if key in _VERIFIED:
        return
    if expected is not None:
        actual = file_sha256(path)
        if actual != expected:
            raise CheckpointIntegrityError(
                f'checkpoint {path} is corrupt or was replaced: its SHA-256 is {actual[:16]}..., '
                f'its sidecar {sha256_sidecar(path)} records {expected[:16]}... (flipped bits on '
                'the disk or in a copy, or another file under this name)')
    else:
        problem = _zip_crc_problem(path)
        if problem is not None:
            raise CheckpointIntegrityError(f'checkpoint {path} is corrupt: it {problem} (flipped '
                                           'bits on the disk or in a copy)')
    _VERIFIED.add(key)


def checkpoint_file_problem(path: str, verify: bool = False) -> Optional[str]:
    """What is wrong with a checkpoint file, or None if it looks complete.

    A torch checkpoint is a zip archive (torch >= 1.6) or a legacy pickle stream; a safetensors
    file is checked against the sizes its header announces. A zip file cut short by a kill, a full
    disk or an interrupted download has lost its end record; anything else (a text file, an HTML
    error page) is not a checkpoint. Only the zip directory or the safetensors header is read.

    Args:
        path (str): The file.
        verify (bool): Also check its integrity (:func:`verify_checkpoint_integrity`: SHA-256
            sidecar or zip CRCs; reads the whole file once).

    Returns:
        str, optional: e.g. ``'is empty'``, ``'is cut short (...)'``, ``'is not a torch
        checkpoint (...)'``, ``'is corrupt (...)'``; None when the file can be given to
        ``torch.load``.
    """
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty'
    with open(path, 'rb') as f:
        head = f.read(4)
    if is_safetensors(path):
        problem = safetensors_problem(path)
        if problem is not None:
            return problem
    elif head.startswith(b'PK'):
        try:
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith('.pkl') for name in archive.namelist()):
                    return 'is a zip archive without a pickled checkpoint in it'
        except (zipfile.BadZipFile, OSError):
            return ('is cut short: its zip directory is missing (an interrupted save or '
                    'download, or a full disk)')
    elif not head.startswith(b'\x80'):  # a legacy (pre-zip) torch file is a pickle stream
        return f'is not a torch checkpoint (it starts with {head!r})'
    if verify:
        try:
            verify_checkpoint_integrity(path)
        except CheckpointIntegrityError as error:
            return str(error).split(f'{path} ', 1)[-1]
    return None


def _legacy_pickle_globals(path: str, max_pickles: int = 5) -> List[str]:
    """The ``module.name`` globals referenced by a legacy (pre-zip) torch file, read statically.

    A legacy file is a few pickles in a row (magic number, protocol, system info, the checkpoint,
    the storage keys) followed by raw tensor data; their opcodes are scanned, nothing is run.
    """
    found: List[str] = []
    strings: List[str] = []
    with open(path, 'rb') as f:
        for _ in range(max_pickles):
            try:
                for opcode, arg, _ in pickletools.genops(f):
                    if opcode.name in ('GLOBAL', 'INST'):
                        found.append(arg.replace(' ', '.'))
                    elif opcode.name == 'STACK_GLOBAL' and len(strings) >= 2:
                        found.append('.'.join(strings[-2:]))
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # noqa: BLE001 - the raw tensor data after the pickles
                break
    safe = ('torch.', 'collections.OrderedDict', 'builtins.set', '__builtin__.set')
    return [name for name in dict.fromkeys(found) if not name.startswith(safe)]


def pickle_globals(path: str) -> List[str]:
    """The Python globals a torch file would import, without unpickling it.

    Args:
        path (str): A zip (torch >= 1.6) or legacy torch file.

    Returns:
        List[str]: ``module.name`` strings (for a zip file, only those outside torch's own safe
        list); empty if they cannot be read.
    """
    try:
        if zipfile.is_zipfile(path):
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        return _legacy_pickle_globals(path)
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return []


def load_local_checkpoint(filename: str, map_location: Optional[Union[str, Callable]] = None, *,
                          mmap: bool = False, mmengine_types: bool = True) -> Any:
    """Load a local checkpoint with ``weights_only=True`` and MMEngine's own types allow-listed.

    The one place where this package unpickles a checkpoint (TorchScript files have a reader of
    their own). A safetensors file (:mod:`.safetensors_io`) is read without unpickling, as
    ``{'state_dict': tensors, 'meta': dict}``.

    Args:
        filename (str): Path of the checkpoint file.
        map_location (str | Callable, optional): Same as :func:`torch.load`.
        mmap (bool): Memory-map the tensors (zip checkpoints only): reading a few entries of a
            large file, such as SAM's decoder or a checkpoint's meta, costs no memory.
        mmengine_types (bool): Allow-list the types MMEngine's Runner writes
            (:func:`trusted_checkpoint_globals`). False for third-party files, which hold
            tensors and plain Python types only (official checkpoints, see
            :func:`.official_checkpoint.load_official_checkpoint`).

    Returns:
        The unpickled checkpoint (usually a dict).

    Raises:
        FileNotFoundError: If ``filename`` does not exist.
        ValueError: If it is empty, cut short or not a torch checkpoint.
        CheckpointIntegrityError: If it does not match its SHA-256 sidecar, or (not memory-mapped,
            no sidecar) a zip record fails its CRC check.
        pickle.UnpicklingError: If the file holds objects outside the allow-list; the message names
            them.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    if is_safetensors(filename):  # nothing to unpickle: {'state_dict', 'meta'} from its header
        verify_checkpoint_integrity(filename, crc=False)
        return load_safetensors_checkpoint(filename, map_location)
    problem = checkpoint_file_problem(filename)
    if problem is not None:
        raise ValueError(f'checkpoint {filename} {problem}')
    verify_checkpoint_integrity(filename, crc=not mmap)
    with torch.serialization.safe_globals(trusted_checkpoint_globals() if mmengine_types else []):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(filename))
        except pickle.UnpicklingError as error:
            unsafe = pickle_globals(filename)
            raise pickle.UnpicklingError(
                f'refusing to unpickle {filename}: it holds Python objects that are neither tensors '
                f'nor the types MMEngine writes ({", ".join(unsafe) or "not readable statically"}). '
                f'Only load '
                f'checkpoints you trust; strip them to plain tensors with tools/publish_model.py, or '
                f'extend mmseg_escnet.checkpoints.safe_loading.trusted_checkpoint_globals. '
                f'Original error: {error}') from error
