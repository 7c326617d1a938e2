"""Verified, resumable checkpoint downloads into a local cache (the cache/verification layer).

A URL is downloaded once into ``<cache>/<host>/<url path>`` (:func:`cache_path`), checked against
its SHA-256 (see :func:`download_checkpoint`) and then used from the cache without network. The
transfer (resuming ``<path>.part`` only when provably safe) is :mod:`.http_transfer`'s job. The
final file appears only after verification, by an atomic rename, together with ``<path>.sha256``
(JSON: its SHA-256, size, mtime and URL). Without any known hash this record is *trust on first
use*: a cached file whose size or mtime no longer match it is hashed again, and deleted and
downloaded again if it changed. Everything that writes ``<path>`` runs under the inter-process lock
``<path>.lock`` (:func:`cache_lock`): concurrent processes wait and then use the verified file.

:func:`load_checkpoint_from_url` is what :mod:`mmseg_escnet.engine.checkpoint_schemes` registers for
``http://`` and ``https://`` in MMEngine's ``CheckpointLoader``
(:func:`mmseg_escnet.register_checkpoint_loaders`), so ``load_from``,
``init_cfg=dict(type='Pretrained', checkpoint=URL)`` and ``tools/test.py CONFIG URL`` all verify.
"""
import hashlib
import logging
import os
import os.path as osp
import sys
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

from filelock import FileLock, Timeout
from mmengine.logging import print_log

from ..utils.rank_zero import rank_zero_first
from .hash_record import read_hash_record, record_fits, write_hash_record
from .hash_sources import (KNOWN_SHA256, SCHEMES, ExpectedHash, expected_sha256,
                           resolve_hash, split_url)
from .http_transfer import ChecksumError, DownloadError, discard_partial, transfer
from .hub_download import fetch_hub_file, parse_hub_url
from .safe_loading import file_sha256 as hash_file
from .safe_loading import load_local_checkpoint

__all__ = [
    'DownloadError', 'ChecksumError', 'KNOWN_SHA256', 'default_cache_dir', 'cache_path',
    'expected_sha256', 'file_sha256', 'cache_lock', 'download_checkpoint', 'local_checkpoint_path',
    'load_checkpoint_from_url'
]

# (realpath, size, mtime_ns) -> sha256: a file hashed once in this process is not hashed again.
_HASH_MEMO: Dict[Tuple[str, int, int], str] = {}


def default_cache_dir() -> str:
    """``$MMSEG_ESCNET_CACHE/checkpoints``; ``~/.cache/mmseg_escnet/checkpoints`` by default.

    The same cache root as the mmcv wheels of ``tools/setup_env.sh``.
    """
    root = os.environ.get('MMSEG_ESCNET_CACHE') or osp.join('~', '.cache', 'mmseg_escnet')
    return osp.join(osp.abspath(osp.expanduser(root)), 'checkpoints')


def _cache_segment(raw: str, url: str) -> str:
    """One unquoted path segment as a file or folder name ('' for empty, ``.`` and ``..``)."""
    segment = unquote(raw)
    if segment in ('', '.', '..'):
        return ''
    if '\0' in segment:
        raise ValueError(f'{url!r}: the path segment {raw!r} holds a NUL character and cannot be '
                         f'mirrored in the cache')
    for sep in {'/', os.sep, os.altsep} - {None}:
        segment = segment.replace(sep, '_')
    return segment


def cache_path(url: str, cache_dir: Optional[str] = None) -> str:
    """Where the download of ``url`` is (or will be) stored.

    The host and path of the URL are mirrored under the cache folder, so two URLs with the same
    file name never collide: ``https://host:8080/a/b/x.pth`` -> ``<cache>/host_8080/a/b/x.pth``.
    The fragment is not part of the path. A query string is: the first 8 hex digits of its
    SHA-256 are added to the file name, so ``.../download.pth?id=1`` and ``?id=2`` are different
    files (``download-<8 hex>.pth``); URLs without a query keep their plain path. An encoded ``/``
    inside a path segment (``%2F``, as in GCS or Firebase object URLs ``.../o/dir%2Fx.pth``)
    becomes ``_`` (``dir_x.pth``, the same cache file as a literal ``dir_x.pth`` in that folder).
    ``file://`` URLs go under ``<cache>/file/``.

    Args:
        url (str): ``http://``, ``https://`` or ``file://`` URL.
        cache_dir (str, optional): Cache folder; :func:`default_cache_dir` if not given.

    Returns:
        str: Absolute path of the cached file.

    Raises:
        ValueError: For another scheme, a URL without a file name or a NUL in the path.
    """
    clean, _ = split_url(url)
    parts = urlsplit(clean)
    host = (parts.hostname or parts.scheme.lower()).lower()
    if parts.port is not None:
        host += f'_{parts.port}'
    segments = [_cache_segment(s, url) for s in parts.path.split('/')]
    segments = [s for s in segments if s]
    if not segments or parts.path.endswith('/'):
        raise ValueError(f'{url!r}: the URL names no file (its path must end with a file name)')
    if parts.query:
        stem, ext = osp.splitext(segments[-1])
        tag = hashlib.sha256(parts.query.encode('utf-8')).hexdigest()[:8]
        segments[-1] = f'{stem}-{tag}{ext}'
    root = osp.abspath(osp.expanduser(cache_dir)) if cache_dir else default_cache_dir()
    return osp.join(root, host, *segments)


def _memo_key(path: str) -> Tuple[str, int, int]:
    stat = os.stat(path)
    return osp.realpath(path), stat.st_size, stat.st_mtime_ns


def file_sha256(path: str) -> str:
    """SHA-256 of a file in hex (remembered per path, size and mtime for this process).

    Args:
        path (str): An existing file.

    Returns:
        str: 64 lower-case hex digits.
    """
    key = _memo_key(path)
    if key not in _HASH_MEMO:
        _HASH_MEMO[key] = hash_file(path)
    return _HASH_MEMO[key]


def _matches(actual: str, expected: str) -> bool:
    return actual.startswith(expected)


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def _info(message: str) -> None:
    print_log(message, logger='current', level=logging.INFO)


@contextmanager
def cache_lock(path: str, what: str) -> Iterator[None]:
    """Hold the inter-process lock ``<path>.lock`` (a :class:`filelock.FileLock`).

    Whoever creates or replaces ``path`` in the cache holds this lock, and checks again after
    acquiring it whether ``path`` is already there (another process may have finished it while
    this one waited). Waiting is logged once. The lock dies with its process.

    Args:
        path (str): The cache file to protect (its folder must exist).
        what (str): What the holder does, for the log message, e.g. ``'downloading <url>'``.

    Raises:
        DownloadError: The lock file cannot be created (e.g. a read-only cache folder).
    """
    lock = FileLock(path + '.lock')
    try:
        lock.acquire(timeout=0)
    except Timeout:  # (a subclass of OSError, so first)
        _info(f'{path} is locked by another process ({path}.lock); waiting until it has '
              f'finished {what}')
        lock.acquire()
    except OSError as error:
        raise DownloadError(f'cannot create the lock file {path}.lock ({error}); the cache '
                            f'folder must be writable for {what}') from error
    try:
        yield
    finally:
        lock.release()


def _record_path(target: str) -> str:
    return target + '.sha256'


def _cache_problem(target: str, expected: Optional[ExpectedHash], url: str, *,
                   locked: bool) -> Optional[str]:
    """Why the existing ``target`` cannot be used as it is, or None.

    Writes nothing unless ``locked``: without the lock, an unpinned file whose record is missing
    or stale is a problem to look at again under the lock (which hashes it and (re)writes the
    record).
    """
    record = read_hash_record(_record_path(target))
    fits = record_fits(record, target)
    if expected is None and fits:  # trust on first use: unchanged since it was recorded
        _HASH_MEMO[_memo_key(target)] = record['sha256']
        return None
    if expected is None and not locked:
        return 'has no up-to-date record of its SHA-256'
    actual = file_sha256(target)
    if expected is not None and not _matches(actual, expected.value):
        return f'has SHA-256 {actual}, expected {expected.value} ({expected.source})'
    if expected is None and record is not None and actual != record['sha256']:
        return (f'has SHA-256 {actual}, but {record["sha256"]} was recorded when it was '
                f'downloaded (it was damaged or replaced since)')
    if expected is None and record is None:
        _info(f'{target} has no recorded SHA-256 (cached by an older version, or put there by '
              f'hand): recording its SHA-256 {actual} and checking the file against it from now on')
    if locked and not (fits and record['sha256'] == actual):
        write_hash_record(_record_path(target), target, actual, url=url)
    return None


def _download(url: str, expected: Optional[ExpectedHash], target: str, *, progress: bool,
              timeout: float) -> None:
    """Download, verify, record and rename into ``target`` (under the lock of ``target``)."""
    part = target + '.part'
    print_log(f'downloading {url} to {target}', logger='current')
    transfer(url, part, target, verified=expected is not None, progress=progress, timeout=timeout)
    actual = file_sha256(part)
    if expected is not None and not _matches(actual, expected.value):
        discard_partial(part)
        raise ChecksumError(f'downloading {url} gave data with SHA-256 {actual}, but '
                            f'{expected.value} was expected ({expected.source}); the bad data was '
                            f'deleted, nothing was cached at {target}')
    if expected is None:
        _warn(f'{url} has no known SHA-256, so its download could not be verified; it has SHA-256 '
              f'{actual}, recorded in {_record_path(target)} to detect later changes of the '
              f'cached file. Pin it by using the URL {url}#sha256={actual}')
    # first: a cached file always has its record
    write_hash_record(_record_path(target), part, actual, url=url)
    part_key = _memo_key(part)
    os.replace(part, target)
    discard_partial(part)  # the validators recorded for the partial file
    _HASH_MEMO.pop(part_key, None)
    _HASH_MEMO[_memo_key(target)] = actual  # a rename keeps size and mtime


def _fetch(url: str, expected: Optional[ExpectedHash], target: str, *, progress: bool,
           timeout: float) -> str:
    """Return ``target`` once it holds the verified file, downloading if needed."""
    clean, _ = split_url(url)
    if osp.isfile(target) and _cache_problem(target, expected, clean, locked=False) is None:
        return target
    os.makedirs(osp.dirname(target), exist_ok=True)
    with cache_lock(target, f'downloading {clean}'):
        if osp.isfile(target):  # maybe just written by the process that held the lock
            problem = _cache_problem(target, expected, clean, locked=True)
            if problem is None:
                return target
            _warn(f'cached {target} {problem}: deleting it and downloading {clean} again')
            for path in (target, _record_path(target)):
                if osp.exists(path):
                    os.remove(path)
        _download(clean, expected, target, progress=progress, timeout=timeout)
    return target


def download_checkpoint(url: str,
                        *,
                        sha256: Optional[str] = None,
                        cache_dir: Optional[str] = None,
                        progress: bool = True,
                        timeout: float = 60.0) -> str:
    """Download ``url`` once into the cache, verify its SHA-256 and return the local path.

    A Hugging Face Hub file URL (``https://huggingface.co/<repo>/resolve/<revision>/<path>``) is
    fetched by ``huggingface_hub`` into the Hugging Face cache instead, honouring ``HF_ENDPOINT``,
    ``HF_HOME``/``HF_HUB_CACHE``, ``HF_HUB_OFFLINE`` and ``HF_TOKEN``, and then verified the same
    way (:mod:`.hub_download`).

    A cached file that verifies is returned without network access. Otherwise the file is
    downloaded into ``<path>.part`` (continuing an existing partial file when the server's file
    is provably unchanged), verified and renamed into place, all under the lock ``<path>.lock``
    (concurrent processes wait and then use the verified file). In a distributed run
    (``torch.distributed`` initialised) every rank must call this: rank 0 downloads while the
    others wait (see :func:`mmseg_escnet.utils.rank_zero.rank_zero_first`).

    The expected hash is ``sha256`` if given, else :func:`expected_sha256`'s; ``sha256``
    contradicting the URL's fragment, 64-hex path segment or :data:`KNOWN_SHA256` is an error, but
    it overrides a ``-<hex>`` name suffix (logged). Without any hash the file is downloaded
    anyway, a warning gives its hash and how to pin it, and ``<path>.sha256`` records it (trust on
    first use).

    Args:
        url (str): ``http(s)://`` (or ``file://``) URL, optionally ending in ``#sha256=<hex>``.
        sha256 (str, optional): Expected SHA-256 (full or a prefix of >= 8 hex digits).
        cache_dir (str, optional): Cache folder; :func:`default_cache_dir` if not given.
        progress (bool): Show a progress bar on stderr. Defaults to True.
        timeout (float): Seconds to wait for the server before giving up. Defaults to 60.

    Returns:
        str: Path of the verified file in the cache (see :func:`cache_path`).

    Raises:
        ValueError: For a bad URL or hash, or two sources of the hash contradicting each other.
        ChecksumError: The data does not have the expected hash (it is deleted).
        DownloadError: HTTP error, unreachable host, or a transfer cut short (the partial file
            is kept; calling again resumes it when that is safe).
    """
    expected = resolve_hash(url, sha256, log=True)
    target = cache_path(url, cache_dir)
    clean, _ = split_url(url)
    hub = parse_hub_url(clean)
    if hub is not None:  # huggingface_hub's cache, endpoint, offline mode and token
        root = osp.abspath(osp.expanduser(cache_dir)) if cache_dir else default_cache_dir()
        return rank_zero_first(fetch_hub_file, hub, clean, expected, record_dir=root,
                               legacy=target)
    return rank_zero_first(_fetch, url, expected, target, progress=progress, timeout=timeout)


def local_checkpoint_path(path_or_url: Union[str, 'os.PathLike[str]'], *, what: str = 'checkpoint',
                          cache_dir: Optional[str] = None) -> str:
    """A local file for ``path_or_url``: URLs are downloaded once into the verified cache.

    Shared by the CLIP, SAM and CAT-Seg weight readers.

    Args:
        path_or_url (str | PathLike): Local path, or ``http://``/``https://``/``file://`` URL
            (``#sha256=<hex>`` pins the hash of any URL).
        what (str): What the file is, for error messages (``'SAM checkpoint'``...).
        cache_dir (str, optional): Download cache; :func:`default_cache_dir` if not given.

    Returns:
        str: Path of an existing local file.

    Raises:
        TypeError: ``path_or_url`` is not a string or path.
        FileNotFoundError: A local path does not exist.
        DownloadError: A download failed or did not verify.
    """
    if not isinstance(path_or_url, (str, os.PathLike)):
        raise TypeError(f'{what} must be a path or URL string, got {type(path_or_url).__name__}')
    text = os.fspath(path_or_url)
    if urlsplit(text).scheme.lower() in SCHEMES:
        return download_checkpoint(text, cache_dir=cache_dir, progress=sys.stderr.isatty())
    if not osp.isfile(text):
        raise FileNotFoundError(f'{what} file not found: {text!r}')
    return text


def load_checkpoint_from_url(filename: str,
                             map_location: Optional[Union[str, Callable]] = None) -> Any:
    """Download (verified, cached) and load a checkpoint with the safe local loader.

    This is the loader registered for ``http://`` and ``https://`` in MMEngine's
    ``CheckpointLoader``.

    Args:
        filename (str): Checkpoint URL, optionally with ``#sha256=<hex>``.
        map_location (str | Callable, optional): Same as :func:`torch.load`.

    Returns:
        The loaded checkpoint (usually a dict).
    """
    path = download_checkpoint(filename, progress=sys.stderr.isatty())
    return load_local_checkpoint(path, map_location=map_location)
