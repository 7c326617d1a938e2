"""mmseg_escnet: open-vocabulary semantic segmentation models for MMSegmentation 1.x.

Importing the package registers its models, datasets, metrics and hooks in mmseg's registries,
and nothing else: MMEngine's checkpoint loading is left as it is.
:func:`register_checkpoint_loaders` makes MMEngine load checkpoints through our safe, verified
readers (``zoo://NAME``, verified ``http(s)://`` downloads, local files under torch >= 2.6); our
tools call it, and our configs list ``mmseg_escnet.engine.register_checkpoint_loaders`` in
``custom_imports`` (docs/checkpoints.md).
"""
from . import datasets, engine, evaluation, models  # noqa: F401  (registration)
from .engine.checkpoint_schemes import install as _install_checkpoint_schemes
from .version import __version__

__all__ = ['__version__', 'register_checkpoint_loaders']


def register_checkpoint_loaders() -> None:
    """Make MMEngine's ``CheckpointLoader`` use this package's safe, verified loaders.

    Local files -> ``torch.load(weights_only=True)`` with MMEngine's own types allow-listed and
    the SHA-256 sidecar checked; ``http(s)://`` -> a verified, cached download; ``zoo://NAME``
    -> a model of ``model-index.yml``; MMEngine's schemes that unpickle downloads unsafely
    (``torchvision://``, ``open-mmlab://``...) are refused. Idempotent; affects every later
    checkpoint load in the process (see :mod:`mmseg_escnet.engine.checkpoint_schemes`).
    """
    _install_checkpoint_schemes()
