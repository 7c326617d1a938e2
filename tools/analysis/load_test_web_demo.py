"""Load test of the web demo (demo/web_demo.py) on this machine: N clients x M requests.

    python tools/analysis/load_test_web_demo.py CONFIG [--checkpoint CKPT] [--image IMG | --size N]
        [--classes "sky, grass"] [--mode whole] [--clients 8] [--requests 3]
        [--server-args --queue-size 8 --request-timeout 120]
    python tools/analysis/load_test_web_demo.py --url http://127.0.0.1:7860/ [--pid PID] --image IMG

With CONFIG the tool starts the demo itself (``--device cpu`` on a free port of 127.0.0.1) and
stops it at the end; with ``--url`` it uses a running demo, which must listen on 127.0.0.1 (any
other host is refused), and reads the server's memory from ``--pid`` if given. The image is
uploaded once (``--size N``: the first example image of ``demo/examples`` scaled to N x N);
every request is a raw API call (``/gradio_api/call/segment``), as a script would
send it. One warm-up request comes first. Reported: requests answered (a label map), busy (the
page's "try again" message), timed out (the page's time limit), failed (anything else, with
Gradio's raw HTTP 503 counted apart), p50 / p95 latency of the answered ones, and the server's
resident memory (``VmRSS`` of ``/proc/<pid>/status``) after start, after the warm-up and after
the load, and its peak (``VmHWM``). Counts and time are bounded (``--clients`` <= 64,
``--requests`` <= 100, ``--max-seconds``). Errors are one line (``--debug``: the traceback).
"""
import argparse
import json
import math
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HOST = '127.0.0.1'
MAX_CLIENTS, MAX_REQUESTS = 64, 100
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def check_url(url: str) -> str:
    """``url`` with a trailing slash; only ``http://127.0.0.1:PORT/`` is accepted."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != 'http' or parts.hostname != HOST or parts.port is None:
        raise ValueError(f'--url must be http://{HOST}:PORT/ (this machine only), got {url!r}')
    return url.rstrip('/') + '/'


def rss_mb(pid: Optional[int], field: str = 'VmRSS') -> Optional[float]:
    """``field`` (``VmRSS``, ``VmHWM``) of process ``pid`` in MB, None if unknown."""
    if pid is None:
        return None
    try:
        with open(f'/proc/{pid}/status', encoding='utf-8') as status:
            for line in status:
                if line.startswith(field + ':'):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_server(config: str, checkpoint: Optional[str] = None,
                 extra: Sequence[str] = (), startup_timeout: float = 300.0,
                 log_path: Optional[str] = None) -> Dict[str, object]:
    """Start demo/web_demo.py on a free port of 127.0.0.1; wait until its page answers.

    Returns:
        dict: ``process`` (``subprocess.Popen``), ``url`` and ``log`` (its output file).

    Raises:
        RuntimeError: The server exited or did not answer within ``startup_timeout`` seconds
            (the end of its log is in the message).
    """
    port = _free_port()
    command = [sys.executable, osp.join(ROOT, 'demo', 'web_demo.py'), config, '--device', 'cpu',
               '--host', HOST, '--port', str(port), *extra]
    if checkpoint:
        command += ['--checkpoint', checkpoint]
    log_path = log_path or tempfile.mkstemp(prefix='web_demo_server_', suffix='.log')[1]
    env = dict(os.environ, PYTHONPATH=ROOT, GRADIO_ANALYTICS_ENABLED='False')
    with open(log_path, 'w', encoding='utf-8') as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    url, deadline = f'http://{HOST}:{port}/', time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            _OPENER.open(url + 'gradio_api/info', timeout=5).read()
            return dict(process=process, url=url, log=log_path)
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    stop_server(process)
    with open(log_path, encoding='utf-8', errors='replace') as log:
        tail = log.read()[-1500:]
    raise RuntimeError(f'the web demo did not start within {startup_timeout:g} s: {tail}')


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server this tool started (its own process, by its pid)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def upload(url: str, image: str) -> dict:
    """Upload ``image`` (multipart, as the page does); Gradio's file data for the API."""
    boundary = uuid.uuid4().hex
    with open(image, 'rb') as file:
        content = file.read()
    name = osp.basename(image)
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            'Content-Type: application/octet-stream\r\n\r\n').encode() + content + \
        f'\r\n--{boundary}--\r\n'.encode()
    request = urllib.request.Request(
        url + 'gradio_api/upload', data=body, method='POST',
        headers={'Content-Type': f'multipart/form-data; boundary={boundary}'})
    path = json.loads(_OPENER.open(request, timeout=60).read())[0]
    return dict(path=path, orig_name=name, meta={'_type': 'gradio.FileData'})


def call(url: str, data: list, timeout: float = 600.0) -> dict:
    """One raw API call of ``segment``: ``{'event': 'complete'|'error'|'http', 'data': ...}``."""
    request = urllib.request.Request(
        url + 'gradio_api/call/segment', data=json.dumps(dict(data=data)).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    try:
        event_id = json.loads(_OPENER.open(request, timeout=60).read())['event_id']
    except urllib.error.HTTPError as err:
        return dict(event='http', status=err.code, data=err.read().decode(errors='replace'))
    event = None
    with _OPENER.open(f'{url}gradio_api/call/segment/{event_id}', timeout=timeout) as stream:
        for raw in stream:
            line = raw.decode('utf-8', errors='replace').rstrip('\r\n')
            if line.startswith('event:'):
                event = line[6:].strip()
            elif line.startswith('data:') and event in ('complete', 'error'):
                text = line[5:].strip()
                try:
                    return dict(event=event, data=json.loads(text))
                except ValueError:
                    return dict(event=event, data=text)
    return dict(event='error', data='the stream ended without a result')


def classify(reply: dict) -> str:
    """``answered``, ``busy``, ``timeout``, ``http_503`` or ``failed``."""
    if reply['event'] == 'http':
        return 'http_503' if reply['status'] == 503 else 'failed'
    data = reply['data']
    if reply['event'] != 'complete' or not isinstance(data, list) or len(data) < 5:
        return 'failed'
    error = data[3] or ''
    if 'class="error busy"' in error:
        return 'busy'
    if 'class="error timeout"' in error:
        return 'timeout'
    return 'answered' if data[2] and not error else 'failed'


def fetch(url: str, file_data: dict) -> bytes:
    """The bytes of an output file (the label map) through Gradio's ``file=`` route."""
    link = file_data.get('url') or f"{url}gradio_api/file={file_data['path']}"
    if link.startswith('/'):
        link = url.rstrip('/') + link
    check_url(link.split('gradio_api')[0])
    return _OPENER.open(link, timeout=60).read()


def run_load(url: str, image: str, classes: str, mode: str, clients: int, requests: int,
             pid: Optional[int] = None, keep_label_maps: bool = False,
             max_seconds: float = 600.0) -> Dict[str, object]:
    """Warm up with one request, then ``clients`` threads send ``requests`` requests each.

    Returns:
        dict: counts per outcome, ``p50_s`` / ``p95_s`` of the answered requests, ``rss_mb``
        (``start``, ``after_first``, ``after_load``, ``peak``), ``seconds``, and with
        ``keep_label_maps`` the bytes of every answered label map (``label_maps``).

    Raises:
        ValueError: Counts out of bounds, or a URL that is not 127.0.0.1.
        RuntimeError: The warm-up request was not answered.
    """
    url = check_url(url)
    if not (1 <= clients <= MAX_CLIENTS and 1 <= requests <= MAX_REQUESTS):
        raise ValueError(f'--clients must be in 1..{MAX_CLIENTS} and --requests in '
                         f'1..{MAX_REQUESTS}, got {clients} and {requests}')
    rss = dict(start=rss_mb(pid))
    file_data = upload(url, image)
    first = call(url, [file_data, classes, mode], timeout=max_seconds)
    if classify(first) != 'answered':
        raise RuntimeError(f'the warm-up request was not answered: {str(first)[:500]}')
    rss['after_first'] = rss_mb(pid)
    deadline = time.monotonic() + max_seconds
    outcomes: List[dict] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(requests):
            if time.monotonic() > deadline:
                return
            start = time.monotonic()
            try:
                reply = call(url, [file_data, classes, mode],
                             timeout=max(deadline - time.monotonic(), 1.0))
                kind = classify(reply)
                label_map = fetch(url, reply['data'][2]) \
                    if kind == 'answered' and keep_label_maps else None
            except (OSError, ValueError) as err:
                kind, label_map, reply = 'failed', None, dict(event='exception', data=str(err))
            with lock:
                outcomes.append(dict(kind=kind, seconds=time.monotonic() - start,
                                     label_map=label_map, reply=str(reply)[:300]))

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0) + 60)
    rss.update(after_load=rss_mb(pid), peak=rss_mb(pid, 'VmHWM'))
    with lock:
        done = list(outcomes)
    latencies = sorted(o['seconds'] for o in done if o['kind'] == 'answered')
    report = {kind: sum(o['kind'] == kind for o in done)
              for kind in ('answered', 'busy', 'timeout', 'failed', 'http_503')}
    report.update(sent=clients * requests, unsent=clients * requests - len(done),
                  p50_s=_percentile(latencies, 50), p95_s=_percentile(latencies, 95),
                  seconds=time.monotonic() - started, rss_mb=rss,
                  failures=[o['reply'] for o in done if o['kind'] == 'failed'][:3])
    if keep_label_maps:
        report['label_maps'] = [o['label_map'] for o in done if o['kind'] == 'answered']
    return report


def _percentile(values: List[float], q: float) -> Optional[float]:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    rank = math.ceil(len(values) * q / 100)
    return values[min(len(values) - 1, max(0, rank - 1))]


def format_report(report: dict) -> str:
    """The report as a few lines of text."""
    def num(value, unit=''):
        return 'n/a' if value is None else f'{value:.2f}{unit}'
    rss = report['rss_mb']
    lines = [f"sent {report['sent']}: answered {report['answered']}, busy {report['busy']}, "
             f"timed out {report['timeout']}, failed {report['failed']} (Gradio HTTP 503: "
             f"{report['http_503']}), not sent {report['unsent']}",
             f"latency of the answered: p50 {num(report['p50_s'], ' s')}, "
             f"p95 {num(report['p95_s'], ' s')}; {report['seconds']:.1f} s in all",
             f"server RSS (MB): start {num(rss['start'])}, after the first request "
             f"{num(rss['after_first'])}, after the load {num(rss['after_load'])}, "
             f"peak {num(rss['peak'])}"]
    lines += [f'failure: {failure}' for failure in report['failures']]
    return '\n'.join(lines)


def scaled_example(size: int, folder: str) -> str:
    """The first image of ``demo/examples`` scaled to ``size`` x ``size``, a PNG in ``folder``."""
    import cv2
    if not 16 <= size <= 8192:
        raise ValueError(f'--size must be in 16..8192, got {size}')
    examples = osp.join(ROOT, 'demo', 'examples')
    names = sorted(n for n in os.listdir(examples) if n.endswith('.png')) \
        if osp.isdir(examples) else []
    if not names:
        raise FileNotFoundError(f'no example image in {examples}')
    image = cv2.resize(cv2.imread(osp.join(examples, names[0])), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    path = osp.join(folder, f'example_{size}.png')
    cv2.imwrite(path, image)
    return path


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description='Load test of demo/web_demo.py on 127.0.0.1')
    parser.add_argument('config', nargs='?', help='config or model-zoo name: start the demo')
    parser.add_argument('--checkpoint', help='weights of the started demo')
    parser.add_argument('--url', help=f'a running demo instead: http://{HOST}:PORT/')
    parser.add_argument('--pid', type=int, help='the running demo\'s process id (memory)')
    parser.add_argument('--image', help='the image every request sends')
    parser.add_argument('--size', type=int,
                        help='instead of --image: an example image scaled to SIZE x SIZE')
    parser.add_argument('--classes', default='sky, grass, sand, snow, brick')
    parser.add_argument('--mode', default='whole', choices=('whole', 'sliding_global'))
    parser.add_argument('--clients', type=int, default=8, help=f'1..{MAX_CLIENTS}')
    parser.add_argument('--requests', type=int, default=3, help=f'per client, 1..{MAX_REQUESTS}')
    parser.add_argument('--max-seconds', type=float, default=600.0,
                        help='no request is sent after this many seconds of load')
    parser.add_argument('--server-args', nargs=argparse.REMAINDER, default=[],
                        help='options of the started demo (last), e.g. --queue-size 8')
    parser.add_argument('--json', help='also write the report (without label maps) here')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the load test and print its report; errors are raised."""
    args = parse_args(argv)
    if (args.config is None) == (args.url is None):
        raise ValueError('give either CONFIG (the tool starts the demo) or --url')
    if (args.image is None) == (args.size is None):
        raise ValueError('give either --image or --size')
    if not 0 < args.max_seconds <= 3600:
        raise ValueError(f'--max-seconds must be in (0, 3600], got {args.max_seconds}')
    server, scratch = None, tempfile.mkdtemp(prefix='load_test_')
    try:
        if args.size is not None:
            args.image = scaled_example(args.size, scratch)
        if not osp.isfile(args.image):
            raise FileNotFoundError(f'--image {args.image} not found')
        if args.config:
            server = start_server(args.config, args.checkpoint, args.server_args,
                                  log_path=osp.join(scratch, 'server.log'))
            url, pid = server['url'], server['process'].pid
        else:
            url, pid = check_url(args.url), args.pid
        report = run_load(url, args.image, args.classes, args.mode, args.clients,
                          args.requests, pid=pid, max_seconds=args.max_seconds)
    finally:
        if server:
            stop_server(server['process'])
        shutil.rmtree(scratch, ignore_errors=True)
    print(f'{args.clients} clients x {args.requests} requests, {args.mode}, classes '
          f'{args.classes!r}, image {osp.basename(args.image)}')
    print(format_report(report))
    if args.json:
        with open(args.json, 'w', encoding='utf-8') as out:
            json.dump(report, out, indent=1)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` with one-line errors and exit status 1."""
    from mmseg_escnet.utils import run_cli
    return run_cli(main, 'load_test_web_demo.py', argv)


if __name__ == '__main__':
    sys.exit(cli())
