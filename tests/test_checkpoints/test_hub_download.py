"""Hub-hosted files go through huggingface_hub (its endpoint, cache, offline mode and token) and
are verified: against a fake Hub on 127.0.0.1 (``fake_hub.py``)."""
import hashlib
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import build_random_tiny_model
from PIL import Image

from mmseg_escnet.checkpoints.download import ChecksumError, DownloadError, download_checkpoint
from mmseg_escnet.checkpoints.hub_download import HubFile, parse_hub_url

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from fake_hub import FakeHub, hub_env, hub_environ  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REPO, FILE = 'org/model', 'weights.pth'
URL = f'https://huggingface.co/{REPO}/resolve/main/{FILE}'


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


def _gets(hub):
    return [r for r in hub.requests if r.method == 'GET']


def test_parse_hub_url():
    assert parse_hub_url(URL) == HubFile(REPO, 'main', FILE)
    assert parse_hub_url('https://huggingface.co/o/r/resolve/abc123/sub/dir/x.bin') == \
        HubFile('o/r', 'abc123', 'sub/dir/x.bin')
    for other in ('https://example.com/o/r/resolve/main/x.pth', 'http://huggingface.co/o/r/'
                  'resolve/main/x.pth', 'https://huggingface.co/datasets/o/r/resolve/main/x',
                  'https://huggingface.co/o/r/blob/main/x.pth', 'https://huggingface.co/o/r'):
        assert parse_hub_url(other) is None, other


def test_download_cache_reuse_and_hash(hub, monkeypatch, tmp_path):
    data = os.urandom(5000)
    hub.add_file(REPO, FILE, data)
    hub_env(monkeypatch, hub, tmp_path / 'hf')
    ours = str(tmp_path / 'ours')
    path = download_checkpoint(f'{URL}#sha256={_sha(data)}', cache_dir=ours)
    assert open(path, 'rb').read() == data
    assert osp.realpath(path).startswith(str(tmp_path / 'hf'))  # the Hugging Face cache
    assert len(_gets(hub)) == 1
    hub.clear_requests()
    assert download_checkpoint(URL, sha256=_sha(data), cache_dir=ours) == path
    assert _gets(hub) == []  # cached: no download
    # offline, cached: no request at all
    hub_env(monkeypatch, hub, tmp_path / 'hf', offline=True)
    hub.clear_requests()
    assert download_checkpoint(URL, sha256=_sha(data), cache_dir=ours) == path
    assert hub.requests == []


def test_offline_without_the_file_names_it(hub, monkeypatch, tmp_path):
    hub.add_file(REPO, FILE, b'x' * 100)
    hub_env(monkeypatch, hub, tmp_path / 'hf', offline=True)
    with pytest.raises(DownloadError) as error:
        download_checkpoint(URL, cache_dir=str(tmp_path / 'ours'))
    message = str(error.value)
    assert '\n' not in message and f'{FILE} of {REPO} at revision main' in message
    assert 'HF_HUB_OFFLINE is set' in message and hub.requests == []


def test_wrong_hash_and_a_moved_revision(hub, monkeypatch, tmp_path):
    old = b'old weights' * 100
    commit = hub.add_file(REPO, FILE, old)
    hub_env(monkeypatch, hub, tmp_path / 'hf')
    ours = str(tmp_path / 'ours')
    with pytest.raises(ChecksumError, match='pin the commit'):
        download_checkpoint(URL, sha256='0' * 64, cache_dir=ours)
    hub.add_file(REPO, FILE, b'new weights' * 100)  # 'main' moves
    with pytest.raises(ChecksumError, match=r"revision 'main' is a branch, it moved"):
        download_checkpoint(URL, sha256=_sha(old), cache_dir=ours)
    pinned = f'https://huggingface.co/{REPO}/resolve/{commit}/{FILE}'
    path = download_checkpoint(pinned, sha256=_sha(old), cache_dir=ours)
    assert open(path, 'rb').read() == old


def test_mirror_endpoint_token_and_errors(hub, monkeypatch, tmp_path):
    with FakeHub() as mirror:  # HF_ENDPOINT: the URL's host only names the Hub
        data = b'mirrored' * 50
        mirror.add_file(REPO, FILE, data)
        mirror.require_token('hf_secret')
        hub_env(monkeypatch, mirror, tmp_path / 'hf')
        with pytest.raises(DownloadError, match='needs HF_TOKEN'):
            download_checkpoint(URL, cache_dir=str(tmp_path / 'ours'))
        monkeypatch.setenv('HF_TOKEN', 'hf_secret')
        path = download_checkpoint(URL, sha256=_sha(data), cache_dir=str(tmp_path / 'ours'))
        assert open(path, 'rb').read() == data and hub.requests == []
        assert any(r.headers.get('authorization') == 'Bearer hf_secret' for r in mirror.requests)
        with pytest.raises(DownloadError, match='missing.pth of org/model.*not found'):
            download_checkpoint(URL.replace(FILE, 'missing.pth'),
                                cache_dir=str(tmp_path / 'ours'))


def test_interrupted_transfer_is_retried(hub, monkeypatch, tmp_path):
    import huggingface_hub.file_download as file_download
    monkeypatch.setattr(file_download.time, 'sleep', lambda s: None)  # its 1 s back-off
    data = os.urandom(300_000)
    hub.add_file(REPO, FILE, data)
    hub.fail_after(REPO, FILE, 1000)
    hub_env(monkeypatch, hub, tmp_path / 'hf')
    path = download_checkpoint(URL, sha256=_sha(data), cache_dir=str(tmp_path / 'ours'))
    assert open(path, 'rb').read() == data and len(_gets(hub)) == 2


def test_zoo_name_and_demo_through_the_fake_hub(hub, tmp_path):
    """A model-zoo name whose weights are on the Hub: the image demo fetches them through
    HF_ENDPOINT, runs offline from the Hugging Face cache, and stops with one line naming the
    file when offline without it."""
    buffer = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=build_random_tiny_model('catseg').state_dict(), meta={}), buffer)
    data = buffer.read_bytes()
    hub.add_file(REPO, FILE, data)
    index = tmp_path / 'model-index.yml'
    index.write_text(yaml.safe_dump(dict(Models=[dict(
        Name='tiny_on_hub', **{'In Collection': 'CAT-Seg'},
        Config=osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py'), Weights=URL,
        **{'Weights SHA-256': _sha(data)})])))
    image = tmp_path / 'img.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(image)

    def demo(offline, cache):
        env = dict(hub_environ(hub, tmp_path / cache, offline=offline),
                   MMSEG_ESCNET_MODEL_INDEX=str(index), MMSEG_ESCNET_CACHE=str(tmp_path / 'ours'),
                   PYTHONPATH=ROOT)
        return subprocess.run([sys.executable, 'demo/image_demo.py', str(image), 'tiny_on_hub',
                               '--vocab', 'sky,grass', '--out', str(tmp_path / 'out.png')],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    first = demo(False, 'hf')
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(_gets(hub)) == 1
    hub.clear_requests()
    offline = demo(True, 'hf')
    assert offline.returncode == 0, offline.stderr[-2000:]
    assert hub.requests == []
    missing = demo(True, 'empty')
    assert missing.returncode == 1
    last = missing.stderr.strip().splitlines()[-1]
    assert f'{FILE} of {REPO} at revision main' in last and 'HF_HUB_OFFLINE is set' in last


def test_the_commit_of_a_branch_can_be_pinned(hub, monkeypatch, tmp_path):
    from huggingface_hub import hf_hub_download

    from mmseg_escnet.checkpoints.hub_download import pinned_url
    commit = hub.add_file(REPO, 'sub/dir/w.pth', b'abc' * 10)
    hub_env(monkeypatch, hub, tmp_path / 'hf')
    path = hf_hub_download(REPO, 'sub/dir/w.pth')
    branch = HubFile(REPO, 'main', 'sub/dir/w.pth')
    assert pinned_url(branch, path) == \
        f'https://huggingface.co/{REPO}/resolve/{commit}/sub/dir/w.pth'
    assert pinned_url(HubFile(REPO, commit, 'sub/dir/w.pth'), path) is None  # already pinned
    assert pinned_url(branch, str(tmp_path / 'elsewhere' / 'w.pth')) is None
