"""Verified, resumable downloads into the checkpoint cache, against a local HTTP server."""
import datetime
import hashlib
import logging
import os
import os.path as osp
import random
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from http_server import LocalHTTPServer, free_port
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint

from mmseg_escnet.checkpoints.download import (KNOWN_SHA256, ChecksumError, DownloadError,
                                               cache_path, default_cache_dir, download_checkpoint,
                                               expected_sha256)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATA = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / 'served'
    root.mkdir()
    with LocalHTTPServer(str(root)) as srv:
        yield srv


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / 'cache')


@pytest.fixture
def warnings_log():
    """Messages logged at WARNING or above through MMEngine's current logger."""
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
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
    return sorted(osp.relpath(osp.join(d, n), folder) for d, _, names in os.walk(folder)
                  for n in names)


def test_cache_layout_and_default_dir(tmp_path, monkeypatch):
    assert default_cache_dir() == str(tmp_path / 'escnet_cache' / 'checkpoints')
    monkeypatch.delenv('MMSEG_ESCNET_CACHE')
    assert default_cache_dir() == osp.expanduser('~/.cache/mmseg_escnet/checkpoints')
    a = cache_path('https://host.org:8080/v1/x/model.pth#sha256=' + SHA, '/c')
    b = cache_path('https://host.org/v2/x/model.pth?download=1', '/c')
    assert (a, b) == ('/c/host.org_8080/v1/x/model.pth', '/c/host.org/v2/x/model.pth')
    assert cache_path('https://h/a/../../../etc/m.pth', '/c') == '/c/h/a/etc/m.pth'  # stays inside
    with pytest.raises(ValueError, match=r"'ftp://h/m.pth': not a downloadable URL"):
        cache_path('ftp://h/m.pth')
    with pytest.raises(ValueError, match='names no file'):
        cache_path('https://h/dir/')


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
    # the fragment wins over the name
    assert expected_sha256(f'https://h/m-0a1b2c3d.pth#sha256={SHA}') == SHA
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
    assert _files(cache) == [osp.relpath(path, cache)]  # no .part left behind
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
    assert _read(path) == DATA and not osp.exists(final + '.part')
    resumed = server.requests[-1]
    assert (resumed.range, resumed.status, resumed.sent) == ('bytes=100000-', 206,
                                                             len(DATA) - 100_000)


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
    assert [(r.range, r.status, r.sent) for r in server.requests] == [(f'bytes={len(DATA)}-', 416,
                                                                        0)]
    with open(final + '.part', 'wb') as f:  # longer than the file: cannot be a prefix of it
        f.write(DATA + b'junk')
    os.remove(final)
    with pytest.raises(DownloadError, match=rf'has {len(DATA) + 4} bytes but the file has '
                       rf'{len(DATA)}; it was deleted'):
        download_checkpoint(url, cache_dir=cache, progress=False)
    assert _files(cache) == []


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


def test_explicit_sha256_argument(server, cache):
    url = _serve(server, f'h-{SHA[:8]}.pth')
    with pytest.raises(ValueError, match=f'sha256=00000000 contradicts the hash {SHA[:8]}'):
        download_checkpoint(url, sha256='00000000', cache_dir=cache)
    with pytest.raises(ValueError, match='8 to 64 hex digits'):
        download_checkpoint(url, sha256='not-hex', cache_dir=cache)
    plain = _serve(server, 'h.pth')
    with pytest.raises(ChecksumError, match='as given by the caller'):
        download_checkpoint(plain, sha256='0' * 64, cache_dir=cache, progress=False)
    assert _read(download_checkpoint(plain, sha256=SHA, cache_dir=cache, progress=False)) == DATA


def test_unpinned_url_warns_with_its_hash(server, cache, warnings_log):
    url = _serve(server, 'i.pth')
    path = download_checkpoint(url, cache_dir=cache, progress=False)
    assert _read(path) == DATA
    assert any(f'{url} has no known SHA-256' in m and f'Pin it by using the URL {url}#sha256={SHA}'
               in m for m in warnings_log), warnings_log
    server.stop()  # the pinned URL verifies the same cached file, offline
    assert download_checkpoint(f'{url}#sha256={SHA}', cache_dir=cache) == path


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


_RANK1_SCRIPT = '''
import datetime, sys, torch.distributed as dist
from mmseg_escnet.checkpoints.download import download_checkpoint
dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=120))
path = download_checkpoint(sys.argv[1], cache_dir=sys.argv[2], progress=False)
print('PATH', dist.get_rank(), path, len(open(path, 'rb').read()))
dist.destroy_process_group()
'''


def test_distributed_rank_zero_downloads_once(server, cache):
    """This process is rank 0 of a 2-process gloo group; a subprocess is rank 1."""
    url = _serve(server, 'dist.pth') + f'#sha256={SHA}'
    server.delay('dist.pth', 1.5)  # rank 1 would ask too if it did not wait for rank 0
    port = str(free_port()[1])
    env = dict(os.environ, RANK='1', LOCAL_RANK='1', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=port, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    rank1 = subprocess.Popen([sys.executable, '-c', _RANK1_SCRIPT, url, cache], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                                             rank=0, world_size=2,
                                             timeout=datetime.timedelta(seconds=120))
        try:
            path = download_checkpoint(url, cache_dir=cache, progress=False)
        finally:
            torch.distributed.destroy_process_group()
        out, err = rank1.communicate(timeout=120)
    finally:
        rank1.kill()
    assert rank1.returncode == 0, err[-3000:]
    assert path == cache_path(url, cache) and _read(path) == DATA
    assert out.strip().splitlines()[-1] == f'PATH 1 {path} {len(DATA)}'
    assert len(server.requests) == 1  # rank 1 waited and used rank 0's download
