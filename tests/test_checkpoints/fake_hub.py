"""A fake Hugging Face Hub on 127.0.0.1 for download tests (``hf_hub_download``).

Usage::

    with FakeHub() as hub:
        old = hub.add_file('org/model', 'weights.pth', b'v1')  # -> 40-hex commit sha
        new = hub.add_file('org/model', 'weights.pth', b'v2')  # 'main' moves to it
        hub_env(monkeypatch, hub, tmp_path / 'hub')  # in-process routing, see below
        path = hf_hub_download('org/model', 'weights.pth')                # b'v2'
        path = hf_hub_download('org/model', 'weights.pth', revision=old)  # b'v1'
        hub.fail_after('org/model', 'weights.pth', 100)  # next GET: 100 bytes, hang up
        hub.require_token('hf_secret')  # 401 without 'Authorization: Bearer hf_secret'
        assert [r for r in hub.requests if r.method == 'GET'] == []

What it serves (what ``hf_hub_download`` of huggingface_hub 2.4.0 relies on)
---------------------------------------------------------------------------
``hf_hub_download`` sends ``HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}``
(revision and filename URL-quoted, ``Accept-Encoding: identity``), follows redirects only
within the same origin, and reads from the answer (``file_download.get_hf_file_metadata``):

* ``X-Repo-Commit``: the commit the revision resolves to. Mandatory: without it the library
  raises ``FileMetadataError`` ("does not seem to be served by a Hugging Face Hub endpoint").
* ``X-Linked-Etag`` or else ``ETag`` (quotes and ``W/`` stripped): the blob's name in the cache
  (``blobs/<etag>``). Mandatory. Regular files: the git blob SHA-1 of the content; LFS files:
  the SHA-256 of the content (as on the real Hub).
* ``X-Linked-Size`` or else (only for a non-redirect answer) ``Content-Length``: the expected
  size; the downloaded size is checked against it ("Consistency check failed").
* ``Location`` of a redirect: the URL the GET then goes to directly.

Regular files get ``200`` on HEAD and GET of the resolve URL. LFS files (``lfs=True``, or by
default checkpoint-like extensions and files of 10 MiB or more) get ``302`` to a second server
standing for the CDN (same host, other port = other origin, as ``cdn-lfs.hf.co`` is): the library
does not follow that redirect on HEAD (it reads ``X-Linked-*`` from the 302) and sends the GET
straight to the CDN URL *without* the ``Authorization`` header. Both servers answer ``Range:
bytes=a-`` / ``bytes=a-b`` with 206 + ``Content-Range`` and honour ``If-Range``.

Interrupted transfers (2.4.0, see test_fake_hub.py): ``http_get`` catches the
``httpx2.RemoteProtocolError``, sleeps 1 s and retries within the same call (5 retries in a row
without new data), resuming with ``Range: bytes=<n>-``, where n counts the bytes written so far;
they are written in 10 MiB pieces (``DOWNLOAD_CHUNK_SIZE``), so a cut before 10 MiB gives a full
GET without ``Range``. The partial ``<etag>.<8 hex>.incomplete`` file is deleted on success and
on failure (then the ``RemoteProtocolError`` propagates).

Errors carry the Hub's ``X-Error-Code``, which ``hf_raise_for_status`` maps to exceptions:
unknown repo -> 404 ``RepoNotFound`` (``RepositoryNotFoundError``), unknown revision -> 404
``RevisionNotFound`` (``RevisionNotFoundError``), unknown file -> 404 ``EntryNotFound`` with
``X-Repo-Commit`` (``RemoteEntryNotFoundError``; recorded under ``.no_exist/``), no token -> 401
``RepoNotFound``, wrong token -> 401 with ``X-Error-Message: Invalid credentials in
Authorization header`` (a plain ``HfHubHTTPError``, status 401).

Every response is HTTP/1.0 with ``Connection: close`` (closing ends a truncated body, and no
keep-alive connection outlives the server).

Pointing huggingface_hub at the fake
------------------------------------
``huggingface_hub.constants`` reads ``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``,
``HF_HUB_OFFLINE``, ``HF_TOKEN_PATH``, ``HF_HUB_DISABLE_*`` ... from the environment ONCE, at
import. In a process where huggingface_hub is already imported, setting these environment
variables changes nothing. What the library reads per call instead:

* ``constants.ENDPOINT`` *and* ``constants.HUGGINGFACE_CO_URL_TEMPLATE``: ``hf_hub_url`` formats
  the template (``ENDPOINT + '/{repo_id}/resolve/{revision}/{filename}'``, built at import), so
  patching ``ENDPOINT`` alone still sends requests to huggingface.co. (``endpoint=`` on every
  call also works.) ``utils._http._HUB_ORIGINS`` (origins trusted with the token on a redirect)
  is frozen at import too; it only matters for cross-origin redirects and needs no patch here.
  ``HfApi`` objects copy the endpoint when created: create them after patching.
* ``constants.HF_HUB_CACHE``: default ``cache_dir`` of ``hf_hub_download``.
* ``constants.HF_HUB_OFFLINE``, through ``constants.is_offline_mode()``, in the httpx2 request
  hook: it raises ``OfflineModeIsEnabled`` before anything is sent.
* Token: ``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN`` / ``HF_OIDC_RESOURCE`` come from
  ``os.environ`` per call, the token file from ``constants.HF_TOKEN_PATH`` (patch it, or a
  developer's real token would be sent implicitly).
* ``huggingface_hub.file_download`` uses all of these as ``constants.X`` attributes and keeps no
  copies, so patching ``huggingface_hub.constants`` is enough (the lazy top-level re-export
  ``huggingface_hub.HUGGINGFACE_CO_URL_TEMPLATE`` is not used by the library itself).
* Proxies: the shared ``httpx2.Client`` (``get_session()``) reads ``*_PROXY``/``NO_PROXY`` when
  it is created; ``hub_env`` sets ``NO_PROXY`` and calls ``close_session()`` to rebuild it.

:func:`hub_env` does all of this with ``monkeypatch`` (undone after the test). A subprocess
imports huggingface_hub afresh, so there environment variables are the way:
:func:`hub_environ` returns a complete environment (``HF_ENDPOINT``, ``HF_HUB_CACHE``,
``HF_HOME``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_TELEMETRY`` ..., token variables removed).
"""
import hashlib
import itertools
import os
import os.path as osp
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: Extensions served as LFS files by default (the Hub's default ``.gitattributes`` tracks these).
LFS_EXTENSIONS = ('.bin', '.pth', '.pt', '.ckpt', '.safetensors', '.pkl', '.h5', '.onnx', '.npz',
                  '.npy', '.msgpack', '.gz', '.zip', '.tar')
LFS_MIN_SIZE = 10 * 1024 * 1024

_CDN_PREFIX = '/cdn-lfs/'


class HubRequest(NamedTuple):
    """One request as a server (Hub or CDN) saw it.

    Attributes:
        method (str): ``'GET'`` or ``'HEAD'``.
        path (str): The unquoted URL path without the query, e.g. ``'/org/m/resolve/main/w.pth'``
            (Hub) or ``'/cdn-lfs/org/m/<sha256>'`` (CDN).
        headers (dict): The request headers, names lower-cased (``headers['authorization']``).
    """
    method: str
    path: str
    headers: Dict[str, str]


@dataclass
class _Blob:
    data: bytes
    lfs: bool
    sha256: str = field(init=False)
    git_sha1: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.git_sha1 = hashlib.sha1(b'blob %d\0' % len(self.data) + self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1


@dataclass
class _Repo:
    refs: Dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: Dict[str, Dict[str, _Blob]] = field(default_factory=dict)  # sha -> {filename: blob}


@dataclass
class _Fault:
    n_bytes: int
    times: Optional[int]  # None = every GET


class FakeHub:
    """A fake Hub (and its CDN) on 127.0.0.1, in background threads; a context manager.

    Args:
        lfs_min_size (int): Files at least this large are LFS files when ``add_file(lfs=None)``.

    Attributes:
        endpoint (str): ``http://127.0.0.1:<port>``, the value for ``HF_ENDPOINT``.
        cdn_endpoint (str): Where LFS files are redirected to (another port: another origin).
        requests (list[HubRequest]): Every request to either server, in order of arrival.
    """

    def __init__(self, *, lfs_min_size: int = LFS_MIN_SIZE) -> None:
        self.lfs_min_size = lfs_min_size
        self.requests: List[HubRequest] = []
        self._repos: Dict[str, _Repo] = {}
        self._faults: Dict[Tuple[str, str], _Fault] = {}
        self._tokens: Dict[Optional[str], str] = {}  # repo_id (None = all) -> token
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._servers: List[Tuple[ThreadingHTTPServer, threading.Thread]] = []
        self.endpoint = ''
        self.cdn_endpoint = ''

    # control ------------------------------------------------------------------------------------
    def start(self) -> 'FakeHub':
        """Bind two free ports (Hub, CDN) and serve in daemon threads."""
        urls = []
        for role in ('hub', 'cdn'):
            httpd = ThreadingHTTPServer(('127.0.0.1', 0), self._handler_class(role))
            httpd.daemon_threads = True
            thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05},
                                      daemon=True)
            thread.start()
            self._servers.append((httpd, thread))
            urls.append(f'http://127.0.0.1:{httpd.server_address[1]}')
        self.endpoint, self.cdn_endpoint = urls
        return self

    def stop(self) -> None:
        """Stop both servers and release the ports."""
        for httpd, thread in self._servers:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
        self._servers = []

    def __enter__(self) -> 'FakeHub':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_file(self, repo_id: str, filename: str, data: bytes, revision: str = 'main', *,
                 lfs: Optional[bool] = None) -> str:
        """Commit ``data`` as ``filename`` on branch ``revision``; return the new commit sha.

        The new commit holds the branch's previous files (a new branch starts from 'main') plus this
        one; the branch moves to it; earlier commits stay resolvable by their sha.
        ``lfs=None``: LFS for :data:`LFS_EXTENSIONS` and files of ``lfs_min_size`` bytes or more.
        """
        if lfs is None:
            lfs = filename.lower().endswith(LFS_EXTENSIONS) or len(data) >= self.lfs_min_size
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            base = repo.refs.get(revision) or repo.refs.get('main')
            tree = dict(repo.commits[base]) if base else {}
            tree[filename] = _Blob(bytes(data), lfs)
            sha = hashlib.sha1(f'{repo_id}\0{revision}\0{filename}\0{next(self._counter)}\0'
                               f'{os.getpid()}\0{id(self)}'.encode()).hexdigest()
            repo.commits[sha] = tree
            repo.refs[revision] = sha
            return sha

    def fail_after(self, repo_id: str, filename: str, n_bytes: int, *,
                   times: Optional[int] = 1) -> None:
        """The next ``times`` GETs of the file's content (all if None) send ``n_bytes``, then close.

        The headers announce the full length, so the client sees an interrupted transfer. Applies to
        the GET that carries the content: the resolve URL (regular file) or the CDN URL (LFS file).
        """
        with self._lock:
            self._faults[(repo_id, filename)] = _Fault(n_bytes, times)

    def clear_faults(self) -> None:
        """Forget pending :meth:`fail_after` faults."""
        with self._lock:
            self._faults.clear()

    def require_token(self, token: str, repo_id: Optional[str] = None) -> None:
        """Answer resolve requests (of ``repo_id``, or of every repo) with 401 unless
        ``Authorization: Bearer <token>`` is sent. The CDN checks no token (signed URLs)."""
        with self._lock:
            self._tokens[repo_id] = token

    def commit(self, repo_id: str, revision: str = 'main') -> str:
        """The commit sha ``revision`` (a branch or a sha) resolves to."""
        with self._lock:
            sha = self._resolve(repo_id, revision)
        if sha is None:
            raise KeyError(f'{repo_id}@{revision}')
        return sha

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self.requests.clear()

    def requests_for(self, method: Optional[str] = None,
                     filename: Optional[str] = None) -> List[HubRequest]:
        """Logged requests, optionally only those of one method / whose path ends with filename
        (resolve URLs) or that were redirected for it (CDN URLs carry it in the query)."""
        with self._lock:
            found = list(self.requests)
        if method is not None:
            found = [r for r in found if r.method == method]
        if filename is not None:
            found = [r for r in found if r.path.endswith('/' + filename)
                     or r.headers.get('x-fake-hub-filename') == filename]
        return found

    # serving ------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str) -> Optional[str]:
        repo = self._repos.get(repo_id)
        if repo is None:
            return None
        if revision in repo.refs:
            return repo.refs[revision]
        if revision in repo.commits:
            return revision
        return None

    def _take_fault(self, repo_id: str, filename: str) -> Optional[_Fault]:
        with self._lock:
            fault = self._faults.get((repo_id, filename))
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[(repo_id, filename)]
            return fault

    def _handler_class(self, role: str) -> type:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.0'  # one request per connection: closing ends the body

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._handle(body=False)

            def do_GET(self) -> None:
                self._handle(body=True)

            # helpers ----------------------------------------------------------------------------
            def _send(self, status: int, headers: Dict[str, str], data: bytes = b'',
                      body: bool = True, truncate: Optional[int] = None) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header('Content-Length', str(len(data)))
                self.send_header('Connection', 'close')
                self.end_headers()
                if body and data:
                    if truncate is not None:
                        data = data[:truncate]
                    try:
                        self.wfile.write(data)
                        self.wfile.flush()
                    except (BrokenPipeError, ConnectionResetError):  # the client hung up
                        pass
                self.close_connection = True

            def _error(self, status: int, code: Optional[str], message: str, body: bool,
                       extra: Optional[Dict[str, str]] = None) -> None:
                headers = {'Content-Type': 'application/json', 'X-Error-Message': message,
                           **(extra or {})}
                if code:
                    headers['X-Error-Code'] = code
                self._send(status, headers, ('{"error": "%s"}' % message).encode(), body)

            def _content(self, blob: _Blob, headers: Dict[str, str], body: bool,
                         fault_key: Tuple[str, str]) -> None:
                """200/206/416 with the blob's bytes, honouring Range and If-Range."""
                data, size = blob.data, len(blob.data)
                etag = f'"{blob.etag}"'
                headers = {'Accept-Ranges': 'bytes', 'ETag': etag,
                           'Content-Type': 'application/octet-stream', **headers}
                span = _parse_range(self.headers.get('Range'), size)
                if_range = self.headers.get('If-Range')
                if if_range is not None and if_range != etag:
                    span = None  # the file changed: send all of it
                fault = hub._take_fault(*fault_key) if body else None  # HEAD ignores faults
                truncate = fault.n_bytes if fault is not None else None
                if span is None:
                    self._send(200, headers, data, body, truncate)
                elif span == 'unsatisfiable':
                    self._send(416, {'Content-Range': f'bytes */{size}'}, b'', body)
                else:
                    start, end = span
                    self._send(206, {**headers, 'Content-Range': f'bytes {start}-{end}/{size}'},
                               data[start:end + 1], body, truncate)

            # routing ----------------------------------------------------------------------------
            def _handle(self, body: bool) -> None:
                split = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                if role == 'cdn':
                    query = parse_qs(split.query)
                    headers['x-fake-hub-filename'] = query.get('filename', [''])[0]
                with hub._lock:
                    hub.requests.append(HubRequest(self.command, unquote(split.path), headers))
                if role == 'cdn':
                    self._cdn(split, body)
                else:
                    self._hub(split, body)

            def _cdn(self, split, body: bool) -> None:
                # /cdn-lfs/<repo_id>/<sha256>?filename=<name>&commit=<sha>
                path = unquote(split.path)
                query = parse_qs(split.query)
                if not path.startswith(_CDN_PREFIX):
                    return self._error(404, None, 'not found', body)
                repo_id, _, sha256 = path[len(_CDN_PREFIX):].rpartition('/')
                filename = query.get('filename', [''])[0]
                commit = query.get('commit', [''])[0]
                with hub._lock:
                    repo = hub._repos.get(repo_id)
                    blob = repo.commits.get(commit, {}).get(filename) if repo else None
                if blob is None or blob.sha256 != sha256:
                    return self._error(404, None, 'not found', body)
                disposition = f'attachment; filename*=UTF-8\'\'{quote(filename)}; ' \
                              f'filename="{osp.basename(filename)}";'
                self._content(blob, {'Content-Disposition': disposition}, body,
                              (repo_id, filename))

            def _hub(self, split, body: bool) -> None:
                # /<repo_id>/resolve/<revision>/<filename> (revision and filename URL-quoted)
                raw = split.path
                if '/resolve/' not in raw:
                    return self._error(404, None, 'not found', body)
                left, _, right = raw.partition('/resolve/')
                repo_id = unquote(left.lstrip('/'))
                raw_rev, _, raw_name = right.partition('/')
                revision, filename = unquote(raw_rev), unquote(raw_name)
                with hub._lock:
                    token = hub._tokens.get(repo_id, hub._tokens.get(None))
                    commit = hub._resolve(repo_id, revision)
                    known_repo = repo_id in hub._repos
                    blob = hub._repos[repo_id].commits[commit].get(filename) if commit else None
                if token is not None:
                    auth = self.headers.get('Authorization')
                    if auth is None:
                        return self._error(401, 'RepoNotFound', 'Repository not found', body)
                    if auth != f'Bearer {token}':
                        return self._error(401, None,
                                           'Invalid credentials in Authorization header', body)
                if not known_repo:
                    return self._error(404, 'RepoNotFound', 'Repository not found', body)
                if commit is None:
                    return self._error(404, 'RevisionNotFound', 'Invalid rev id: ' + revision,
                                       body)
                if blob is None:
                    return self._error(404, 'EntryNotFound', 'Entry not found', body,
                                       {'X-Repo-Commit': commit})
                meta = {'X-Repo-Commit': commit}
                if blob.lfs:
                    location = (f'{hub.cdn_endpoint}{_CDN_PREFIX}{quote(repo_id)}/{blob.sha256}'
                                f'?filename={quote(filename, safe="")}&commit={commit}')
                    self._send(302, {**meta, 'Location': location,
                                     'ETag': f'"{blob.git_sha1}"',  # the pointer file's, unused
                                     'X-Linked-Etag': f'"{blob.sha256}"',
                                     'X-Linked-Size': str(len(blob.data)),
                                     'Content-Type': 'text/plain; charset=utf-8'},
                               f'Found. Redirecting to {location}'.encode(), body)
                else:
                    self._content(blob, meta, body, (repo_id, filename))

        return Handler


def _parse_range(header: Optional[str], size: int):
    """``(start, end)`` of a ``bytes=a-`` / ``bytes=a-b`` range, ``'unsatisfiable'`` or None."""
    match = re.match(r'^bytes=(\d+)-(\d*)$', (header or '').strip())
    if not match:
        return None
    start = int(match.group(1))
    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
    if start >= size or end < start:
        return 'unsatisfiable'
    return start, end


# routing huggingface_hub to the fake ------------------------------------------------------------
#: Variables removed from a subprocess environment: they would send a real token, move the cache or
#: switch offline mode / staging behind the test's back.
_REMOVED_VARS = ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_OIDC_RESOURCE',
                 'HF_OIDC_ID_TOKEN', 'HUGGINGFACE_HUB_CACHE', 'HUGGINGFACE_ASSETS_CACHE',
                 'HF_ASSETS_CACHE', 'HF_XET_CACHE', 'TRANSFORMERS_OFFLINE',
                 'HUGGINGFACE_CO_STAGING', 'HF_HUB_ENABLE_HF_TRANSFER', 'XDG_CACHE_HOME')


def _no_proxy(current: Optional[str]) -> str:
    hosts = [h for h in (current or '').split(',') if h.strip()]
    for host in ('127.0.0.1', 'localhost'):
        if host not in hosts:
            hosts.append(host)
    return ','.join(hosts)


def _home_for(cache_dir) -> str:
    """HF_HOME next to the hub cache (``<cache_dir>-home``): no token file, no stray state."""
    return os.fspath(cache_dir).rstrip('/\\') + '-home'


def hub_environ(hub: FakeHub, cache_dir, offline: bool = False,
                base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A complete environment for a subprocess that uses huggingface_hub against ``hub``.

    ``base`` (default ``os.environ``) minus token/cache/offline variables that would interfere, plus
    ``HF_ENDPOINT``, ``HF_HUB_CACHE=cache_dir``, ``HF_HOME=<cache_dir>-home`` (so no token file),
    ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_TELEMETRY``/``_UPDATE_CHECK``/``_PROGRESS_BARS``/``_XET``
    and ``NO_PROXY`` including 127.0.0.1.
    Use as ``subprocess.run(..., env=hub_environ(hub, cache))``.
    """
    env = dict(os.environ if base is None else base)
    for name in _REMOVED_VARS:
        env.pop(name, None)
    env.update({
        'HF_ENDPOINT': hub.endpoint,
        'HF_HUB_CACHE': os.fspath(cache_dir),
        'HF_HOME': _home_for(cache_dir),
        'HF_HUB_OFFLINE': '1' if offline else '0',
        'HF_HUB_DISABLE_TELEMETRY': '1',
        'HF_HUB_DISABLE_UPDATE_CHECK': '1',
        'HF_HUB_DISABLE_PROGRESS_BARS': '1',
        'HF_HUB_DISABLE_XET': '1',
        'NO_PROXY': _no_proxy(env.get('NO_PROXY') or env.get('no_proxy')),
    })
    env['no_proxy'] = env['NO_PROXY']
    return env


def hub_env(monkeypatch, hub: FakeHub, cache_dir, offline: bool = False) -> None:
    """Route in-process huggingface_hub calls to ``hub`` with ``cache_dir`` as the hub cache.

    Patches ``huggingface_hub.constants`` (read at call time; the env vars were read at import, see
    the module docstring), removes the token variables, sets the same environment variables as
    :func:`hub_environ` (for subprocesses the code under test may start) and closes the shared HTTP
    client so that it is rebuilt with ``NO_PROXY``. Everything is undone with ``monkeypatch``.
    Offline mode can be switched later in the test with ``hub_env(..., offline=True)`` again.
    """
    import huggingface_hub
    from huggingface_hub import constants

    cache_dir = os.fspath(cache_dir)
    home = _home_for(cache_dir)
    for name in _REMOVED_VARS:
        monkeypatch.delenv(name, raising=False)
    current_no_proxy = os.environ.get('NO_PROXY') or os.environ.get('no_proxy') or ''
    for name, value in hub_environ(hub, cache_dir, offline,
                                   base={'NO_PROXY': current_no_proxy}).items():
        monkeypatch.setenv(name, value)
    patches = {
        'ENDPOINT': hub.endpoint,
        'HUGGINGFACE_CO_URL_TEMPLATE': hub.endpoint + '/{repo_id}/resolve/{revision}/{filename}',
        'HF_HOME': home,
        'HF_HUB_CACHE': cache_dir,
        'HUGGINGFACE_HUB_CACHE': cache_dir,
        'HF_ASSETS_CACHE': osp.join(home, 'assets'),
        'HUGGINGFACE_ASSETS_CACHE': osp.join(home, 'assets'),
        'HF_XET_CACHE': osp.join(home, 'xet'),
        'HF_TOKEN_PATH': osp.join(home, 'token'),
        'HF_STORED_TOKENS_PATH': osp.join(home, 'stored_tokens'),
        'HF_HUB_OFFLINE': bool(offline),
        'HF_HUB_DISABLE_TELEMETRY': True,
        'HF_HUB_DISABLE_XET': True,
    }
    for name, value in patches.items():
        monkeypatch.setattr(constants, name, value)
    huggingface_hub.close_session()  # rebuilt on next use, under the NO_PROXY set above
