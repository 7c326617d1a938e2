"""mmseg_escnet: open-vocabulary semantic segmentation models for MMSegmentation 1.x.

Importing the package registers its models, datasets, metrics and hooks in mmseg's registries and makes
MMEngine load its own checkpoints under torch >= 2.6 (see :mod:`mmseg_escnet.engine.checkpoint_schemes`).
"""
from . import datasets, engine, evaluation, models  # noqa: F401  (registration)
from .engine.checkpoint_schemes import install as _install_checkpoint_schemes
from .version import __version__

_install_checkpoint_schemes()

__all__ = ['__version__']
