"""A local HTTP file server for download tests: ranges, validators, injected faults, a request log.

Usage::

    with LocalHTTPServer(folder) as server:
        server.truncate('a.pth', 100)         # next GET of a.pth sends 100 bytes, then hangs up
        server.fail('b.pth', 500, times=None)  # every request for b.pth gets HTTP 500
        server.delay('c.pth', 1.0)             # the next GET of c.pth is answered after 1 s
        server.slow('d.pth', 2.0)              # the next GET of d.pth sends its body over 2 s
        url = server.url('a.pth')
        ...
        assert server.requests[-1].range == 'bytes=100-'

Every file is served with an ``ETag`` (from its content) and ``Last-Modified`` (its mtime), and
``If-Range`` is honoured: a ``Range`` request whose ``If-Range`` does not match the current file is
answered with 200 and the whole file. ``validators=False`` sends neither header, and
``if_range=False`` ignores ``If-Range`` (as servers without it do). Files are read on every request,
so a test changes a served file by writing it.

It binds 127.0.0.1 on a free port and serves the files below ``folder`` (GET and HEAD) in a
background thread. Tests that use it should set ``NO_PROXY=127.0.0.1`` so that a proxy configured
in the environment is not asked for local addresses.
"""
import hashlib
import os
import os.path as osp
import re
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit


@dataclass
class RequestRecord:
    """One request as the server saw it.

    Attributes:
        method (str): ``'GET'`` or ``'HEAD'``.
        path (str): The file name asked for (URL path without the leading ``/``, unquoted).
        range (str | None): The ``Range`` header, e.g. ``'bytes=100-'``.
        status (int): The status code sent.
        sent (int): Body bytes actually sent (final once the response is complete).
        if_range (str | None): The ``If-Range`` header.
    """
    method: str
    path: str
    range: Optional[str]
    status: int
    sent: int
    if_range: Optional[str] = None


@dataclass
class _Fault:
    status: Optional[int] = None  # answer with this status
    truncate: Optional[int] = None  # send only this many body bytes, announce the full length
    delay: float = 0.0  # seconds to wait before answering
    pace: float = 0.0  # seconds over which the body is sent, in small pieces
    times: Optional[int] = 1  # how many requests it applies to; None = all


class LocalHTTPServer:
    """Threaded HTTP server on 127.0.0.1 serving a folder, with fault injection.

    Args:
        root (str): Folder whose files are served (``/<relative path>``).
        ignore_range (bool): Answer every GET with 200 and the whole file, as servers without
            range support do. Can be changed while running (as the two below).
        validators (bool): Send ``ETag`` and ``Last-Modified``.
        if_range (bool): Honour ``If-Range``.
    """

    def __init__(self, root: str, *, ignore_range: bool = False, validators: bool = True,
                 if_range: bool = True) -> None:
        self.root = osp.abspath(root)
        self.ignore_range = ignore_range
        self.validators = validators
        self.if_range = if_range
        self.requests: List[RequestRecord] = []
        self._faults: Dict[str, _Fault] = {}
        self._lock = threading.Lock()
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._port: Optional[int] = None

    # control ------------------------------------------------------------------------------------
    def start(self) -> 'LocalHTTPServer':
        """Bind a free port and serve in a daemon thread."""
        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={'poll_interval': 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (later requests are refused)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> 'LocalHTTPServer':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (still known after :meth:`stop`, to build URLs of a stopped server)."""
        if self._port is None:
            raise RuntimeError('the server was never started')
        return self._port

    def url(self, name: str) -> str:
        """``http://127.0.0.1:<port>/<name>``."""
        return f'http://127.0.0.1:{self.port}/{name.lstrip("/")}'

    def fail(self, name: str, status: int, *, times: Optional[int] = 1) -> None:
        """Answer the next ``times`` GETs of ``name`` (all if None) with ``status``."""
        with self._lock:
            self._faults[name] = _Fault(status=status, times=times)

    def truncate(self, name: str, nbytes: int, *, times: Optional[int] = 1) -> None:
        """Send only ``nbytes`` of the body of the next ``times`` GETs of ``name``, then close.

        The headers still announce the full ``Content-Length`` (and ``Content-Range``).
        """
        with self._lock:
            self._faults[name] = _Fault(truncate=nbytes, times=times)

    def delay(self, name: str, seconds: float, *, times: Optional[int] = 1) -> None:
        """Wait ``seconds`` before answering the next ``times`` GETs of ``name`` (a slow server)."""
        with self._lock:
            self._faults[name] = _Fault(delay=seconds, times=times)

    def slow(self, name: str, seconds: float, *, times: Optional[int] = 1) -> None:
        """Send the body of the next ``times`` GETs of ``name`` in 20 pieces over ``seconds``."""
        with self._lock:
            self._faults[name] = _Fault(pace=seconds, times=times)

    def clear(self) -> None:
        """Forget the faults and the request log."""
        with self._lock:
            self._faults.clear()
            self.requests.clear()

    def requests_for(self, name: str) -> List[RequestRecord]:
        """The logged requests for one file."""
        with self._lock:
            return [r for r in self.requests if r.path == name]

    # serving ------------------------------------------------------------------------------------
    def _take_fault(self, name: str) -> Optional[_Fault]:
        with self._lock:
            fault = self._faults.get(name)
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[name]
            return fault

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _handler_class(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.0'  # one request per connection: closing ends the body

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _reply(self, name: str, status: int, headers: Dict[str, str], data: bytes,
                       fault: Optional[_Fault], body: bool) -> None:
                record = RequestRecord(self.command, name, self.headers.get('Range'), status, 0,
                                       self.headers.get('If-Range'))
                server._log(record)  # logged before answering: the log is in order of arrival
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header('Content-Length', str(len(data)))
                self.send_header('Connection', 'close')
                self.end_headers()
                if body:
                    if fault is not None and fault.truncate is not None:
                        data = data[:fault.truncate]
                    pieces = 20 if fault is not None and fault.pace else 1
                    step = -(-len(data) // pieces) or 1
                    for start in range(0, len(data), step):
                        if pieces > 1:
                            time.sleep(fault.pace / pieces)
                        piece = data[start:start + step]
                        record.sent += len(piece)  # counted first: the client may be faster
                        try:
                            self.wfile.write(piece)
                            self.wfile.flush()
                        except (BrokenPipeError, ConnectionResetError):  # the client hung up
                            record.sent -= len(piece)
                            break
                self.close_connection = True

            def _serve(self, body: bool) -> None:
                name = unquote(urlsplit(self.path).path).lstrip('/')
                fault = server._take_fault(name) if body else None  # HEAD ignores faults
                if fault is not None and fault.delay:
                    time.sleep(fault.delay)
                if fault is not None and fault.status is not None:
                    self._reply(name, fault.status, {}, f'injected {fault.status}\n'.encode(), None,
                                body)
                    return
                path = osp.normpath(osp.join(server.root, name))
                if not path.startswith(server.root + os.sep) or not osp.isfile(path):
                    self._reply(name, 404, {}, b'not found\n', None, body)
                    return
                with open(path, 'rb') as f:
                    data = f.read()
                size = len(data)
                validators = {}
                if server.validators:
                    validators = {
                        'ETag': f'"{hashlib.sha256(data).hexdigest()[:16]}"',
                        'Last-Modified': formatdate(osp.getmtime(path), usegmt=True)}
                span = _parse_range(self.headers.get('Range'), size)
                if_range = self.headers.get('If-Range')
                if server.if_range and if_range is not None and \
                        if_range not in validators.values():
                    span = None  # the file changed: send all of it
                if span is None or server.ignore_range:
                    self._reply(name, 200, {'Accept-Ranges': 'bytes', **validators}, data, fault,
                                body)
                elif span == 'unsatisfiable':
                    self._reply(name, 416, {'Content-Range': f'bytes */{size}'}, b'', None, body)
                else:
                    start, end = span
                    self._reply(name, 206, {'Content-Range': f'bytes {start}-{end}/{size}',
                                            **validators}, data[start:end + 1], fault, body)

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


def free_port() -> Tuple[str, int]:
    """An address on 127.0.0.1 where nothing listens (for 'connection refused' tests)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return '127.0.0.1', sock.getsockname()[1]
