"""A file's SHA-256 remembered in a JSON record with its size and mtime.

Hashing a checkpoint of gigabytes takes seconds, so a verified file's hash is written down once,
with the size and modification time the file had: while both are unchanged, the record is the
file's hash (:func:`recorded_sha256`); a file changed since no longer fits its record and is hashed
again. Used for our download cache (``<file>.sha256``, :mod:`.download`) and for Hub files
(``<file>.hub.json``, :mod:`.hub_download`). Records and other small JSON files are replaced
atomically (:func:`write_json_atomically`), so a reader never sees half a record.
"""
import json
import os
import os.path as osp
import re
import tempfile
from typing import Any, Dict, Optional

__all__ = ['write_json_atomically', 'write_hash_record', 'read_hash_record', 'record_fits',
           'recorded_sha256']

_FULL_HEX = re.compile(r'^[0-9a-f]{64}$')


def write_json_atomically(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file of its own and a rename.

    The temporary file is unique (``<name>.<random>.tmp`` beside ``path``), so processes writing
    the same record at once (the ranks of a node) do not trip over each other: the last rename
    wins, and every reader sees one whole record.
    """
    handle, tmp = tempfile.mkstemp(prefix=osp.basename(path) + '.', suffix='.tmp',
                                   dir=osp.dirname(path) or '.')
    try:
        with os.fdopen(handle, 'w', encoding='utf-8') as f:
            json.dump(data, f)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_hash_record(record: str, file: str, sha256: str, **extra: Any) -> None:
    """Record ``sha256`` with the size and mtime ``file`` has now (and ``extra`` entries).

    Args:
        record (str): the record's path (its folder is created).
        file (str): the hashed file (for a file about to be renamed: the file before the rename,
            which keeps size and mtime).
        sha256 (str): its SHA-256 (64 hex).
        **extra: more JSON entries, e.g. ``url=`` or ``path=``.
    """
    stat = os.stat(file)
    folder = osp.dirname(record)
    if folder:
        os.makedirs(folder, exist_ok=True)
    write_json_atomically(record, dict(sha256=sha256, size=stat.st_size,
                                       mtime_ns=stat.st_mtime_ns, **extra))


def read_hash_record(record: str) -> Optional[Dict[str, Any]]:
    """The record (``sha256``, ``size``, ``mtime_ns`` and extra entries); None if missing or
    unusable."""
    try:
        with open(record, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get('sha256'), str)
            and _FULL_HEX.match(data['sha256']) and isinstance(data.get('size'), int)
            and isinstance(data.get('mtime_ns'), int)):
        return None
    return data


def record_fits(record: Optional[Dict[str, Any]], file: str) -> bool:
    """Whether ``file`` still has the size and mtime written in ``record`` (False for None)."""
    if record is None:
        return False
    try:
        stat = os.stat(file)
    except OSError:
        return False
    return (record['size'], record['mtime_ns']) == (stat.st_size, stat.st_mtime_ns)


def recorded_sha256(record: str, file: str, **extra: Any) -> Optional[str]:
    """The SHA-256 ``record`` holds for ``file`` if it fits and its ``extra`` entries match."""
    data = read_hash_record(record)
    if not record_fits(data, file) or any(data.get(k) != v for k, v in extra.items()):
        return None
    return data['sha256']
