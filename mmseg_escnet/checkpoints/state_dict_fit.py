"""Does a state dict fit a model? One line naming the first missing, unexpected and mis-shaped keys.

MMEngine loads ``load_from`` non-strictly: an ESC-Net checkpoint given to a CAT-Seg config loads
its CLIP weights, logs the rest as warnings and evaluates a mostly random model with exit code 0.
:func:`check_state_dict_fits` is used instead wherever weights are loaded: by
:class:`~mmseg_escnet.engine.CheckpointFitHook` for every checkpoint the Runner loads, by the
inferencer, and by partial loads such as the official SAM weights of ESC-Net's neck.
"""
from typing import List, Mapping, Tuple

import torch.nn as nn

__all__ = ['CheckpointMismatchError', 'check_state_dict_fits', 'checkpoint_state_dict',
           'key_differences', 'state_dict_differences']


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


def key_differences(reference: Mapping, state: Mapping
                    ) -> Tuple[List[str], List[str], List[str]]:
    """Keys of ``reference`` missing from ``state``, keys of ``state`` not in ``reference``, and
    the keys of both whose shapes differ (in ``reference``'s order)."""
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    reshaped = [k for k, v in reference.items() if k in state and hasattr(state[k], 'shape')
                and tuple(state[k].shape) != tuple(v.shape)]
    return missing, unexpected, reshaped


def state_dict_differences(model: nn.Module, state: Mapping
                           ) -> Tuple[List[str], List[str], List[str]]:
    """Keys missing from ``state``, keys the model does not have, and shape mismatches."""
    own = model.state_dict()
    missing, unexpected, reshaped = key_differences(own, state)
    shapes = [f'{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model'
              for k in reshaped]
    return missing, unexpected, shapes


LOAD_FROM_HINT = ('Use the config the checkpoint was trained with; to fine-tune from the weights '
                  'that fit, set load_from_strict=False')


def check_state_dict_fits(model: nn.Module, state: Mapping, *, source: str, target: str,
                          partial: bool = False, hint: str = LOAD_FROM_HINT) -> None:
    """Raise one line if ``state`` does not fit ``model`` key for key and shape for shape.

    Args:
        model (nn.Module): The model the weights are for.
        state (Mapping): Its weights (``checkpoint_state_dict`` of a loaded checkpoint).
        source (str): Where the weights come from (a path), for the message.
        target (str): What the model is, for the message (``'the model of configs/x.py'``).
        partial (bool): ``state`` initialises only part of the model: weights of the model
            missing from it are fine.
        hint (str): What to do about it, ending the message.

    Raises:
        CheckpointMismatchError: naming the first missing, unexpected and mis-shaped keys.
    """
    missing, unexpected, shapes = state_dict_differences(model, state)
    if partial:
        missing = []
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
        f'checkpoint {source} does not fit {target}: {"; ".join(parts)}. {hint}')
