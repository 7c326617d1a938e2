"""Refuse checkpoints made for another model instead of loading what happens to fit.

MMEngine loads ``load_from`` non-strictly: an ESC-Net checkpoint given to a CAT-Seg config loads
its CLIP weights, logs the rest as warnings and evaluates a mostly random model with exit code 0.
:func:`check_state_dict_fits` compares a state dict with a model and raises one line naming the
first missing, unexpected and mis-shaped keys; :class:`CheckpointFitHook` applies it to every
checkpoint the Runner loads (``load_from``, ``--resume``, ``tools/test.py``), and the inferencer
applies it to its weights. Fine-tuning from a checkpoint of another model (e.g. another head)
stays possible with the config key ``load_from_strict = False``.
"""
from typing import List, Mapping, Tuple

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

__all__ = ['CheckpointMismatchError', 'check_state_dict_fits', 'checkpoint_state_dict',
           'CheckpointFitHook']


class CheckpointMismatchError(ValueError):
    """The weights of a checkpoint do not fit the model they are loaded into."""


def checkpoint_state_dict(checkpoint: object, source: str) -> Mapping:
    """The state dict of a loaded checkpoint (``state_dict`` entry or the dict itself), with
    DDP's ``module.`` prefix removed.

    Raises:
        CheckpointMismatchError: if ``checkpoint`` is not a dict.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f'{source} holds a {type(checkpoint).__name__}, expected a '
                                      f'state dict or a checkpoint dict with "state_dict"')
    state = checkpoint.get('state_dict', checkpoint)
    return {(k[len('module.'):] if k.startswith('module.') else k): v for k, v in state.items()}


def _count(items: List[str]) -> str:
    return f'{len(items)} weight{"" if len(items) == 1 else "s"}'


def _listed(names: List[str], limit: int = 3) -> str:
    more = f', ... ({len(names)} in all)' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def state_dict_differences(model: nn.Module, state: Mapping
                           ) -> Tuple[List[str], List[str], List[str]]:
    """Keys missing from ``state``, keys the model does not have, and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model'
              for k, v in own.items()
              if k in state and hasattr(state[k], 'shape') and tuple(state[k].shape) != tuple(v.shape)]
    return missing, unexpected, shapes


def check_state_dict_fits(model: nn.Module, state: Mapping, *, source: str,
                          target: str) -> None:
    """Raise one line if ``state`` does not fit ``model`` key for key and shape for shape.

    Args:
        model (nn.Module): The model the weights are for.
        state (Mapping): Its weights (``checkpoint_state_dict`` of a loaded checkpoint).
        source (str): Where the weights come from (a path), for the message.
        target (str): What the model is (e.g. its config file), for the message.

    Raises:
        CheckpointMismatchError: naming the first missing, unexpected and mis-shaped keys.
    """
    missing, unexpected, shapes = state_dict_differences(model, state)
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f'{_count(missing)} of the model not in the file ({_listed(missing)})')
    if unexpected:
        parts.append(f'{_count(unexpected)} of the file not in the model '
                     f'({_listed(unexpected)})')
    if shapes:
        parts.append(f'{_count(shapes)} of another shape ({_listed(shapes, 2)})')
    raise CheckpointMismatchError(
        f'checkpoint {source} does not fit the model of {target}: {"; ".join(parts)}. Use the '
        f'config the checkpoint was trained with; to fine-tune from the weights that fit, set '
        f'load_from_strict=False')


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Check every checkpoint the Runner loads against the model before MMEngine loads it.

    Skipped when the config sets ``load_from_strict = False`` (MMEngine's non-strict loading,
    for fine-tuning from another model); ``--resume`` is always checked.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Called by ``Runner.load_checkpoint`` before the weights go into the model."""
        if not runner._resume and not runner.cfg.get('load_from_strict', True):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        source = runner._load_from or 'the resumed checkpoint'
        state = checkpoint_state_dict(checkpoint, source)
        target = runner.cfg.filename or type(model).__name__
        check_state_dict_fits(model, state, source=source, target=target)
