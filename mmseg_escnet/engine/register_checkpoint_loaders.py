"""Importing this module makes MMEngine load checkpoints through mmseg_escnet's safe loaders.

That is its only purpose: list it in a config's ``custom_imports`` so that tools which do not
call :func:`mmseg_escnet.register_checkpoint_loaders` themselves (mmseg's ``tools/train.py`` and
``tools/test.py``, ``mmseg.apis.init_model``, ``MMSegInferencer``) read ``load_from``, ``zoo://``
names and URLs the way ours do::

    custom_imports = dict(
        imports=['mmseg_escnet', 'mmseg_escnet.engine.register_checkpoint_loaders'],
        allow_failed_imports=False)

Our ``configs/_base_/default_runtime.py`` does this. See
:mod:`mmseg_escnet.engine.checkpoint_schemes` and docs/checkpoints.md.
"""
from .checkpoint_schemes import install

install()
