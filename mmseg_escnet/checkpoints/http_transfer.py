"""Transfer of one URL into a partial file, resumed only when that is safe.

This is the network layer of :mod:`.download` (which owns the cache, the hashes and the locking).
:func:`transfer` writes the body of ``url`` into ``<part>`` and records the validators of the first
response (``ETag``, ``Last-Modified`` and the total length) in the sidecar ``<part>.json``. A
later call continues an existing partial file with ``Range: bytes=<size>-`` and
``If-Range: <ETag or Last-Modified>``, so that a server whose file changed in between answers with
the whole new file, which is then written from the start. The partial file is also started afresh
when the server announces another total length or other validators than recorded, when its
``Content-Range`` does not start where the partial file ends, and when nothing tells whether the
server's file is still the same (no validator was recorded and no SHA-256 is known to check the
result). Only the standard library's :mod:`urllib` is used for HTTP.

The caller must make sure that no other process writes the same partial file (see
:func:`.download.cache_lock`).
"""
import json
import logging
import os
import os.path as osp
import re
import sys
from dataclasses import asdict, dataclass
from http.client import HTTPException
from typing import Any, Mapping, Optional, Tuple
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from mmengine.logging import print_log

from ..version import __version__
from .hash_record import write_json_atomically

__all__ = ['DownloadError', 'ChecksumError', 'transfer', 'discard_partial']

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded (HTTP error, unreachable host, truncated transfer)."""


class ChecksumError(DownloadError):
    """The downloaded data does not have the expected SHA-256."""


class _Restart(Exception):
    """The partial file cannot be continued; the message says why."""


@dataclass
class _Validators:
    """What identifies the server's file a partial download belongs to (``<part>.json``)."""
    url: str
    etag: Optional[str] = None
    last_modified: Optional[str] = None
    total: Optional[int] = None

    @property
    def if_range(self) -> Optional[str]:
        """The ``If-Range`` value: a strong ETag, else Last-Modified (weak ETags cannot be used)."""
        if self.etag and not self.etag.startswith('W/'):
            return self.etag
        return self.last_modified


def _info(message: str) -> None:
    print_log(message, logger='current', level=logging.INFO)


def _record_path(part: str) -> str:
    return part + '.json'


def _read_validators(part: str, url: str) -> Optional[_Validators]:
    """The validators recorded for ``part``; None if missing, unreadable or for another URL."""
    try:
        with open(_record_path(part), encoding='utf-8') as f:
            data = json.load(f)
        record = _Validators(**data)
    except (OSError, ValueError, TypeError):
        return None
    return record if record.url == url else None


def discard_partial(part: str) -> None:
    """Delete a partial download and its recorded validators (missing files are fine).

    Args:
        part (str): Path of the partial file (``<cache path>.part``).
    """
    for path in (part, _record_path(part)):
        if osp.exists(path):
            os.remove(path)


def _progress_bar(total: Optional[int], initial: int, name: str, enabled: bool) -> Any:
    """tqdm's bar on stderr (disabled: its ``update``/``close`` do nothing)."""
    from tqdm import tqdm  # installed with open_clip_torch and huggingface_hub
    return tqdm(total=total, initial=initial, unit='B', unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, leave=False, disable=not enabled)


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """(start, total) of a ``Content-Range`` header (``bytes a-b/N`` or ``bytes */N``)."""
    match = re.match(r'^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$', value or '')
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != '*' else None
    return start, total


def _length(headers: Mapping) -> Optional[int]:
    value = headers.get('Content-Length')
    return int(value) if value and value.isdigit() else None


def _open(url: str, offset: int, record: Optional[_Validators], where: str,
          timeout: float) -> Optional[Any]:
    """Send the request; None when a ``Range`` request says that nothing is left to send."""
    headers = {'User-Agent': f'mmseg_escnet/{__version__}', 'Accept-Encoding': 'identity'}
    if offset:
        headers['Range'] = f'bytes={offset}-'
        if record is not None and record.if_range:
            headers['If-Range'] = record.if_range
    try:
        return urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        error.close()
        if error.code == 416 and offset:  # nothing left to send: the part may be complete
            _, total = _content_range(error.headers.get('Content-Range'))
            if total is not None and total != offset:
                raise _Restart(f'the partial file has {offset} bytes but the file has '
                               f'{total}') from error
            if record is not None and record.total is not None and total is not None \
                    and total != record.total:
                raise _Restart(f'the file has {total} bytes now, {record.total} when the '
                               f'partial download started') from error
            return None
        raise DownloadError(f'downloading {url} failed: HTTP {error.code} {error.reason} '
                            f'{where}') from error
    except (URLError, HTTPException, OSError) as error:  # unreachable, refused, timed out
        reason = getattr(error, 'reason', error)
        raise DownloadError(f'downloading {url} failed: cannot reach the server ({reason}) '
                            f'{where}; without network access, put the verified file there') \
            from error


def _check_partial_response(response: Any, offset: int, record: Optional[_Validators]) -> int:
    """Check a ``206`` answer against the partial file; return the total length (-1 unknown)."""
    start, total = _content_range(response.headers.get('Content-Range'))
    if start != offset:
        raise _Restart(f'asked to resume at byte {offset}, the server answered with '
                       f'Content-Range {response.headers.get("Content-Range")!r}')
    length = _length(response.headers)
    if total is None and length is not None:
        total = offset + length
    if record is not None:
        if record.total is not None and total is not None and total != record.total:
            raise _Restart(f'the file has {total} bytes now, {record.total} when the partial '
                           f'download started')
        for name, recorded in (('ETag', record.etag), ('Last-Modified', record.last_modified)):
            now = response.headers.get(name)
            if recorded and now and now != recorded:
                raise _Restart(f'the {name} of the file changed from {recorded} to {now}')
    return -1 if total is None else total


def _resume_offset(url: str, part: str, verified: bool) -> Tuple[int, Optional[_Validators]]:
    """Where to continue ``part`` (0: from the start) and the validators recorded for it."""
    offset = osp.getsize(part) if osp.isfile(part) else 0
    if not offset:
        return 0, None
    record = _read_validators(part, url)
    if verified or (record is not None and record.if_range):
        return offset, record
    _info(f'not resuming the partial download {part}: the server gave no ETag or Last-Modified '
          f'for it and no SHA-256 of {url} is known, so a change of the file on the server could '
          f'not be detected; downloading it from the start')
    discard_partial(part)
    return 0, None


def transfer(url: str, part: str, target: str, *, verified: bool, progress: bool,
             timeout: float) -> None:
    """Download ``url`` into ``part``, continuing an existing partial file when that is safe.

    Returns when the server has sent the complete body (or says that nothing is left to send);
    checking the SHA-256 of ``part`` is the caller's job.

    Args:
        url (str): URL without fragment (``http``, ``https`` or ``file``).
        part (str): The partial file (``<target>.part``); its validators go to ``<part>.json``.
        target (str): The final cache path (for messages and the progress bar).
        verified (bool): Whether the caller checks the result against a known SHA-256. Without
            it, a partial file is only continued when the server gave an ``ETag`` or
            ``Last-Modified`` that ``If-Range`` can check.
        progress (bool): Show a progress bar on stderr.
        timeout (float): Seconds to wait for the server.

    Raises:
        DownloadError: HTTP error, unreachable host, or a transfer cut short (the partial file is
            kept and the next call continues it if it safely can).
    """
    where = f'(cache path {target})'
    offset, record = _resume_offset(url, part, verified)
    for _ in range(2):  # the second attempt starts from zero, so it cannot restart again
        try:
            response = _open(url, offset, record, where, timeout)
            if response is None:
                return
            with response:
                status = response.status or 200  # file:// responses carry no status
                if status == 206:
                    total = _check_partial_response(response, offset, record)
                else:  # 200: no range asked for, ranges not supported, or If-Range did not match
                    if offset:
                        _info(f'the server sent all of {url} instead of the rest from byte '
                              f'{offset} (its file changed, or it does not support ranges); '
                              f'downloading it from the start')
                    offset, total = 0, _length(response.headers)
                    record = _Validators(url, response.headers.get('ETag'),
                                         response.headers.get('Last-Modified'), total)
                    write_json_atomically(_record_path(part), asdict(record))
                    total = -1 if total is None else total
                _write_body(response, url, part, target, offset, total, progress,
                            resumable=verified or bool(record and record.if_range))
                return
        except _Restart as reason:
            _info(f'not resuming the partial download {part} of {url}: {reason}; downloading '
                  f'it from the start')
            discard_partial(part)
            offset, record = 0, None
    raise DownloadError(f'downloading {url} failed: the server does not send a consistent file '
                        f'{where}')


def _write_body(response: Any, url: str, part: str, target: str, offset: int, total: int,
                progress: bool, *, resumable: bool) -> None:
    """Write the body of ``response`` into ``part`` from byte ``offset`` (``total`` -1: unknown)."""
    received = offset
    kept = ('is kept and running again resumes it' if resumable else
            'is kept, but the server gives no ETag/Last-Modified to resume it safely: running '
            'again downloads it from the start')
    bar = _progress_bar(total if total >= 0 else None, offset, osp.basename(target), progress)
    try:
        with open(part, 'r+b' if offset else 'wb') as f:
            f.seek(offset)
            while True:
                block = response.read(_CHUNK)
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
            f.truncate()
    except (HTTPException, OSError) as error:  # connection reset, timeout, IncompleteRead
        shown = total if total >= 0 else '?'
        raise DownloadError(f'downloading {url} was interrupted after {received} of {shown} '
                            f'bytes ({type(error).__name__}: {error}); the partial file {part} '
                            f'{kept}') from error
    finally:
        bar.close()
    if received < total:
        raise DownloadError(f'downloading {url} was interrupted: {received} of {total} bytes '
                            f'arrived (connection closed early); the partial file {part} {kept}')
