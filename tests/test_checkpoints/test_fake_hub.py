"""The fake Hub (fake_hub.py) against the real huggingface_hub client, in-process and in a child.

Also pins down what huggingface_hub 2.4.0 does on an interrupted transfer: ``http_get`` catches
the ``httpx2.RemoteProtocolError``, sleeps 1 s and retries inside the same ``hf_hub_download``
call (up to 5 times in a row without new data), resuming with ``Range: bytes=<n>-`` where n
counts only the bytes already written; those are written in ``DOWNLOAD_CHUNK_SIZE`` (10 MiB)
pieces, so a cut before 10 MiB leaves nothing written and the retry is a full GET without
``Range``. The partial data goes to a per-download ``<etag>.<8 hex>.incomplete`` file that is
deleted on success and on failure.
"""
import hashlib
import os
import subprocess
import sys
import types

import pytest
from fake_hub import FakeHub, hub_env, hub_environ

huggingface_hub = pytest.importorskip('huggingface_hub')
from huggingface_hub import constants, file_download, hf_hub_download  # noqa: E402
from huggingface_hub.errors import (LocalEntryNotFoundError, RemoteEntryNotFoundError,  # noqa
                                    RepositoryNotFoundError, RevisionNotFoundError)

REPO = 'org/model'


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture
def cache(tmp_path, hub, monkeypatch):
    cache_dir = tmp_path / 'hub'
    hub_env(monkeypatch, hub, cache_dir)
    return cache_dir


@pytest.fixture
def no_sleep(monkeypatch):
    """Skip the 1 s pause of ``http_get`` before a retry (file_download's ``time`` only)."""
    slept = []
    fake_time = types.SimpleNamespace(sleep=slept.append)
    monkeypatch.setattr(file_download, 'time', fake_time)
    return slept


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def gets(hub):
    return [r for r in hub.requests if r.method == 'GET']


def incomplete_files(cache_dir):
    return [os.path.join(d, f) for d, _, files in os.walk(cache_dir) for f in files
            if f.endswith('.incomplete')]


def test_patching_points_the_library_at_the_fake(hub, cache):
    assert constants.ENDPOINT == hub.endpoint
    assert file_download.hf_hub_url(REPO, 'a.pth').startswith(hub.endpoint + '/org/model/resolve/')
    assert os.environ['HF_ENDPOINT'] == hub.endpoint  # for subprocesses of the code under test
    assert constants.HF_HUB_CACHE == str(cache)
    assert huggingface_hub.utils.get_token() is None  # no developer token leaks in


@pytest.mark.parametrize('filename,data', [
    ('weights.pth', b'\x00lfs checkpoint bytes' * 50),  # LFS: 302 to the CDN
    ('config.json', b'{"a": 1}'),                       # regular file: 200 on resolve
])
def test_download_then_cache_hit(hub, cache, filename, data):
    sha = hub.add_file(REPO, filename, data)
    path = hf_hub_download(REPO, filename)
    assert read(path) == data
    assert f'/snapshots/{sha}/' in path
    blob = os.path.basename(os.path.realpath(path))
    if filename.endswith('.pth'):  # LFS: the blob is named by the SHA-256 of the content
        assert blob == hashlib.sha256(data).hexdigest()
        assert [r.path for r in gets(hub)] == [f'/cdn-lfs/{REPO}/{blob}']
    else:  # regular file: by its git blob SHA-1
        assert blob == hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()
        assert [r.path for r in gets(hub)] == [f'/{REPO}/resolve/main/{filename}']
    assert read(os.path.join(cache, 'models--org--model', 'refs', 'main')) == sha.encode()

    hub.clear_requests()
    assert hf_hub_download(REPO, filename) == path  # cached: a HEAD to check 'main', no GET
    assert [r.method for r in hub.requests] == ['HEAD']
    hub.clear_requests()
    assert hf_hub_download(REPO, filename, revision=sha) == path  # pinned + cached: no request
    assert hub.requests == []


def test_offline_mode(hub, cache, monkeypatch):
    hub.add_file(REPO, 'weights.pth', b'cached bytes')
    hub.add_file(REPO, 'other.pth', b'never downloaded')
    path = hf_hub_download(REPO, 'weights.pth')
    hub.clear_requests()

    hub_env(monkeypatch, hub, cache, offline=True)
    assert constants.is_offline_mode()
    assert hf_hub_download(REPO, 'weights.pth') == path
    assert read(path) == b'cached bytes'
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, 'other.pth')
    with pytest.raises(LocalEntryNotFoundError):  # local_files_only gives the same error type
        hf_hub_download(REPO, 'other.pth', local_files_only=True)
    assert hub.requests == []  # blocked before sending, not refused by the server


def test_pinned_old_commit_after_main_moved(hub, cache):
    old = hub.add_file(REPO, 'weights.pth', b'version 1')
    new = hub.add_file(REPO, 'weights.pth', b'version 2 is longer')
    assert old != new and len(old) == len(new) == 40 and hub.commit(REPO) == new
    assert read(hf_hub_download(REPO, 'weights.pth')) == b'version 2 is longer'
    assert read(hf_hub_download(REPO, 'weights.pth', revision=old)) == b'version 1'
    assert read(hf_hub_download(REPO, 'weights.pth', revision='main')) == b'version 2 is longer'


def test_other_files_follow_the_branch_and_errors_map_to_hub_exceptions(hub, cache):
    first = hub.add_file(REPO, 'a.json', b'{}')
    hub.add_file(REPO, 'b.json', b'[]')  # the new commit still holds a.json
    assert read(hf_hub_download(REPO, 'a.json')) == b'{}'
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, 'b.json', revision=first)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, 'missing.json')
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, 'a.json', revision='no-such-branch')
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download('org/absent', 'a.json')
    dev = hub.add_file(REPO, 'c.json', b'"dev"', revision='dev')
    assert hub.commit(REPO, 'dev') == dev and hub.commit(REPO, 'main') != dev
    assert read(hf_hub_download(REPO, 'c.json', revision='dev')) == b'"dev"'


def test_token(hub, cache):
    hub.add_file(REPO, 'weights.pth', b'private')
    hub.require_token('hf_test_token')
    with pytest.raises(RepositoryNotFoundError):  # 401 without a token: reported as not found
        hf_hub_download(REPO, 'weights.pth')
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as info:  # wrong token
        hf_hub_download(REPO, 'weights.pth', token='hf_wrong')
    assert info.value.response.status_code == 401
    hub.clear_requests()
    assert read(hf_hub_download(REPO, 'weights.pth', token='hf_test_token')) == b'private'
    head, get = hub.requests
    assert head.method == 'HEAD' and head.headers['authorization'] == 'Bearer hf_test_token'
    # the CDN GET (another origin) goes without it, as to the real Hub's signed CDN URLs
    assert get.method == 'GET' and get.path.startswith('/cdn-lfs/')
    assert 'authorization' not in get.headers


def test_token_reaches_a_regular_file_get(hub, cache):
    hub.add_file(REPO, 'config.json', b'{}')
    hub.require_token('hf_test_token', repo_id=REPO)
    assert read(hf_hub_download(REPO, 'config.json', token='hf_test_token')) == b'{}'
    assert [r.headers.get('authorization') for r in hub.requests] == ['Bearer hf_test_token'] * 2


def test_interrupted_small_transfer_is_retried_in_full(hub, cache, no_sleep):
    data = os.urandom(100_000)
    hub.add_file(REPO, 'weights.pth', data)
    hub.fail_after(REPO, 'weights.pth', 40_000)
    path = hf_hub_download(REPO, 'weights.pth')  # no exception: retried within the same call
    assert read(path) == data
    first, second = gets(hub)
    assert 'range' not in first.headers
    # below DOWNLOAD_CHUNK_SIZE nothing was written, so the retry starts from 0 without Range
    assert 'range' not in second.headers
    assert no_sleep == [1]
    assert incomplete_files(cache) == []


def test_interrupted_large_transfer_resumes_with_range(hub, cache, no_sleep):
    chunk = constants.DOWNLOAD_CHUNK_SIZE  # 10 MiB
    data = os.urandom(chunk + 2_000_000)
    hub.add_file(REPO, 'big.safetensors', data)
    hub.fail_after(REPO, 'big.safetensors', chunk + 500_000)
    assert read(hf_hub_download(REPO, 'big.safetensors')) == data
    first, second = gets(hub)
    assert 'range' not in first.headers
    assert second.headers['range'] == f'bytes={chunk}-'  # whole chunks written before the cut
    assert no_sleep == [1]
    assert incomplete_files(cache) == []


def test_persistently_interrupted_transfer_fails_cleanly(hub, cache, no_sleep):
    import httpx2
    hub.add_file(REPO, 'weights.pth', b'x' * 10_000)
    hub.fail_after(REPO, 'weights.pth', 100, times=None)
    with pytest.raises(httpx2.RemoteProtocolError):
        hf_hub_download(REPO, 'weights.pth')
    assert len(gets(hub)) == 6 and no_sleep == [1] * 5  # first try + 5 retries
    assert incomplete_files(cache) == []  # the partial file is removed
    blobs = os.path.join(cache, 'models--org--model', 'blobs')
    assert not os.path.isdir(blobs) or os.listdir(blobs) == []
    hub.clear_faults()
    hub.clear_requests()
    assert read(hf_hub_download(REPO, 'weights.pth')) == b'x' * 10_000
    assert len(gets(hub)) == 1


def test_subprocess_routed_by_environment(hub, tmp_path):
    sha = hub.add_file(REPO, 'weights.pth', b'from a child process')
    cache_dir = tmp_path / 'subhub'
    code = ('import sys; from huggingface_hub import hf_hub_download as d; '
            'sys.stdout.write(d(sys.argv[1], sys.argv[2]))')
    run = subprocess.run([sys.executable, '-c', code, REPO, 'weights.pth'],
                         env=hub_environ(hub, cache_dir), capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(str(cache_dir)) and f'/snapshots/{sha}/' in run.stdout
    assert read(run.stdout) == b'from a child process'
    assert [r.method for r in hub.requests] == ['HEAD', 'GET']
    assert all('authorization' not in r.headers for r in hub.requests)

    hub.clear_requests()  # offline child: served from the cache, nothing sent
    run = subprocess.run([sys.executable, '-c', code, REPO, 'weights.pth'],
                         env=hub_environ(hub, cache_dir, offline=True), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert read(run.stdout) == b'from a child process' and hub.requests == []
