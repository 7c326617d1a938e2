"""MMEngine's checkpoint schemes: untouched by ``import mmseg_escnet``; after the explicit
registration ours are installed and the ones that unpickle unsafely are refused."""
import json
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.runner.checkpoint import CheckpointLoader

import mmseg_escnet
from mmseg_escnet.engine import checkpoint_schemes

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PROBES = ('zoo://catseg_vitb16', 'https://host/x.pth', 'http://host/x.pth', 'work_dirs/x.pth',
          'torchvision://resnet50', 'open-mmlab://resnet50')
#: Prints, as JSON, the loader MMEngine picks for every probe after running the given code.
LOADERS_AFTER = '''
import json, sys
from mmengine.runner.checkpoint import CheckpointLoader
{code}
loaders = [CheckpointLoader._get_checkpoint_loader(p) for p in {probes!r}]
print(json.dumps([f'{{f.__module__}}.{{f.__name__}}' for f in loaders]))
'''


def _loaders_after(code: str) -> list:
    """The loaders (``module.name``) a fresh interpreter uses for :data:`PROBES` after ``code``."""
    proc = subprocess.run([sys.executable, '-c', LOADERS_AFTER.format(code=code, probes=PROBES)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def mmengine_loaders():
    return _loaders_after('')


def test_importing_the_package_leaves_mmengine_alone(mmengine_loaders):
    assert all(name.startswith('mmengine.') for name in mmengine_loaders), mmengine_loaders
    code = 'import mmseg_escnet, mmseg_escnet.apis, mmseg_escnet.checkpoints, mmseg_escnet.engine'
    assert _loaders_after(code) == mmengine_loaders


@pytest.mark.parametrize('code', [
    'import mmseg_escnet; mmseg_escnet.register_checkpoint_loaders()',
    'import mmseg_escnet.engine.register_checkpoint_loaders',  # custom_imports' module
    # our configs list that module in custom_imports: plain mmseg tools get our loaders too
    "from mmengine.config import Config; Config.fromfile('configs/catseg_tiny_synthetic.py')",
])
def test_explicit_registration(code):
    ours = 'mmseg_escnet.engine.checkpoint_schemes.'
    assert _loaders_after(code) == [ours + name for name in (
        'load_from_model_zoo', 'load_from_verified_url', 'load_from_verified_url',
        'load_from_local_safe', 'load_from_unsafe_scheme', 'load_from_unsafe_scheme')]


def test_registration_is_idempotent():
    mmseg_escnet.register_checkpoint_loaders()
    schemes = dict(CheckpointLoader._schemes)
    mmseg_escnet.register_checkpoint_loaders()
    checkpoint_schemes.install()
    assert CheckpointLoader._schemes == schemes and checkpoint_schemes.installed()


@pytest.mark.parametrize('scheme', checkpoint_schemes.UNSAFE_SCHEMES)
def test_unsafe_schemes_are_refused_before_any_download(scheme, monkeypatch):
    import mmengine.runner.checkpoint as mmengine_checkpoint

    def no_download(*args, **kwargs):
        raise AssertionError('downloaded')

    mmseg_escnet.register_checkpoint_loaders()
    monkeypatch.setattr(mmengine_checkpoint, 'load_url', no_download)
    with pytest.raises(ValueError, match=rf'{scheme}resnet50: MMEngine reads this scheme with '
                                         r'torch.load\(weights_only=False\).*https://'):
        CheckpointLoader.load_checkpoint(f'{scheme}resnet50', map_location='cpu')


def test_our_loaders_are_installed():
    mmseg_escnet.register_checkpoint_loaders()
    assert CheckpointLoader._get_checkpoint_loader('zoo://catseg_vitb16') is \
        checkpoint_schemes.load_from_model_zoo
    assert CheckpointLoader._get_checkpoint_loader('https://host/x.pth') is \
        checkpoint_schemes.load_from_verified_url
    assert CheckpointLoader._get_checkpoint_loader('work_dirs/x.pth') is \
        checkpoint_schemes.load_from_local_safe
