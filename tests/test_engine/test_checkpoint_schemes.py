"""MMEngine's checkpoint schemes: ours are installed, the ones that unpickle unsafely refused."""
import pytest
from mmengine.runner.checkpoint import CheckpointLoader

import mmseg_escnet  # noqa: F401  (installs the schemes)
from mmseg_escnet.engine import checkpoint_schemes


@pytest.mark.parametrize('scheme', checkpoint_schemes.UNSAFE_SCHEMES)
def test_unsafe_schemes_are_refused_before_any_download(scheme, monkeypatch):
    import mmengine.runner.checkpoint as mmengine_checkpoint

    def no_download(*args, **kwargs):
        raise AssertionError('downloaded')

    monkeypatch.setattr(mmengine_checkpoint, 'load_url', no_download)
    with pytest.raises(ValueError, match=rf'{scheme}resnet50: MMEngine reads this scheme with '
                                         r'torch.load\(weights_only=False\).*https://'):
        CheckpointLoader.load_checkpoint(f'{scheme}resnet50', map_location='cpu')


def test_our_loaders_are_installed():
    assert CheckpointLoader._get_checkpoint_loader('zoo://catseg_vitb16') is \
        checkpoint_schemes.load_from_model_zoo
    assert CheckpointLoader._get_checkpoint_loader('https://host/x.pth') is \
        checkpoint_schemes.load_from_verified_url
    assert CheckpointLoader._get_checkpoint_loader('work_dirs/x.pth') is \
        checkpoint_schemes.load_from_local_safe
