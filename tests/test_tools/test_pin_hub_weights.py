"""tools/misc/pin_hub_weights.py: Hub weights of the model index pinned to a commit and SHA-256,
against a fake Hub on 127.0.0.1."""
import hashlib
import importlib.util
import os
import os.path as osp
import sys

import pytest

from mmseg_escnet.checkpoints.download import download_checkpoint
from mmseg_escnet.checkpoints.model_zoo import load_model_index

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_checkpoints'))
from fake_hub import FakeHub, hub_env  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    'pin_hub_weights', osp.join(ROOT, 'tools', 'misc', 'pin_hub_weights.py'))
pin_hub_weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pin_hub_weights)

HUB = 'https://huggingface.co'
LFS_DATA, GIT_DATA = os.urandom(3000), os.urandom(2000)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


METAFILE = f"""\
# a comment that stays
Models:
  - Name: lfs_model
    Config: configs/a.py
    Weights: {HUB}/org/cat/resolve/main/model_final_base.pth  # a trailing comment that stays
    Converter: catseg_official
    Metadata:
      Training Data: COCO-Stuff-171
  - Name: git_model
    Config: configs/b.py
    Weights: {HUB}/org/git/resolve/main/w.bin
    Weights SHA-256: {_sha(GIT_DATA)[:12]}
  - Name: elsewhere
    Config: configs/c.py
    Weights: https://example.com/x.pth
  - Name: misnamed
    Config: configs/d.py
    Weights: {HUB}/org/cat/resolve/main/model_final_huge.pth
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    with FakeHub() as hub:
        commits = dict(lfs=hub.add_file('org/cat', 'model_final_base.pth', LFS_DATA),
                       git=hub.add_file('org/git', 'w.bin', GIT_DATA, lfs=False))
        hub_env(monkeypatch, hub, tmp_path / 'hf')
        meta = tmp_path / 'metafile.yaml'
        meta.write_text(METAFILE)
        index = tmp_path / 'model-index.yml'
        index.write_text('Import:\n  - metafile.yaml\n')
        yield hub, commits, str(index), meta


def test_pins_commit_and_sha256_and_keeps_the_rest(setup, tmp_path, capsys):
    hub, commits, index, meta = setup
    assert pin_hub_weights.main(['--index', index]) == 1  # the misnamed file
    err = capsys.readouterr().err
    assert 'misnamed' in err and 'model_final_huge.pth' in err and 'not found' in err
    models = load_model_index(index)
    lfs_url = f'{HUB}/org/cat/resolve/{commits["lfs"]}/model_final_base.pth'
    assert (models['lfs_model'].weights, models['lfs_model'].sha256) == (lfs_url, _sha(LFS_DATA))
    assert (models['git_model'].weights, models['git_model'].sha256) == \
        (f'{HUB}/org/git/resolve/{commits["git"]}/w.bin', _sha(GIT_DATA))
    assert models['misnamed'].weights.endswith('/main/model_final_huge.pth')
    # LFS: the HEAD answer carries the SHA-256, nothing downloaded; git file: downloaded, hashed
    gets = [r.path for r in hub.requests if r.method == 'GET']
    assert not any('cat' in p for p in gets) and any('w.bin' in p for p in gets)
    # only the Weights lines changed and the SHA-256 line was added after the LFS model's
    old, new = METAFILE.splitlines(), meta.read_text().splitlines()
    assert len(new) == len(old) + 1
    assert new[4] == f'    Weights: {lfs_url}  # a trailing comment that stays'
    assert new[5] == f'    Weights SHA-256: {_sha(LFS_DATA)}'
    changed = {i for i, line in enumerate(old) if line not in new}
    assert changed == {4, 10, 11}
    # the branch moves on: the pinned entry keeps giving the verified old file
    hub.add_file('org/cat', 'model_final_base.pth', b'a newer file')
    info = models['lfs_model']
    path = download_checkpoint(info.weights, sha256=info.sha256, cache_dir=str(tmp_path / 'c'))
    assert open(path, 'rb').read() == LFS_DATA
    # a second run finds them pinned and changes nothing
    before = meta.read_text()
    assert pin_hub_weights.main(['--index', index, '--models', '*_model']) == 0
    assert 'lfs_model: already pinned' in capsys.readouterr().out
    assert meta.read_text() == before
    # --verify asks the Hub about pinned entries too: a hash their commit does not hold is an error
    assert pin_hub_weights.main(['--index', index, '--models', 'lfs_model', '--verify']) == 0
    assert f'lfs_model: pinned, verified (commit {commits["lfs"]}' in capsys.readouterr().out
    meta.write_text(before.replace(_sha(LFS_DATA), 'f' * 64))
    assert pin_hub_weights.main(['--index', index, '--models', 'lfs_model', '--verify']) == 1
    err = capsys.readouterr().err
    assert 'lfs_model: the index gives the SHA-256 ffff' in err and 'hash is wrong' in err


def test_a_hash_the_branch_no_longer_has_is_not_overwritten(setup, capsys):
    hub, _, index, meta = setup
    hub.add_file('org/git', 'w.bin', b'moved on', lfs=False)
    assert pin_hub_weights.main(['--index', index, '--models', 'git_model']) == 1
    err = capsys.readouterr().err
    assert 'revision moved' in err and _sha(GIT_DATA)[:12] in err
    assert meta.read_text() == METAFILE
    # a #sha256= fragment of the URL counts as the index's hash too
    meta.write_text(METAFILE.replace('resolve/main/model_final_base.pth',
                                     'resolve/main/model_final_base.pth#sha256=0123abcd'))
    assert pin_hub_weights.main(['--index', index, '--models', 'lfs_model']) == 1
    assert 'SHA-256 0123abcd (from the #sha256= fragment' in capsys.readouterr().err


def test_dry_run_and_download_option(setup, capsys):
    hub, commits, index, meta = setup
    assert pin_hub_weights.main(['--index', index, '--models', 'lfs_model', '--dry-run',
                                 '--download']) == 0
    out = capsys.readouterr().out
    assert f'main -> {commits["lfs"]}, SHA-256 {_sha(LFS_DATA)}' in out and 'dry run' in out
    assert meta.read_text() == METAFILE
    assert any('cat' in r.path for r in hub.requests if r.method == 'GET')  # --download
    with pytest.raises(ValueError, match='no model .* matches nothing_*'):
        pin_hub_weights.main(['--index', index, '--models', 'nothing_*'])


def test_unreachable_or_offline_hub_is_one_error_naming_the_file(setup, monkeypatch, tmp_path,
                                                                 capsys):
    hub, _, index, meta = setup
    hub_env(monkeypatch, hub, tmp_path / 'hf', offline=True)
    assert pin_hub_weights.main(['--index', index, '--models', 'lfs_model']) == 1
    err = capsys.readouterr().err
    assert 'model_final_base.pth of org/cat' in err and 'HF_HUB_OFFLINE is set' in err
    hub_env(monkeypatch, hub, tmp_path / 'hf')
    hub.stop()  # nothing listens on the endpoint any more
    assert pin_hub_weights.main(['--index', index, '--models', 'lfs_model']) == 1
    err = capsys.readouterr().err
    assert 'model_final_base.pth of org/cat' in err and 'ConnectError' in err
    assert meta.read_text() == METAFILE


@pytest.mark.parametrize('layout', ['placeholder', 'empty', 'unindented', 'fragment'])
def test_rewrite_keeps_every_other_line_and_key(layout, tmp_path):
    """Line editing on the layouts a metafile may have; what it changes is checked by parsing."""
    url = f'{HUB}/o/r/resolve/main/w.pth'
    sha_line = {'placeholder': '  Weights SHA-256:  # fill in\n', 'empty': '  Weights SHA-256:\n',
                'unindented': '', 'fragment': ''}[layout]
    weights = url + ('#sha256=' + '0' * 8 if layout == 'fragment' else '')
    text = (f'Models:\n- Name: m\n  Config: c.py\n  Weights: {weights}  # keep me\n{sha_line}'
            'Other:\n  Weights SHA-256: abcdef12\n')
    meta = tmp_path / 'metafile.yaml'
    meta.write_text(text)
    info = load_model_index(str(meta))['m']
    pinned, sha = f'{HUB}/o/r/resolve/{"a" * 40}/w.pth', 'b' * 64
    new = pin_hub_weights.rewrite_entry(text, info, pinned, sha)
    pin_hub_weights.check_rewrite(text, new, str(meta), [(info, pinned, sha)])
    assert f'  Weights: {pinned}  # keep me\n' in new
    assert new.count('Weights SHA-256') == 2 and 'Other:\n  Weights SHA-256: abcdef12\n' in new
    if layout == 'placeholder':
        assert f'  Weights SHA-256: {sha}  # fill in\n' in new
    # a rewrite that touches another key is refused
    broken = new.replace('abcdef12', 'abcdef13')
    with pytest.raises(ValueError, match='would change more than'):
        pin_hub_weights.check_rewrite(text, broken, str(meta), [(info, pinned, sha)])
