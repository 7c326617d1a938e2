"""The ``model`` and ``device`` arguments of :class:`~.inferencer.OpenVocabInferencer`.

``model`` is a config file only if its name ends with one of :data:`CONFIG_SUFFIXES` (what
``Config.fromfile`` reads); any other string is a model-zoo name, so a file named like a model in
the working directory (``./catseg_vitb16``) does not shadow the name.
"""
import copy
import os
import os.path as osp
from typing import Optional, Tuple, Union

import torch
from mmengine.config import Config

from ..checkpoints.model_zoo import get_model

#: Suffixes of config files (what ``Config.fromfile`` reads); any other string is a model-zoo name.
CONFIG_SUFFIXES = ('.py', '.yml', '.yaml', '.json')


def resolve_model(model: Union[str, 'os.PathLike[str]', Config, dict],
                  weights: Optional[str]) -> Tuple[Config, Optional[str]]:
    """Turn a config file, ``Config``, dict or model-zoo name into (config, weights).

    A string is a config file only if it ends with one of :data:`CONFIG_SUFFIXES` (any case);
    anything else is looked up as a model-zoo name, even if a file of that name exists in the
    working directory.

    Args:
        model (str | os.PathLike | Config | dict): The inferencer's ``model`` argument.
        weights (str, optional): The inferencer's ``weights`` argument.

    Returns:
        Tuple[Config, str | None]: A copy of the config, and ``weights`` (for a model-zoo name
        without weights: ``'zoo://<name>'``).

    Raises:
        TypeError: ``model`` has another type.
        FileNotFoundError: A config file that does not exist.
        ValueError: Neither a config file nor a known model-zoo name (the message says both what
            files are accepted and why the name is unknown, with close names).
    """
    if isinstance(model, Config):
        return copy.deepcopy(model), weights
    if isinstance(model, dict):
        return Config(copy.deepcopy(dict(model))), weights
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f'model must be a config path, a Config or a model-zoo name, got '
                        f'{type(model).__name__}')
    text = os.fspath(model)
    if text.lower().endswith(CONFIG_SUFFIXES):
        if not osp.isfile(text):
            raise FileNotFoundError(f'config file not found: {text}')
        return Config.fromfile(text), weights
    try:
        info = get_model(text)
    except (KeyError, FileNotFoundError, ValueError) as err:  # unknown name, or no usable index
        reason = err.args[0] if err.args else repr(err)
        raise ValueError(f'{text!r} is not a config file (a path ending in '
                         f'{"/".join(CONFIG_SUFFIXES)}) and not a known model-zoo name: '
                         f'{reason}') from err
    return Config.fromfile(info.config), weights if weights is not None else f'zoo://{text}'


def check_device(device: str, what: str = 'device') -> None:
    """Check that a torch device string is valid and usable here.

    Args:
        device (str): ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
        what (str): How the device was given (``'device'``, ``'--device'``), for the messages.

    Raises:
        ValueError: Not a device name, or a CUDA device while CUDA is not available (the message
            says why: a CPU-only torch build, or no GPU/driver found) or out of range.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f'{what} {device!r} is not a torch device (cpu, cuda, cuda:1...): '
                         f'{err}') from err
    if parsed.type != 'cuda':
        return
    if not torch.cuda.is_available():
        why = ('this torch build has no CUDA support' if torch.version.cuda is None else
               f'torch is built for CUDA {torch.version.cuda} but finds no GPU or driver')
        raise ValueError(f'{what} {device!r}: CUDA is not available ({why}, torch '
                         f'{torch.__version__}); use {what} cpu')
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f'{what} {device!r}: only {torch.cuda.device_count()} CUDA device(s) '
                         f'found')
