"""Verified, resumable downloads into the checkpoint cache, against a local HTTP server."""
import datetime
import hashlib
import json
import logging
import os
import os.path as osp
import random
import re
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn
from http_server import LocalHTTPServer, free_port
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint

from mmseg_escnet.checkpoints import download
from mmseg_escnet.checkpoints.download import (KNOWN_SHA256, ChecksumError, DownloadError,
                                               cache_path, default_cache_dir, download_checkpoint,
                                               expected_sha256)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
ETAG = f'"{SHA[:16]}"'  # the test server's ETag of DATA
OTHER = random.Random(1).randbytes(len(DATA))  # a changed file of the same length
# Subprocesses import only the download modules: the whole package (model registration) takes ~5 s.
_LIGHT_IMPORT = f'''
import os, sys, types
for name, sub in (('mmseg_escnet', ''), ('mmseg_escnet.checkpoints', 'checkpoints')):
    module = types.ModuleType(name)
    module.__path__ = [os.path.join({ROOT!r}, 'mmseg_escnet', sub)]
    sys.modules[name] = module
from mmseg_escnet.checkpoints.download import download_checkpoint
'''


@pytest.fixture
def server(tmp_path):
    root = tmp_path / 'served'
    root.mkdir()
    with LocalHTTPServer(str(root)) as srv:
        yield srv


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / 'cache')


def _capture(level):
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler(level=level)
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    return logger, handler, records


@pytest.fixture
def warnings_log():
    """Messages logged at WARNING or above through MMEngine's current logger."""
    logger, handler, records = _capture(logging.WARNING)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def info_log():
    """Messages logged at INFO or above through MMEngine's current logger."""
    logger, handler, records = _capture(logging.INFO)
    yield records
    logger.removeHandler(handler)


def _serve(server, name, data=DATA):
    path = osp.join(server.root, name)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return server.url(name)


def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _files(folder):
    """Files below ``folder``, without the (empty, harmless) ``.lock`` files."""
    return sorted(osp.relpath(osp.join(d, n), folder) for d, _, names in os.walk(folder)
                  for n in names if not n.endswith('.lock'))


def _log(server, name):
    return [(r.range, r.if_range, r.status) for r in server.requests_for(name)]


def test_cache_layout_and_default_dir(tmp_path, monkeypatch):
    assert default_cache_dir() == str(tmp_path / 'escnet_cache' / 'checkpoints')
    monkeypatch.delenv('MMSEG_ESCNET_CACHE')
    assert default_cache_dir() == osp.expanduser('~/.cache/mmseg_escnet/checkpoints')
    a = cache_path('https://host.org:8080/v1/x/model.pth#sha256=' + SHA, '/c')
    assert a == '/c/host.org_8080/v1/x/model.pth'
    assert cache_path('https://h/a/../../../etc/m.pth', '/c') == '/c/h/a/etc/m.pth'  # stays inside
    with pytest.raises(ValueError, match=r"'ftp://h/m.pth': not a downloadable URL"):
        cache_path('ftp://h/m.pth')
    with pytest.raises(ValueError, match='names no file'):
        cache_path('https://h/dir/')
    with pytest.raises(ValueError, match=r"path segment 'a%00b.pth' holds a NUL"):
        cache_path('https://h/a%00b.pth')


def test_query_and_encoded_slash_in_the_cache_path():
    tag = hashlib.sha256(b'download=1').hexdigest()[:8]
    assert cache_path('https://h/v2/x/model.pth?download=1', '/c') == f'/c/h/v2/x/model-{tag}.pth'
    assert cache_path('https://h/f?id=1', '/c') == \
        f'/c/h/f-{hashlib.sha256(b"id=1").hexdigest()[:8]}'
    # GCS / Firebase object names: an encoded '/' inside a segment becomes '_'
    firebase = 'https://firebasestorage.googleapis.com/v0/b/bkt/o/dir%2Fsub%2Fm.pth?alt=media'
    tag = hashlib.sha256(b'alt=media').hexdigest()[:8]
    assert cache_path(firebase, '/c') == \
        f'/c/firebasestorage.googleapis.com/v0/b/bkt/o/dir_sub_m-{tag}.pth'
    assert cache_path('https://h/o/..%2F..%2Fm.pth', '/c') == '/c/h/o/.._.._m.pth'


def test_different_queries_are_different_files(server, cache):
    url = _serve(server, 'x.pth')
    first = download_checkpoint(url + '?id=1', cache_dir=cache, progress=False)
    _serve(server, 'x.pth', OTHER)  # the server sends another file for ?id=2
    second = download_checkpoint(url + '?id=2', cache_dir=cache, progress=False)
    assert first != second and _read(first) == DATA and _read(second) == OTHER
    assert download_checkpoint(url + '?id=1', cache_dir=cache) == first  # cached, not re-fetched
    assert len(server.requests) == 2


def test_expected_sha256_sources():
    assert expected_sha256(f'https://h/m.pth#sha256={SHA[:12].upper()}') == SHA[:12]
    openai = f'https://openaipublic.azureedge.net/clip/models/{SHA}/ViT-B-16.pt'
    assert expected_sha256(openai) == SHA
    sam_h = 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth'
    assert expected_sha256(sam_h) == KNOWN_SHA256[sam_h]
    assert KNOWN_SHA256[sam_h].startswith('a7bf3b02')
    assert expected_sha256('https://h/catseg_vitb16-0a1b2c3d.pth') == '0a1b2c3d'
    assert expected_sha256('https://h/m-0a1b2c3.pth') is None  # 7 digits: not a hash
    assert expected_sha256('https://h/sam_vit_b_01ec64.pth') is None  # '_', 6 digits
    # the fragment wins over the name; a shorter agreeing fragment gives way to the full path hash
    assert expected_sha256(f'https://h/m-0a1b2c3d.pth#sha256={SHA}') == SHA
    assert expected_sha256(f'{openai}#sha256={SHA[:8]}') == SHA
    with pytest.raises(ValueError, match=rf'the hash 00000000 \(from the #sha256= fragment of the '
                       rf'URL\) contradicts the hash {SHA} \(from the 64-hex-digit segment'):
        expected_sha256(f'{openai}#sha256=00000000')
    with pytest.raises(ValueError, match=r'8 to 64 hex digits.*got .xyz'):
        expected_sha256('https://h/m.pth#sha256=xyz')
    with pytest.raises(ValueError, match=r"unsupported URL fragment 'md5=00'"):
        expected_sha256('https://h/m.pth#md5=00')


def test_download_verify_and_reuse_offline(server, cache):
    url = _serve(server, 'models/a.pth') + f'#sha256={SHA}'
    path = download_checkpoint(url, cache_dir=cache, progress=True)
    assert path == cache_path(url, cache) == osp.join(cache, f'127.0.0.1_{server.port}', 'models',
                                                      'a.pth')
    assert _read(path) == DATA
    # no .part (nor its .part.json) left behind; the record of the hash beside the file
    assert _files(cache) == [osp.relpath(p, cache) for p in (path, path + '.sha256')]
    assert osp.isfile(path + '.lock')
    assert [(r.method, r.range, r.status, r.sent) for r in server.requests] == [
        ('GET', None, 200, len(DATA))]
    server.stop()  # offline: the verified cached copy is used
    assert download_checkpoint(url, cache_dir=cache) == path


def test_resume_after_truncated_transfer(server, cache):
    url = _serve(server, 'b.pth') + f'#sha256={SHA}'
    server.truncate('b.pth', 100_000)
    final = cache_path(url, cache)
    with pytest.raises(DownloadError, match=rf'interrupted: 100000 of {len(DATA)} bytes arrived.*'
                       r'partial file .*b\.pth\.part is kept and running again resumes it'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    assert osp.getsize(final + '.part') == 100_000 and not osp.exists(final)
    path = download_checkpoint(url, cache_dir=cache, progress=False)
    assert _read(path) == DATA
    assert _files(cache) == [osp.relpath(p, cache) for p in (path, path + '.sha256')]
    resumed = server.requests[-1]
    assert (resumed.range, resumed.if_range, resumed.status, resumed.sent) == (
        'bytes=100000-', ETAG, 206, len(DATA) - 100_000)


def test_unpinned_resume_checks_the_validators(server, cache):
    """Without a known hash, the partial file is continued only with ``If-Range``."""
    url = _serve(server, 'k.pth')
    server.truncate('k.pth', 100_000)
    with pytest.raises(DownloadError, match='is kept and running again resumes it'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    part = cache_path(url, cache) + '.part'
    with open(part + '.json') as f:
        recorded = json.load(f)
    assert (recorded['url'], recorded['etag'], recorded['total']) == (url, ETAG, len(DATA))
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == DATA
    assert _log(server, 'k.pth') == [(None, None, 200), ('bytes=100000-', ETAG, 206)]
    assert not osp.exists(part) and not osp.exists(part + '.json')


@pytest.mark.parametrize('if_range', [True, False])
def test_resume_of_a_changed_file_starts_again(server, cache, if_range):
    """The server's file changed (same length) between the interrupted and the next request."""
    url = _serve(server, 'v.pth')
    server.truncate('v.pth', 100_000)
    with pytest.raises(DownloadError, match='100000 of'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    _serve(server, 'v.pth', OTHER)
    server.if_range = if_range  # without If-Range support the new ETag of the 206 tells
    path = download_checkpoint(url, cache_dir=cache, progress=False)
    assert _read(path) == OTHER  # not DATA[:100000] + OTHER[100000:]
    expected = [('bytes=100000-', ETAG, 200)] if if_range else [('bytes=100000-', ETAG, 206),
                                                                (None, None, 200)]
    assert _log(server, 'v.pth') == [(None, None, 200)] + expected


def test_resume_starts_again_when_the_length_changed(server, cache, info_log):
    longer = DATA + b'more'
    server.validators = False  # only the recorded length can tell; the pin allows resuming
    url = _serve(server, 'n.pth') + f'#sha256={hashlib.sha256(longer).hexdigest()}'
    server.truncate('n.pth', 100_000)
    with pytest.raises(DownloadError, match='100000 of'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    _serve(server, 'n.pth', longer)
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == longer
    assert _log(server, 'n.pth') == [(None, None, 200), ('bytes=100000-', None, 206),
                                     (None, None, 200)]
    assert any(f'the file has {len(longer)} bytes now, {len(DATA)} when the partial download '
               f'started; downloading it from the start' in m for m in info_log), info_log


def test_no_resume_without_validators_or_hash(server, cache, info_log):
    server.validators = False
    url = _serve(server, 'm.pth')
    server.truncate('m.pth', 100_000)
    with pytest.raises(DownloadError, match='is kept, but the server gives no ETag/Last-Modified '
                       'to resume it safely: running again downloads it from the start'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == DATA
    assert _log(server, 'm.pth') == [(None, None, 200), (None, None, 200)]
    assert any('not resuming the partial download' in m and 'no SHA-256' in m
               for m in info_log), info_log


def test_resume_restarts_when_the_server_ignores_ranges(server, cache):
    url = _serve(server, 'c.pth') + f'#sha256={SHA}'
    server.truncate('c.pth', 5000)
    with pytest.raises(DownloadError, match='5000 of'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    server.ignore_range = True
    path = download_checkpoint(url, cache_dir=cache, progress=False)
    assert _read(path) == DATA  # not the first 5000 bytes twice
    assert (server.requests[-1].range, server.requests[-1].status,
            server.requests[-1].sent) == ('bytes=5000-', 200, len(DATA))


def test_complete_part_is_verified_after_416(server, cache):
    url = _serve(server, 'd.pth') + f'#sha256={SHA}'
    final = cache_path(url, cache)
    os.makedirs(osp.dirname(final))
    with open(final + '.part', 'wb') as f:  # interrupted between the last byte and the rename
        f.write(DATA)
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == DATA
    assert _log(server, 'd.pth') == [(f'bytes={len(DATA)}-', None, 416)]
    with open(final + '.part', 'wb') as f:  # longer than the file: cannot be a prefix of it
        f.write(DATA + b'junk')
    os.remove(final)
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == DATA
    assert _log(server, 'd.pth')[1:] == [(f'bytes={len(DATA) + 4}-', None, 416), (None, None, 200)]


def test_wrong_hash_leaves_nothing_in_the_cache(server, cache):
    wrong = hashlib.sha256(b'other').hexdigest()
    url = _serve(server, 'e.pth') + f'#sha256={wrong}'
    with pytest.raises(ChecksumError, match=rf'{url.split("#")[0]} gave data with SHA-256 {SHA}, '
                       rf'but {wrong} was expected \(from the #sha256= fragment'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    assert _files(cache) == []
    assert issubclass(ChecksumError, DownloadError)


@pytest.mark.parametrize('status, reason', [(404, 'Not Found'), (500, 'Internal Server Error')])
def test_http_errors_name_url_status_and_cache_path(server, cache, status, reason):
    url = _serve(server, 'f.pth')
    server.fail('f.pth', status)
    with pytest.raises(DownloadError, match=rf'downloading {url} failed: HTTP {status} {reason} '
                       rf'\(cache path {cache_path(url, cache)}\)'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    assert _files(cache) == []


def test_unreachable_host(cache):
    host, port = free_port()
    url = f'http://{host}:{port}/g.pth'
    with pytest.raises(DownloadError, match=rf'{url} failed: cannot reach the server .*refused.*'
                       rf'cache path {cache_path(url, cache)}'):
        download_checkpoint(url, cache_dir=cache, progress=False, timeout=5)


def test_openai_style_hash_in_the_path(server, cache):
    good = _serve(server, f'clip/models/{SHA}/ViT-T.pt')
    assert _read(download_checkpoint(good, cache_dir=cache, progress=False)) == DATA
    bad_sha = hashlib.sha256(b'x').hexdigest()
    bad = _serve(server, f'clip/models/{bad_sha}/ViT-T.pt')
    with pytest.raises(ChecksumError, match=f'{bad_sha} was expected \\(from the 64-hex-digit'):
        download_checkpoint(bad, cache_dir=cache, progress=False)


def test_sha8_file_name_rule(server, cache):
    good = _serve(server, f'model-{SHA[:8]}.pth')
    assert _read(download_checkpoint(good, cache_dir=cache, progress=False)) == DATA
    bad = _serve(server, 'model-20240101.pth')  # a date, not a hash
    with pytest.raises(ChecksumError, match=r'suffix of the file name; if this name does not carry '
                       r'a hash, pin the real one with #sha256='):
        download_checkpoint(bad, cache_dir=cache, progress=False)
    # pinning the real hash overrides the name
    pinned = download_checkpoint(bad + f'#sha256={SHA}', cache_dir=cache, progress=False)
    assert _read(pinned) == DATA


def test_explicit_hash_wins_over_the_file_name(server, cache, info_log):
    dated = _serve(server, 'iter_80000-20240115.pth')  # the name suffix is a date
    assert _read(download_checkpoint(dated, sha256=SHA, cache_dir=cache, progress=False)) == DATA
    assert any(f'{dated}: the "-20240115" suffix of the file name is not its hash; {SHA} (as '
               f'given by the caller or the model index) is used instead' in m
               for m in info_log), info_log
    plain = _serve(server, 'h.pth')
    with pytest.raises(ChecksumError, match='as given by the caller'):
        download_checkpoint(plain, sha256='0' * 64, cache_dir=cache, progress=False)
    with pytest.raises(ValueError, match='8 to 64 hex digits'):
        download_checkpoint(plain, sha256='not-hex', cache_dir=cache)
    assert _read(download_checkpoint(plain, sha256=SHA, cache_dir=cache, progress=False)) == DATA


@pytest.mark.parametrize('url, source', [
    (f'https://h/m.pth#sha256={SHA}', 'from the #sha256= fragment'),
    (f'https://h/clip/models/{SHA}/ViT-B-16.pt', 'from the 64-hex-digit segment'),
    ('https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth', 'the published hash'),
])
def test_explicit_hash_contradicting_a_strong_source(url, source, cache):
    with pytest.raises(ValueError, match=rf'sha256=00000000 contradicts the hash [0-9a-f]{{64}} '
                       rf'that .* carries \({source}'):
        download_checkpoint(url, sha256='00000000', cache_dir=cache)


def test_unpinned_url_warns_with_its_hash(server, cache, warnings_log):
    url = _serve(server, 'i.pth')
    path = download_checkpoint(url, cache_dir=cache, progress=False)
    assert _read(path) == DATA
    assert any(f'{url} has no known SHA-256' in m and f'Pin it by using the URL {url}#sha256={SHA}'
               in m for m in warnings_log), warnings_log
    server.stop()  # the pinned URL verifies the same cached file, offline
    assert download_checkpoint(f'{url}#sha256={SHA}', cache_dir=cache) == path


def test_trust_on_first_use_detects_a_changed_cached_file(server, cache, warnings_log,
                                                          monkeypatch):
    url = _serve(server, 'tofu.pth')
    path = download_checkpoint(url, cache_dir=cache, progress=False)

    def record():
        with open(path + '.sha256') as f:
            return json.load(f)

    assert record() == dict(sha256=SHA, size=len(DATA), mtime_ns=os.stat(path).st_mtime_ns,
                            url=url)
    with monkeypatch.context() as patch:  # unchanged size and mtime: used without hashing
        patch.setattr(download, '_HASH_MEMO', {})
        patch.setattr(download, 'file_sha256', lambda p: pytest.fail(f'{p} was hashed'))
        assert download_checkpoint(url, cache_dir=cache) == path
    later = os.stat(path).st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))  # touched, same content: hashed again, kept
    assert download_checkpoint(url, cache_dir=cache) == path and record()['mtime_ns'] == later
    with open(path, 'r+b') as f:  # damaged later
        f.write(b'\0\0\0\0')
    damaged = hashlib.sha256(b'\0\0\0\0' + DATA[4:]).hexdigest()
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == DATA
    assert any(f'cached {path} has SHA-256 {damaged}, '
               f'but {SHA} was recorded when it was downloaded' in m and 'deleting it and '
               'downloading' in m for m in warnings_log), warnings_log
    assert len(server.requests) == 2 and record()['sha256'] == SHA
    os.remove(path + '.sha256')  # cached by an older version: hashed once and recorded
    assert download_checkpoint(url, cache_dir=cache) == path and record()['sha256'] == SHA
    assert len(server.requests) == 2


def test_corrupted_cache_is_downloaded_again(server, cache, warnings_log):
    url = _serve(server, 'j.pth') + f'#sha256={SHA}'
    path = download_checkpoint(url, cache_dir=cache, progress=False)
    with open(path, 'r+b') as f:
        f.write(b'\0\0\0\0')
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == DATA
    assert any('deleting it and downloading' in m for m in warnings_log)
    assert len(server.requests) == 2


def test_file_url(tmp_path, cache):
    source = tmp_path / 'local.pth'
    source.write_bytes(DATA)
    url = f'file://{source}#sha256={SHA}'
    assert _read(download_checkpoint(url, cache_dir=cache, progress=False)) == DATA


def test_checkpoint_loader_verifies_http(server, tmp_path):
    """``load_checkpoint``/``load_from``/``init_cfg`` URLs go through the verified cache."""
    import mmseg_escnet
    mmseg_escnet.register_checkpoint_loaders()  # what our tools and configs do
    model = nn.Linear(3, 2)
    torch.save({'state_dict': model.state_dict(), 'meta': {'iter': 1}}, tmp_path / 'w.pth')
    data = (tmp_path / 'w.pth').read_bytes()
    url = _serve(server, 'w.pth', data) + f'#sha256={hashlib.sha256(data).hexdigest()}'
    other = nn.Linear(3, 2)
    load_checkpoint(other, url, map_location='cpu')
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
    assert osp.isfile(cache_path(url, default_cache_dir()))  # the MMSEG_ESCNET_CACHE cache
    with pytest.raises(ChecksumError, match='was expected'):
        load_checkpoint(other, _serve(server, 'w2.pth', data) + '#sha256=' + '0' * 64)


_RACE_SCRIPT = _LIGHT_IMPORT + '''
print('READY', flush=True)
sys.stdin.readline()
print('PATH', download_checkpoint(sys.argv[1], cache_dir=sys.argv[2], progress=False), flush=True)
'''


def _wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.01)


def test_concurrent_processes_share_one_verified_download(server, cache):
    """Process B asks for the URL while process A is downloading it from a slow server."""
    url = _serve(server, 'race.pth') + f'#sha256={SHA}'
    server.slow('race.pth', 1.5)
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, '-c', _RACE_SCRIPT, url, cache], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout.readline() == 'READY\n', proc.stderr.read()[-3000:]
        procs[0].stdin.write('go\n')
        procs[0].stdin.flush()
        path = cache_path(url, cache)
        _wait_for(lambda: osp.isfile(path + '.part'))  # A is receiving the body
        procs[1].stdin.write('go\n')
        procs[1].stdin.flush()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == f'PATH {path}'
    assert 'is locked by another process' in outputs[1][0]  # B waited for A
    assert _read(path) == DATA
    assert [(r.range, r.status, r.sent) for r in server.requests] == [(None, 200, len(DATA))]
    assert _files(cache) == [osp.relpath(p, cache) for p in (path, path + '.sha256')]


_RANK1_SCRIPT = _LIGHT_IMPORT + '''
import datetime, torch.distributed as dist
dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=120))
try:
    download_checkpoint(sys.argv[1], cache_dir=sys.argv[3], progress=False)
except Exception as error:
    print('ERROR', type(error).__name__, error, *getattr(error, '__notes__', []))
path = download_checkpoint(sys.argv[2], cache_dir=sys.argv[3], progress=False)
print('PATH', dist.get_rank(), path, len(open(path, 'rb').read()))
dist.destroy_process_group()
'''


def test_distributed_rank_zero_downloads_once(server, cache):
    """This process is rank 0 of a 2-process gloo group; a subprocess is rank 1.

    A download that fails on rank 0 fails on rank 1 with the same error, without a request of
    its own; a download that works on rank 0 is used by rank 1 from the cache.
    """
    bad = _serve(server, 'bad.pth')
    server.fail('bad.pth', 500, times=None)
    url = _serve(server, 'dist.pth') + f'#sha256={SHA}'
    server.delay('dist.pth', 1.5)  # rank 1 would ask too if it did not wait for rank 0
    port = str(free_port()[1])
    env = dict(os.environ, RANK='1', LOCAL_RANK='1', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=port, OMP_NUM_THREADS='1')
    rank1 = subprocess.Popen([sys.executable, '-c', _RANK1_SCRIPT, bad, url, cache], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    message = rf'downloading {bad} failed: HTTP 500 Internal Server Error \(cache path .*\)'
    try:
        torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                                             rank=0, world_size=2,
                                             timeout=datetime.timedelta(seconds=120))
        try:
            with pytest.raises(DownloadError, match=message):
                download_checkpoint(bad, cache_dir=cache, progress=False)
            path = download_checkpoint(url, cache_dir=cache, progress=False)
        finally:
            torch.distributed.destroy_process_group()
        out, err = rank1.communicate(timeout=120)
    finally:
        rank1.kill()
    assert rank1.returncode == 0, err[-3000:]
    errors = [line for line in out.splitlines() if line.startswith('ERROR')]
    assert len(errors) == 1 and re.fullmatch(
        rf'ERROR DownloadError {message} \(raised on rank 0, which did this for rank 1; rank 1 '
        rf'did not try again\)', errors[0]), out
    assert len(server.requests_for('bad.pth')) == 1  # rank 1 did not ask
    assert path == cache_path(url, cache) and _read(path) == DATA
    assert out.strip().splitlines()[-1] == f'PATH 1 {path} {len(DATA)}'
    assert len(server.requests_for('dist.pth')) == 1  # rank 1 waited and used rank 0's download
