"""Shared test fixtures."""
import os
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The official CAT-Seg reference vectors live in shared/conformance beside the repository (also in
# CI's fresh clone); MMSEG_ESCNET_CONFORMANCE points elsewhere.
CONFORMANCE_DIR = os.environ.get('MMSEG_ESCNET_CONFORMANCE',
                                 osp.join(osp.dirname(REPO), 'shared', 'conformance'))


@pytest.fixture(scope='session')
def conformance():
    """``conformance(name)`` loads a reference file; a missing file fails the test (never skips)."""

    def load(name: str) -> dict:
        path = osp.join(CONFORMANCE_DIR, name)
        if not osp.isfile(path):
            pytest.fail(f'conformance file {path} not found; set MMSEG_ESCNET_CONFORMANCE to the '
                        f'folder holding the CAT-Seg reference vectors')
        return torch.load(path, map_location='cpu')

    return load


@pytest.fixture(autouse=True)
def isolated_downloads(tmp_path, monkeypatch):
    """Every test downloads into its own temporary cache, never the user's
    ``~/.cache/mmseg_escnet``, and talks to the local test servers without a proxy."""
    monkeypatch.setenv('MMSEG_ESCNET_CACHE', str(tmp_path / 'escnet_cache'))
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
