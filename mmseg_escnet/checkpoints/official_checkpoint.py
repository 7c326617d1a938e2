"""What every official-checkpoint converter needs: a safe read and a strict fit to a config.

Used by ``tools/model_converters/catseg2mmseg.py`` and ``sed2mmseg.py``.
"""
import pickle
from typing import Dict, List, Mapping

import torch
from torch import Tensor

from .download import local_checkpoint_path

__all__ = ['detectron2_state_dict', 'float32', 'load_official_checkpoint', 'short_list',
           'state_dict_problems']


def short_list(keys: List[str], limit: int = 10) -> str:
    """``repr`` of the first ``limit`` keys, with the number left out."""
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return repr(keys[:limit]) + more


def load_official_checkpoint(src: str, what: str) -> Mapping:
    """Read a checkpoint file safely (tensors and plain Python types only).

    Args:
        src (str): Local path or http(s) URL.
        what (str): What the file should be, for messages (e.g. ``'official SED checkpoint'``).

    Returns:
        Mapping: The unpickled checkpoint.

    Raises:
        FileNotFoundError: If a local ``src`` does not exist.
        ValueError: If the file is not a torch checkpoint, needs arbitrary Python objects
            unpickled, or does not hold a dict.
    """
    path = local_checkpoint_path(src, what=what)
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise ValueError(f'{src}: not a torch checkpoint file ({err})') from err
        reason = str(err).strip().splitlines()[-1]
        raise ValueError(
            f'{src}: the file needs arbitrary Python objects unpickled, which is refused for '
            f'safety (torch.load weights_only=True: {reason}). If you trust it, re-save only its '
            "weights: torch.save({'model': torch.load(src, weights_only=False)['model']}, new)"
        ) from err
    except Exception as err:  # torch raises several unrelated types for non-checkpoint files
        raise ValueError(f'{src}: not a torch checkpoint file ({type(err).__name__}: {err})'
                         ) from err
    if not isinstance(obj, Mapping):
        raise ValueError(f'{src}: holds a {type(obj).__name__}, expected a checkpoint dict')
    return obj


def detectron2_state_dict(checkpoint: Mapping, model: str) -> Mapping[str, Tensor]:
    """The state dict inside a detectron2 checkpoint ``{'model': ...}``, or ``checkpoint`` if bare.

    Args:
        checkpoint (Mapping): The loaded file.
        model (str): The model family, for messages (``'CAT-Seg'``, ``'SED'``).

    Raises:
        TypeError: If ``checkpoint`` is not a mapping.
        ValueError: For an mmseg checkpoint, or entries that are not named tensors.
    """
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    if 'model' in checkpoint:
        state = checkpoint['model']
        if not isinstance(state, Mapping):
            raise ValueError(f"the checkpoint's 'model' entry is a {type(state).__name__}, "
                             'expected a state dict')
    elif isinstance(checkpoint.get('state_dict'), Mapping):
        raise ValueError("the checkpoint has a 'state_dict' entry and no 'model' entry: it looks "
                         'like an mmseg/MMEngine checkpoint (already converted?), not an official '
                         f'detectron2 {model} checkpoint')
    else:
        state = checkpoint
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError("expected a detectron2 checkpoint {'model': state_dict, ...} or a bare "
                         f'state dict of tensors; entries that are not named tensors: '
                         f'{short_list([str(k) for k in bad], 12)}')
    return state


def state_dict_problems(state: Mapping[str, Tensor], reference: Mapping[str, Tensor]
                        ) -> List[str]:
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``reference``."""
    problems = []
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}'
                  for k, v in reference.items() if k in state and state[k].shape != v.shape]
    for what, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                       ('shape mismatch', mismatched)):
        if keys:
            problems.append(f'{what} {short_list(keys)}')
    return problems


def float32(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Floating tensors as float32 (official checkpoints may hold half precision), sorted keys."""
    return {k: v.float() if v.is_floating_point() else v for k, v in sorted(state.items())}
