"""Verified, resumable checkpoint downloads into a local cache.

A URL is downloaded once into ``<cache>/<host>/<url path>`` (:func:`cache_path`), checked against
its SHA-256 (:func:`expected_sha256` says where the expected value comes from) and then used from
the cache without touching the network. An interrupted transfer leaves ``<path>.part`` behind,
which the next call continues with an HTTP ``Range`` request. The final file appears only after
verification, by an atomic rename, so a file in the cache is always complete.

:func:`load_checkpoint_from_url` is what :mod:`mmseg_escnet.engine.checkpoint_loading` registers for
``http://`` and ``https://`` in MMEngine's ``CheckpointLoader``, so ``load_from``,
``init_cfg=dict(type='Pretrained', checkpoint=URL)`` and ``tools/test.py CONFIG URL`` all verify.
Only the standard library's :mod:`urllib` is used for HTTP.
"""
import hashlib
import logging
import os
import os.path as osp
import re
import sys
from http.client import HTTPException
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar, Union
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urldefrag, urlsplit
from urllib.request import Request, urlopen

from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log

from ..version import __version__

__all__ = [
    'DownloadError', 'ChecksumError', 'KNOWN_SHA256', 'default_cache_dir', 'cache_path',
    'expected_sha256', 'file_sha256', 'download_checkpoint', 'rank_zero_first',
    'load_checkpoint_from_url'
]

#: SHA-256 of official files whose URLs carry no (full) hash, keyed by URL.
KNOWN_SHA256 = {
    'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth':
    'a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e',
    'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth':
    '3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622',
    'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth':
    'ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912',
}
SCHEMES = ('http', 'https', 'file')
_HEX_PREFIX = re.compile(r'^[0-9a-fA-F]{8,64}$')
_FULL_HEX = re.compile(r'^[0-9a-fA-F]{64}$')
_NAME_SUFFIX = re.compile(r'-([0-9a-fA-F]{8,64})\.[A-Za-z0-9]+$')
_CHUNK = 1 << 20
T = TypeVar('T')
# (realpath, size, mtime_ns) -> sha256: a file hashed once in this process is not hashed again.
_HASH_MEMO: Dict[Tuple[str, int, int], str] = {}


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded (HTTP error, unreachable host, truncated transfer)."""


class ChecksumError(DownloadError):
    """The downloaded data does not have the expected SHA-256."""


def default_cache_dir() -> str:
    """``$MMSEG_ESCNET_CACHE/checkpoints``; ``~/.cache/mmseg_escnet/checkpoints`` by default.

    The same cache root as the mmcv wheels of ``tools/setup_env.sh``.
    """
    root = os.environ.get('MMSEG_ESCNET_CACHE') or osp.join('~', '.cache', 'mmseg_escnet')
    return osp.join(osp.abspath(osp.expanduser(root)), 'checkpoints')


def _split_url(url: str) -> Tuple[str, str]:
    """Check the scheme and split ``url`` into (URL to request, fragment)."""
    if not isinstance(url, str):
        raise TypeError(f'checkpoint URL must be a string, got {type(url).__name__}')
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f'{url!r}: not a downloadable URL (expected one of the schemes '
                         f'{", ".join(s + "://" for s in SCHEMES)})')
    clean, fragment = urldefrag(url)
    return clean, fragment


def cache_path(url: str, cache_dir: Optional[str] = None) -> str:
    """Where the download of ``url`` is (or will be) stored.

    The host and path of the URL are mirrored under the cache folder, so two URLs with the same
    file name never collide: ``https://host:8080/a/b/x.pth`` -> ``<cache>/host_8080/a/b/x.pth``.
    The fragment and query are not part of the path; ``file://`` URLs go under ``<cache>/file/``.

    Args:
        url (str): ``http://``, ``https://`` or ``file://`` URL.
        cache_dir (str, optional): Cache folder; :func:`default_cache_dir` if not given.

    Returns:
        str: Absolute path of the cached file.

    Raises:
        ValueError: For another scheme or a URL without a file name.
    """
    clean, _ = _split_url(url)
    parts = urlsplit(clean)
    host = (parts.hostname or parts.scheme.lower()).lower()
    if parts.port is not None:
        host += f'_{parts.port}'
    segments = [unquote(s) for s in parts.path.split('/')]
    segments = [s for s in segments if s not in ('', '.', '..')]
    if not segments or parts.path.endswith('/'):
        raise ValueError(f'{url!r}: the URL names no file (its path must end with a file name)')
    bad = [s for s in segments if os.sep in s or (os.altsep and os.altsep in s) or '\0' in s]
    if bad:
        raise ValueError(f'{url!r}: path segments {bad} cannot be mirrored in the cache')
    root = osp.abspath(osp.expanduser(cache_dir)) if cache_dir else default_cache_dir()
    return osp.join(root, host, *segments)


def _check_hex(value: str, what: str) -> str:
    if not isinstance(value, str) or not _HEX_PREFIX.match(value):
        raise ValueError(f'{what}: expected a SHA-256 in hex (8 to 64 hex digits, a prefix of the '
                         f'full hash is allowed), got {value!r}')
    return value.lower()


def expected_sha256(url: str) -> Optional[str]:
    """The SHA-256 (full or a hex prefix of at least 8 digits) that ``url``'s file must have.

    Looked up in this order:

    1. a fragment ``#sha256=<hex>`` (the way to pin any URL);
    2. a path segment of exactly 64 hex digits (OpenAI's CLIP URLs,
       ``.../clip/models/<sha256>/ViT-B-16.pt``);
    3. :data:`KNOWN_SHA256` (official files such as SAM's ``sam_vit_h_4b8939.pth``);
    4. a file name ending in ``-<8 to 64 hex>.<ext>`` (as ``tools/publish_model.py`` and
       OpenMMLab name their files): a prefix of the hash.

    Args:
        url (str): The checkpoint URL.

    Returns:
        str | None: Lower-case hex digits, or None when nothing is known.

    Raises:
        ValueError: For a malformed ``#sha256=`` fragment or an unsupported scheme.
    """
    clean, fragment = _split_url(url)
    if fragment:
        key, _, value = fragment.partition('=')
        if key != 'sha256':
            raise ValueError(f'{url!r}: unsupported URL fragment {fragment!r}; only '
                             f'#sha256=<hex> is understood')
        return _check_hex(value, f'{url!r} #sha256 fragment')
    path = urlsplit(clean).path
    for segment in path.split('/')[:-1]:
        if _FULL_HEX.match(segment):
            return segment.lower()
    if clean in KNOWN_SHA256:
        return KNOWN_SHA256[clean]
    match = _NAME_SUFFIX.search(path.rsplit('/', 1)[-1])
    return match.group(1).lower() if match else None


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
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(_CHUNK), b''):
                digest.update(block)
        _HASH_MEMO[key] = digest.hexdigest()
    return _HASH_MEMO[key]


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def _progress_bar(total: Optional[int], initial: int, name: str, enabled: bool) -> Any:
    """A tqdm bar on stderr, or an object whose ``update``/``close`` do nothing."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is optional: no bar
            pass
        else:
            return tqdm(total=total, initial=initial, unit='B', unit_scale=True,
                        unit_divisor=1024, desc=name, file=sys.stderr, leave=False)

    class _NoBar:

        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    return _NoBar()


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """(start, total) of a ``Content-Range`` header (``bytes a-b/N`` or ``bytes */N``)."""
    match = re.match(r'^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$', value or '')
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != '*' else None
    return start, total


def _transfer(url: str, part: str, target: str, *, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing an existing partial file.

    Returns when the server has sent the complete body (or says there is nothing left to send);
    verification is the caller's job.
    """
    offset = osp.getsize(part) if osp.isfile(part) else 0
    headers = {'User-Agent': f'mmseg_escnet/{__version__}', 'Accept-Encoding': 'identity'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
    where = f'(cache path {target})'
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        error.close()
        if error.code == 416 and offset:  # nothing left to send: the part may be complete
            _, total = _content_range(error.headers.get('Content-Range'))
            if total is not None and total != offset:
                os.remove(part)  # the partial file is longer than the file: start afresh
                raise DownloadError(f'downloading {url} failed: the partial file {part} has '
                                    f'{offset} bytes but the file has {total}; it was deleted, run '
                                    f'again to download from the start {where}') from error
            return
        raise DownloadError(f'downloading {url} failed: HTTP {error.code} {error.reason} '
                            f'{where}') from error
    except (URLError, HTTPException, OSError) as error:  # unreachable, refused, timed out
        reason = getattr(error, 'reason', error)
        raise DownloadError(f'downloading {url} failed: cannot reach the server ({reason}) '
                            f'{where}; without network access, put the verified file there') \
            from error
    with response:
        status = response.status or 200  # file:// responses carry no status
        length = response.headers.get('Content-Length')
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start, total = _content_range(response.headers.get('Content-Range'))
            if start != offset:
                os.remove(part)
                raise DownloadError(f'downloading {url} failed: asked to resume at byte {offset}, '
                                    f'the server answered with Content-Range '
                                    f'{response.headers.get("Content-Range")!r}; the partial file '
                                    f'was deleted, run again to download from the start {where}')
            if total is None and length is not None:
                total = offset + length
        else:  # 200: the server ignored the range (or none was asked for): from zero
            offset, total = 0, length
        if total is not None and offset > total:
            os.remove(part)
            raise DownloadError(f'downloading {url} failed: the partial file {part} is longer '
                                f'than the file; it was deleted, run again {where}')
        received = offset
        bar = _progress_bar(total, offset, osp.basename(target), progress)
        try:
            with open(part, 'ab' if offset else 'wb') as f:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (HTTPException, OSError) as error:  # connection reset, timeout, IncompleteRead
            raise DownloadError(
                f'downloading {url} was interrupted after {received} of '
                f'{total if total is not None else "?"} bytes ({type(error).__name__}: {error}); '
                f'the partial file {part} is kept and running again resumes it') from error
        finally:
            bar.close()
    if total is not None and received < total:
        raise DownloadError(f'downloading {url} was interrupted: {received} of {total} bytes '
                            f'arrived (connection closed early); the partial file {part} is kept '
                            f'and running again resumes it')


def _matches(actual: str, expected: str) -> bool:
    return actual.startswith(expected)


def _fetch(url: str, expected: Optional[str], target: str, *, progress: bool,
           timeout: float) -> str:
    """Return ``target`` once it holds the verified file, downloading if needed."""
    clean, _ = _split_url(url)
    if osp.isfile(target):
        if expected is None:
            return target
        actual = file_sha256(target)
        if _matches(actual, expected):
            return target
        _warn(f'cached {target} has SHA-256 {actual}, expected {expected}: deleting it and '
              f'downloading {clean} again')
        os.remove(target)
    os.makedirs(osp.dirname(target), exist_ok=True)
    part = target + '.part'
    print_log(f'downloading {clean} to {target}', logger='current')
    _transfer(clean, part, target, progress=progress, timeout=timeout)
    actual = file_sha256(part)
    if expected is not None and not _matches(actual, expected):
        os.remove(part)
        raise ChecksumError(f'downloading {clean} gave data with SHA-256 {actual}, but '
                            f'{expected} was expected ({_hash_source(url, expected)}); the bad '
                            f'data was deleted, nothing was cached at {target}')
    if expected is None:
        _warn(f'{clean} has no known SHA-256, so its download could not be verified; it has '
              f'SHA-256 {actual}. Pin it by using the URL {clean}#sha256={actual}')
    part_key = _memo_key(part)
    os.replace(part, target)
    _HASH_MEMO.pop(part_key, None)
    _HASH_MEMO[_memo_key(target)] = actual  # a rename keeps size and mtime
    return target


def _hash_source(url: str, expected: str) -> str:
    """Say where an expected hash came from, for error messages."""
    clean, fragment = _split_url(url)
    if fragment:
        return 'from the #sha256= fragment of the URL'
    if expected_sha256(url) != expected:
        return 'as given by the caller or the model index'
    if clean in KNOWN_SHA256:
        return 'the published hash of this official file'
    if any(_FULL_HEX.match(s) for s in urlsplit(clean).path.split('/')[:-1]):
        return 'from the 64-hex-digit segment of the URL path'
    return ('from the "-<hex>" suffix of the file name; if this name does not carry a hash, pin '
            'the real one with #sha256=<hex>')


def _local_rank(rank: int) -> int:
    try:
        from mmengine.dist import get_local_rank
        return get_local_rank()
    except RuntimeError:  # no local process group (e.g. a gloo group created by the tools)
        return int(os.environ.get('LOCAL_RANK', rank))


def download_checkpoint(url: str,
                        *,
                        sha256: Optional[str] = None,
                        cache_dir: Optional[str] = None,
                        progress: bool = True,
                        timeout: float = 60.0) -> str:
    """Download ``url`` once into the cache, verify its SHA-256 and return the local path.

    A cached file that verifies is returned without network access. Otherwise the file is
    downloaded into ``<path>.part`` (continuing an existing partial file with a ``Range``
    request), verified and renamed into place. In a distributed run (``torch.distributed``
    initialised) every rank must call this: rank 0 downloads while the others wait at a barrier
    (see :func:`rank_zero_first`).

    Args:
        url (str): ``http(s)://`` (or ``file://``) URL, optionally ending in ``#sha256=<hex>``.
        sha256 (str, optional): Expected SHA-256 (full or a prefix of >= 8 hex digits); overrides
            :func:`expected_sha256`. Without any known hash the file is downloaded anyway and a
            warning gives its hash and how to pin it.
        cache_dir (str, optional): Cache folder; :func:`default_cache_dir` if not given.
        progress (bool): Show a progress bar on stderr. Defaults to True.
        timeout (float): Seconds to wait for the server before giving up. Defaults to 60.

    Returns:
        str: Path of the verified file in the cache (see :func:`cache_path`).

    Raises:
        ValueError: For a bad URL or hash, or ``sha256`` contradicting the URL's own hash.
        ChecksumError: The data does not have the expected hash (it is deleted).
        DownloadError: HTTP error, unreachable host, or a transfer cut short (the partial file
            is kept; calling again resumes).
    """
    from_url = expected_sha256(url)
    expected = from_url
    if sha256 is not None:
        expected = _check_hex(sha256, f'sha256 for {url!r}')
        if from_url is not None and not (expected.startswith(from_url)
                                         or from_url.startswith(expected)):
            raise ValueError(f'sha256={expected} contradicts the hash {from_url} that {url!r} '
                             f'carries ({_hash_source(url, from_url)})')
    target = cache_path(url, cache_dir)
    return rank_zero_first(_fetch, url, expected, target, progress=progress, timeout=timeout)


def rank_zero_first(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` once on every rank, rank 0 first.

    Without ``torch.distributed`` this is a plain call. In a distributed run every rank must call
    it: rank 0 runs ``fn`` while the others wait at a barrier; then the local rank 0 of every other
    node (whose cache may not be shared), then the remaining ranks, which find rank 0's result in
    the cache. Every rank passes every barrier, even after an error, so that no rank waits forever;
    errors are raised after the last barrier.

    Args:
        fn (Callable): The work, e.g. a download into the cache.
        *args: Positional arguments of ``fn``.
        **kwargs: Keyword arguments of ``fn``; a ``progress`` argument is turned off except on
            rank 0.

    Returns:
        The value ``fn`` returned on this rank.
    """
    rank, world_size = get_dist_info()
    if world_size == 1:
        return fn(*args, **kwargs)
    if 'progress' in kwargs:
        kwargs['progress'] = kwargs['progress'] and rank == 0
    local_rank = _local_rank(rank)
    result: Any = None
    error: Optional[BaseException] = None
    for turn in (rank == 0, rank != 0 and local_rank == 0, rank != 0 and local_rank != 0):
        if turn:
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # re-raised below, after the barriers
                error = err
        barrier()
    if error is not None:
        raise error
    return result


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
    from ..engine.checkpoint_loading import load_local_checkpoint
    path = download_checkpoint(filename, progress=sys.stderr.isatty())
    return load_local_checkpoint(path, map_location=map_location)
