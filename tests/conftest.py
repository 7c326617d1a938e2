"""Shared test fixtures."""
import importlib.util
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# Reference vectors computed with the official CAT-Seg code ship with the tests
# (tests/data/conformance/README.md says what each file holds and how it was made).
CONFORMANCE_DIR = osp.join(REPO, 'tests', 'data', 'conformance')


@pytest.fixture(scope='session')
def load_script():
    """``load_script('tools/x/y.py')`` imports a repository script as a module (its ``main``)."""

    def load(relpath: str):
        spec = importlib.util.spec_from_file_location(
            osp.splitext(osp.basename(relpath))[0], osp.join(REPO, relpath))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope='session')
def conformance():
    """``conformance(name)`` loads a reference file; a missing file fails the test (never skips)."""

    def load(name: str) -> dict:
        path = osp.join(CONFORMANCE_DIR, name)
        if not osp.isfile(path):
            pytest.fail(f'conformance file {path} not found (it ships with the repository)')
        return torch.load(path, map_location='cpu')

    return load


@pytest.fixture(autouse=True)
def isolated_downloads(tmp_path, monkeypatch):
    """Every test downloads into its own temporary cache, never the user's
    ``~/.cache/mmseg_escnet``, and talks to the local test servers without a proxy."""
    monkeypatch.setenv('MMSEG_ESCNET_CACHE', str(tmp_path / 'escnet_cache'))
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')


def build_errseg_decoder(cfg: dict):
    """Our ERR-Seg neck and head for the official ``Decoder`` arguments of a conformance file's
    ``config`` (``errseg_decoder_*.pt``), randomly initialised."""
    from mmseg_escnet.models.decode_heads import ERRSegHead
    from mmseg_escnet.models.necks import ERRSegNeck
    neck = ERRSegNeck(embed_dim=cfg['C'], prompt_channel=cfg['prompt_channel'],
                      image_guidance_dims=cfg['image_guidance_dims'],
                      corr_fpn_inter_dim=cfg['corr_fpn_inter_dim'],
                      guidance_fpn_inter_dim=cfg['guidance_fpn_inter_dim'],
                      aggregator_dim=cfg['aggregator_dim'],
                      aggregator_scale_ratio=cfg['aggregator_scale_ratio'],
                      sample_classes_num=cfg['sample_classes_num'])
    head = ERRSegHead(hidden_dim=cfg['aggregator_dim'], decoder_dims=cfg['decoder_dims'],
                      decoder_guidance_dims=cfg['decoder_guidance_dims'],
                      decoder_guidance_proj_dims=cfg['guidance_proj_dims'])
    return neck, head


def build_random_tiny_model(name: str) -> torch.nn.Module:
    """The tiny model of ``configs/<name>_tiny_synthetic.py`` ('escnet', 'catseg', 'sed', ...),
    randomly initialised with seed 0 (the weights of :func:`random_tiny_checkpoints`), in eval
    mode."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_escnet  # noqa: F401

    init_default_scope('mmseg')
    torch.manual_seed(0)
    cfg = Config.fromfile(osp.join(REPO, 'configs', f'{name}_tiny_synthetic.py'))
    return MODELS.build(cfg.model).eval()


@pytest.fixture(scope='session')
def random_tiny_checkpoints(tmp_path_factory):
    """Checkpoints (MMEngine's format) of the tiny ESC-Net and CAT-Seg, randomly initialised
    (seed 0, :func:`build_random_tiny_model`): ``folder / 'escnet.pth'`` and
    ``folder / 'catseg.pth'``."""
    folder = tmp_path_factory.mktemp('random_tiny_checkpoints')
    for name in ('escnet', 'catseg'):
        torch.save(dict(state_dict=build_random_tiny_model(name).state_dict(),
                        meta=dict(note='random')), folder / f'{name}.pth')
    return folder


@pytest.fixture(scope='session')
def random_tiny_model():
    """``random_tiny_model(name)``: :func:`build_random_tiny_model`."""
    return build_random_tiny_model
