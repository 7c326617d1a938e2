"""MMEngine's checkpoint loading goes through our safe, verified readers, once asked to.

:func:`install` registers in MMEngine's
:class:`~mmengine.runner.CheckpointLoader`: local files -> the allow-listed ``weights_only``
loader (:mod:`mmseg_escnet.checkpoints.safe_loading`), ``http(s)://`` -> a verified, cached
download (:mod:`mmseg_escnet.checkpoints.download`), ``zoo://NAME`` -> a model of the model index
(:mod:`mmseg_escnet.checkpoints.model_zoo`). MMEngine logs the part of each function name after
``load_from_`` ("Loads checkpoint by local_safe backend").

MMEngine's ``torchvision://``, ``modelzoo://``, ``open-mmlab://``, ``openmmlab://`` and
``mmcls://`` schemes download through ``torch.hub.load_state_dict_from_url`` with
``weights_only=False``, so a tampered download could run code: they are refused with a message
that says to give the file's https URL instead.

Importing :mod:`mmseg_escnet` does not call :func:`install`: MMEngine's loading changes only
when asked, in one of three explicit ways (docs/checkpoints.md):

* ``mmseg_escnet.register_checkpoint_loaders()`` (this :func:`install`), called by
  ``tools/train.py``, ``tools/test.py``, ``tools/eval_all.py`` and ``OpenVocabInferencer``
  (hence the demos and ``tools/deployment``);
* ``custom_imports = dict(imports=[..., 'mmseg_escnet.engine.register_checkpoint_loaders'])`` in
  a config (our ``configs/_base_/default_runtime.py`` lists it), for plain mmseg tools and
  ``mmseg.apis``;
* calling :func:`install` yourself. Calling it again changes nothing.
"""
from typing import Any, Callable, Optional, Union

from mmengine.runner.checkpoint import CheckpointLoader

from ..checkpoints.download import load_checkpoint_from_url
from ..checkpoints.model_zoo import load_from_model_zoo as load_zoo_checkpoint
from ..checkpoints.safe_loading import load_local_checkpoint

__all__ = ['install', 'installed']

MapLocation = Optional[Union[str, Callable]]
#: MMEngine schemes that unpickle downloads with ``weights_only=False``.
UNSAFE_SCHEMES = ('torchvision://', 'modelzoo://', 'open-mmlab://', 'openmmlab://', 'mmcls://')


def load_from_local_safe(filename: str, map_location: MapLocation = None) -> Any:
    """Local files: :func:`~mmseg_escnet.checkpoints.safe_loading.load_local_checkpoint`."""
    return load_local_checkpoint(filename, map_location=map_location)


def load_from_verified_url(filename: str, map_location: MapLocation = None) -> Any:
    """``http(s)://``: :func:`~mmseg_escnet.checkpoints.download.load_checkpoint_from_url`."""
    return load_checkpoint_from_url(filename, map_location=map_location)


def load_from_model_zoo(filename: str, map_location: MapLocation = None) -> Any:
    """``zoo://NAME``: :func:`~mmseg_escnet.checkpoints.model_zoo.load_from_model_zoo`."""
    return load_zoo_checkpoint(filename, map_location=map_location)


def load_from_unsafe_scheme(filename: str, map_location: MapLocation = None) -> Any:
    """Refuse :data:`UNSAFE_SCHEMES` (MMEngine unpickles them without ``weights_only``).

    Raises:
        ValueError: Naming the checkpoint and what to give instead.
    """
    raise ValueError(
        f'{filename}: MMEngine reads this scheme with torch.load(weights_only=False), which can '
        'run code from the downloaded file; give the https:// URL of the checkpoint instead '
        '(downloaded into a verified cache and read with the safe loader)')


def installed() -> bool:
    """Whether MMEngine's :class:`CheckpointLoader` uses our loaders (:func:`install` ran)."""
    probes = (('zoo://x', load_from_model_zoo), ('https://h/x.pth', load_from_verified_url),
              ('x.pth', load_from_local_safe), (UNSAFE_SCHEMES[0] + 'x', load_from_unsafe_scheme))
    return all(CheckpointLoader._get_checkpoint_loader(path) is loader  # noqa: SLF001
               for path, loader in probes)


def install() -> None:
    """Register the loaders in MMEngine's :class:`CheckpointLoader` (and refuse the unsafe
    schemes). Idempotent: a second call leaves the loaders as they are.

    This changes how every later MMEngine checkpoint load in the process reads files
    (``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained', ...)``,
    ``mmengine.runner.load_checkpoint``).
    """
    if installed():
        return
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safe, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                     loader=load_from_verified_url, force=True)
    CheckpointLoader.register_scheme(prefixes='zoo://', loader=load_from_model_zoo, force=True)
    CheckpointLoader.register_scheme(prefixes=UNSAFE_SCHEMES, loader=load_from_unsafe_scheme,
                                     force=True)
