"""What every official format needs: a safe read, the conversion's result, a strict comparison.

The format modules (:mod:`.catseg_official`, :mod:`.sed_official`, :mod:`.errseg_official`,
:mod:`.clip_official`) return a :class:`Converted`; :func:`.convert.convert_and_check` reads,
converts, checks and saves. :func:`convert_detectron2` is the conversion shared by the detectron2
formats made of an open_clip model and one decoder (SED, ERR-Seg).
"""
import pickle
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Pattern, Sequence

import torch
from torch import Tensor

from .download import local_checkpoint_path
from .safe_loading import (CheckpointIntegrityError, checkpoint_file_problem,
                           load_local_checkpoint, pickle_globals)
from .state_dict_fit import key_differences

__all__ = ['Converted', 'convert_detectron2', 'detectron2_state_dict', 'float32',
           'map_decoder_keys', 'stem_architecture',
           'html_page_problem',
           'load_official_checkpoint', 'pickle_globals', 'refused_pickle_error', 'short_list',
           'state_dict_problems']


@dataclass
class Converted:
    """An official checkpoint under our parameter names.

    Attributes:
        state_dict (dict[str, Tensor]): Our model's weights, floating tensors as float32.
        summary (str): What the conversion found, for the converters' one-line report (e.g.
            ``'ViT-B/16, 1 constant buffers dropped'``).
        architecture (str, optional): The architecture read from the tensor shapes; it picks the
            default config to check against and is written to ``meta``.
        meta (dict): Format-specific entries of the written ``meta`` (plain Python types).
        dropped (dict[str, Tensor]): Official entries left out because our modules rebuild them
            (constant buffers), under their official names.
    """
    state_dict: Dict[str, Tensor]
    summary: str
    architecture: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    dropped: Dict[str, Tensor] = field(default_factory=dict)


def short_list(keys: List[str], limit: int = 10) -> str:
    """``repr`` of the first ``limit`` keys, with the number left out."""
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return repr(keys[:limit]) + more


def html_page_problem(path: str) -> Optional[str]:
    """``'is an HTML page, ...'`` if the file is a web page (a failed download), else None."""
    with open(path, 'rb') as f:
        head = f.read(1024).lstrip().lower()
    if head.startswith((b'<!doctype html', b'<html', b'<head', b'<body', b'<?xml')) \
            or (head.startswith(b'<') and b'<html' in head):
        return 'is an HTML page, not a checkpoint: the download probably failed'
    return None


def refused_pickle_error(src: str, path: str, what: str, err: Exception) -> ValueError:
    """The error for a torch file ``weights_only`` loading refused, saying what the file is.

    An mmseg/MMEngine training checkpoint (MMEngine's types, a ``'state_dict'``) is named as such:
    it needs no conversion. Otherwise the message names the Python objects the file holds.

    Args:
        src (str): The file as given (path or URL), for the message.
        path (str): The local file.
        what (str): What the file should be (``'official CAT-Seg checkpoint'``).
        err (Exception): The loading error.
    """
    names = pickle_globals(path)
    if not names:
        names = re.findall(r'Unsupported global: GLOBAL (\S+)', str(err))
    try:
        training = load_local_checkpoint(path, map_location='cpu', mmap=True)
    except Exception:  # noqa: BLE001 - then it holds more than MMEngine's types
        training = None
    trained = isinstance(training, Mapping) and isinstance(training.get('state_dict'), Mapping)
    if trained or any(name.startswith('mmengine.') for name in names):
        entries = f" ({', '.join(sorted(map(str, training)))})" if trained else ''
        return ValueError(
            f'{src}: is an mmseg/MMEngine training checkpoint{entries}, written by tools/train.py '
            f"or MMEngine's Runner, not an {what}: it is already in this package's format and "
            'needs no conversion; pass it as is to tools/test.py, demo/image_demo.py '
            '--checkpoint or load_from')
    found = ', '.join(names[:8]) + (f' (+{len(names) - 8} more)' if len(names) > 8 else '') \
        if names else 'objects it does not name'
    return ValueError(
        f'{src}: holds Python objects besides tensors ({found}), which are not unpickled for '
        f'safety (torch.load weights_only=True), so it is not a plain {what}. If you trust the '
        'file, re-save only its weights: torch.save({"model": torch.load(SRC, '
        'weights_only=False)["model"]}, NEW)')


def load_official_checkpoint(src: str, what: str) -> Mapping:
    """Read a checkpoint file with the safe loader (tensors and plain Python types only).

    :func:`~.safe_loading.load_local_checkpoint` without MMEngine's types: the file's integrity
    is checked first (its SHA-256 sidecar or zip CRCs), a refusal says what the file is.

    Args:
        src (str): Local path or http(s) URL.
        what (str): What the file should be, for messages (e.g. ``'official SED checkpoint'``).

    Returns:
        Mapping: The unpickled checkpoint.

    Raises:
        FileNotFoundError: If a local ``src`` does not exist.
        ValueError: If the file is an HTML page (a failed download), empty, cut short or not a
            torch checkpoint, an mmseg/MMEngine training checkpoint (no conversion needed), holds
            Python objects besides tensors (named), or does not hold a dict.
        CheckpointIntegrityError: If the file does not match its SHA-256 sidecar or zip CRCs.
    """
    path = local_checkpoint_path(src, what=what)
    problem = html_page_problem(path) or checkpoint_file_problem(path)
    if problem is not None:
        raise ValueError(f'{src}: {problem}')
    try:  # tensors and plain types only: no allow-listed MMEngine types in a third-party file
        obj = load_local_checkpoint(path, map_location='cpu', mmengine_types=False)
    except CheckpointIntegrityError:
        raise  # names the file and its sidecar
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' not in str(err):
            raise ValueError(f'{src}: not a torch checkpoint file ({err})') from err
        raise refused_pickle_error(src, path, what, err) from err
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
    missing, unexpected, reshaped = key_differences(reference, state)
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(reference[k].shape)}'
                  for k in reshaped]
    for what, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                       ('shape mismatch', mismatched)):
        if keys:
            problems.append(f'{what} {short_list(keys)}')
    return problems


def float32(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Floating tensors as float32 (official checkpoints may hold half precision), sorted keys."""
    return {k: v.float() if v.is_floating_point() else v for k, v in sorted(state.items())}


def map_decoder_keys(state_dict: Mapping[str, Tensor], prefix: str,
                     map_key: Callable[[str], str], what: str) -> Dict[str, Tensor]:
    """The entries of ``state_dict`` below ``prefix``, renamed by ``map_key``.

    Args:
        state_dict (Mapping[str, Tensor]): an official state dict; other keys are skipped.
        prefix (str): the decoder's official prefix.
        map_key (Callable): official key -> ours; raises ``KeyError`` for a key that is not a
            decoder parameter.
        what (str): the decoder, for the message (``'SED decoder keys (...)'``).

    Returns:
        dict: our keys -> the official tensors.

    Raises:
        KeyError: ``'unknown <what>: [...]'`` naming every key ``map_key`` refused.
    """
    converted: Dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(prefix):
            try:
                converted[map_key(key)] = value
            except KeyError:
                unknown.append(key)
    if unknown:
        raise KeyError(f'unknown {what}: {short_list(unknown, 12)}')
    return converted


def stem_architecture(state_dict: Mapping[str, Tensor], architectures: Mapping[int, tuple],
                      stem_key: str = 'backbone.clip_model.visual.trunk.stem.0.weight'
                      ) -> Optional[str]:
    """The open_clip model name of a converted ConvNeXt state dict, from its stem width.

    Args:
        state_dict (Mapping[str, Tensor]): our keys.
        architectures (Mapping[int, tuple]): stem width -> (architecture, open_clip name).
        stem_key (str): our key of the stem conv's weight.

    Returns:
        str | None: the open_clip name; None without a stem or for another width.
    """
    stem = state_dict.get(stem_key)
    entry = architectures.get(None if stem is None else stem.shape[0])
    return entry[1] if entry else None


def convert_detectron2(checkpoint: Mapping, *, name: str, clip_prefix: str, decoder_prefix: str,
                       map_decoder_key: Callable[[str], str], required: Sequence[str],
                       dropped_pattern: Pattern,
                       architecture: Callable[[Mapping[str, Tensor]], Optional[str]],
                       our_clip_prefix: str = 'backbone.clip_model.') -> Converted:
    """Convert a detectron2 checkpoint made of an open_clip model and one decoder.

    Every entry is accounted for: a key matching ``dropped_pattern`` is dropped (a constant
    buffer our modules rebuild), ``<clip_prefix><name>`` becomes ``<our_clip_prefix><name>``,
    ``<decoder_prefix>...`` goes through ``map_decoder_key`` (a ``KeyError`` refuses the key), and
    anything else is refused.

    Args:
        checkpoint (Mapping): A detectron2 checkpoint ``{'model': state_dict, ...}`` (other
            entries such as ``iteration`` or ``optimizer`` are ignored) or a bare official state
            dict.
        name (str): The model family, for messages (``'SED'``, ``'ERR-Seg'``).
        clip_prefix (str): Prefix of the CLIP model's official keys.
        decoder_prefix (str): Prefix of the decoder's official keys.
        map_decoder_key (Callable): Official decoder key -> ours; raises ``KeyError`` for a key
            that is not a decoder parameter.
        required (Sequence[str]): Official keys without which the checkpoint is incomplete.
        dropped_pattern (Pattern): Matches (``re.match``) the official keys that are dropped.
        architecture (Callable): Converted state dict -> the architecture's name, or None for
            one that is not released (then ``'custom'``).
        our_clip_prefix (str): Prefix of the CLIP model in our model.

    Returns:
        Converted: Floating tensors as float32, the architecture as summary and
        :attr:`~Converted.architecture`, the dropped entries under their official names.

    Raises:
        TypeError: If ``checkpoint`` is not a mapping.
        ValueError: For entries that are not named tensors, ``required`` keys that are missing
            (``'not a complete <name> checkpoint: missing [...]'``), or keys that are not part of
            the model (``'<n> entries are not part of <name>: [...]'``).
    """
    state = detectron2_state_dict(checkpoint, name)
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f'not a complete {name} checkpoint: missing {missing}')
    converted: Dict[str, Tensor] = {}
    dropped: Dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if dropped_pattern.match(key):
            dropped[key] = value
        elif key.startswith(clip_prefix):
            converted[our_clip_prefix + key[len(clip_prefix):]] = value
        elif key.startswith(decoder_prefix):
            try:
                converted[map_decoder_key(key)] = value
            except KeyError:
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'{len(unknown)} entries are not part of {name}: '
                         f'{short_list(unknown, 12)}')
    arch = architecture(converted) or 'custom'
    return Converted(float32(converted), arch, architecture=arch, dropped=dropped)
