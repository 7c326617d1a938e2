"""Reading official CLIP weight files into open_clip-named state dicts.

Supported files (auto-detected from the content, not the file name):

* ``'torchscript'``: an OpenAI TorchScript archive, the ``.pt`` files OpenAI publishes.
* ``'openai'``: a plain OpenAI state dict (e.g. ``torch.jit.load(...).state_dict()`` saved with
  ``torch.save``), usually fp16 and carrying the integer entries ``input_resolution``,
  ``context_length`` and ``vocab_size``.
* ``'open_clip'``: an open_clip state dict (``.bin``/``.pt``/``.pth``), optionally wrapped in
  ``{'state_dict': ...}`` with DDP ``module.`` prefixes (open_clip training checkpoints).
* ``'safetensors'``: an open_clip ``.safetensors`` file.
* ``'mmseg'``: a checkpoint written by ``tools/model_converters/clip2mmseg.py`` or by an mmseg
  runner, ``{'state_dict': {'backbone.clip_model.<name>': tensor}}``.
* ``'catseg'``: an official CAT-Seg (detectron2) checkpoint,
  ``{'model': {'sem_seg_head.predictor.clip_model.<name>': tensor}}`` (SED's too).
* ``'errseg'``: an official ERR-Seg (detectron2) checkpoint,
  ``{'model': {'sem_seg_head.clip_model.<name>': tensor}}``.

For ViT towers OpenAI and open_clip use the same parameter names, e.g.
``visual.transformer.resblocks.{i}.attn.in_proj_weight`` with q, k, v packed along dim 0, so the
common format returned by :func:`load_clip_weights` is the open_clip naming with packed
``in_proj_weight`` and float32 values. :func:`split_qkv` converts it to the CAT-Seg naming
(``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``) used by ``CLIPBackbone``.

:func:`read_clip_file` and :func:`convert_clip` are the format's reader and converter in
:mod:`.convert` (``clip_official``, used by ``tools/model_converters/clip2mmseg.py``).
"""
import json
import pickle
import zipfile
from typing import Dict, Iterable, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from .download import local_checkpoint_path
from .official_checkpoint import Converted, html_page_problem, refused_pickle_error
from .safe_loading import load_local_checkpoint
from .safetensors_io import is_safetensors

StateDict = Dict[str, torch.Tensor]

#: Integer entries OpenAI archives carry next to the weights; they are not parameters.
OPENAI_EXTRA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
#: Key prefixes under which CLIP weights sit in whole-model checkpoints, with their format name.
MODEL_PREFIXES = (('backbone.clip_model.', 'mmseg'),
                  ('sem_seg_head.predictor.clip_model.', 'catseg'),
                  ('sem_seg_head.clip_model.', 'errseg'))
_SPLIT_SUFFIXES = ('q_proj_weight', 'k_proj_weight', 'v_proj_weight')
_PACKED_SUFFIX = 'in_proj_weight'


def _is_torchscript_archive(path: str) -> bool:
    """TorchScript zips hold ``<name>/constants.pkl`` and code; ``torch.save`` zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith('/constants.pkl') or '/code/' in n for n in archive.namelist())


def _unwrap(obj: object, path: str) -> Tuple[str, Mapping[str, torch.Tensor]]:
    """Find the tensor mapping inside a loaded checkpoint object and name its format."""
    if not isinstance(obj, Mapping):
        raise ValueError(f'{path}: expected a state dict (mapping of tensors), got {type(obj)!r}')
    for container in ('state_dict', 'model'):
        if isinstance(obj.get(container), Mapping):
            obj = obj[container]
            break
    keys = list(obj.keys())
    for prefix, fmt in MODEL_PREFIXES:
        if any(isinstance(k, str) and k.startswith(prefix) for k in keys):
            return fmt, {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
    if keys and all(isinstance(k, str) and k.startswith('module.') for k in keys):
        obj = {k[len('module.'):]: v for k, v in obj.items()}
    is_openai = any(k in obj for k in OPENAI_EXTRA_KEYS) or any(
        torch.is_tensor(v) and v.dtype == torch.float16 for v in obj.values())
    return ('openai' if is_openai else 'open_clip'), obj


def read_weights_file(path_or_url: str, cache_dir: Optional[str] = None) -> Tuple[str, StateDict]:
    """Read a CLIP weights file as it is stored: format name and raw tensors.

    Args:
        path_or_url (str): Local path or http(s) URL (see :func:`~mmseg_escnet.checkpoints.download.local_checkpoint_path`).
        cache_dir (str, optional): Download folder for URLs.

    Returns:
        tuple[str, dict[str, Tensor]]: The detected format (see the module docstring) and the
        tensors with container and model prefixes removed, names and dtypes as stored (packed or
        split q/k/v, fp16 or fp32, OpenAI integer extras included).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file is not a supported weights format or holds no CLIP weights.
    """
    path = local_checkpoint_path(path_or_url, what='CLIP weights', cache_dir=cache_dir)
    if _is_torchscript_archive(path):
        fmt, state = 'torchscript', dict(torch.jit.load(path, map_location='cpu').state_dict())
    elif is_safetensors(path):  # the safe loader: its sidecar is checked too
        fmt, state = 'safetensors', load_local_checkpoint(path, map_location='cpu')['state_dict']
    else:
        try:
            obj = load_local_checkpoint(path, map_location='cpu')
        except (ValueError, pickle.UnpicklingError) as err:
            raise ValueError(
                f'{path}: not a supported CLIP weights file (expected a TorchScript archive, a '
                f'torch-saved state dict or a .safetensors file): {err}') from err
        fmt, state = _unwrap(obj, path)
        state = dict(state)
    non_tensor = [k for k, v in state.items() if not torch.is_tensor(v)]
    if non_tensor:
        raise ValueError(f'{path}: entries that are not tensors: {non_tensor[:5]}')
    if not any(k.startswith('visual.') or k == 'token_embedding.weight' for k in state):
        raise ValueError(f'{path}: no CLIP weights found (format {fmt!r}); first keys: '
                         f'{list(state)[:5]}')
    return fmt, state


def detect_format(path_or_url: str, cache_dir: Optional[str] = None) -> str:
    """Detect the format of a CLIP weights file (reads the whole file).

    Args:
        path_or_url (str): Local path or http(s) URL.
        cache_dir (str, optional): Download folder for URLs.

    Returns:
        str: One of ``'torchscript'``, ``'openai'``, ``'open_clip'``, ``'safetensors'``,
        ``'mmseg'``, ``'catseg'``, ``'errseg'``.
    """
    return read_weights_file(path_or_url, cache_dir)[0]


def split_qkv(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Split every packed ``*.in_proj_weight`` (3C, C) into q/k/v ``*_proj_weight`` (C, C).

    Args:
        state_dict (Mapping[str, Tensor]): State dict with packed attention weights (q, k, v
            stacked in that order along dim 0, as OpenAI and ``nn.MultiheadAttention`` do).

    Returns:
        dict[str, Tensor]: New dict, same order, packed weights replaced by three entries.

    Raises:
        ValueError: If a packed weight's first dimension is not divisible by 3.
    """
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.endswith(_PACKED_SUFFIX):
            if value.dim() != 2 or value.shape[0] % 3:
                raise ValueError(f'{key}: packed q/k/v weight must be (3C, C), got '
                                 f'{tuple(value.shape)}')
            stem = key[:-len(_PACKED_SUFFIX)]
            for suffix, part in zip(_SPLIT_SUFFIXES, value.chunk(3, dim=0)):
                out[stem + suffix] = part.contiguous()  # (3C, C) -> 3 x (C, C)
        else:
            out[key] = value
    return out


def merge_qkv(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Inverse of :func:`split_qkv`: pack ``*.{q,k,v}_proj_weight`` into ``*.in_proj_weight``.

    Args:
        state_dict (Mapping[str, Tensor]): State dict with split attention weights.

    Returns:
        dict[str, Tensor]: New dict with one (3C, C) ``in_proj_weight`` per attention.

    Raises:
        ValueError: If one of the three split weights of an attention is missing.
    """
    out: StateDict = {}
    for key, value in state_dict.items():
        if not key.endswith(_SPLIT_SUFFIXES):
            out[key] = value
            continue
        stem = key[:-len(_SPLIT_SUFFIXES[0])]
        if stem + _PACKED_SUFFIX in out:
            continue
        parts = [state_dict.get(stem + s) for s in _SPLIT_SUFFIXES]
        if any(p is None for p in parts):
            raise ValueError(f'{stem}: needs all of {_SPLIT_SUFFIXES}, found only '
                             f'{[s for s, p in zip(_SPLIT_SUFFIXES, parts) if p is not None]}')
        out[stem + _PACKED_SUFFIX] = torch.cat(parts, dim=0)  # 3 x (C, C) -> (3C, C)
    return out


def load_clip_weights(path_or_url: str, cache_dir: Optional[str] = None) -> StateDict:
    """Read any supported CLIP weights file into an open_clip-named float32 state dict.

    Args:
        path_or_url (str): Local path or http(s) URL of the weights.
        cache_dir (str, optional): Download cache for URLs (see :func:`~mmseg_escnet.checkpoints.download.local_checkpoint_path`).

    Returns:
        dict[str, Tensor]: open_clip names (packed ``in_proj_weight``), floating tensors as
        float32, OpenAI's integer extras removed.
    """
    return normalize_clip_state_dict(read_weights_file(path_or_url, cache_dir)[1])


def normalize_clip_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Bring raw CLIP tensors (see :func:`read_weights_file`) to the common open_clip form.

    Args:
        state_dict (Mapping[str, Tensor]): Tensors with packed or split q/k/v weights.

    Returns:
        dict[str, Tensor]: OpenAI's integer extras (and non-persistent ``attn_mask`` buffers some
        TorchScript archives store) removed, q/k/v packed into ``in_proj_weight``, floating
        tensors cast to float32.
    """
    state = {
        k: v
        for k, v in state_dict.items()
        if k not in OPENAI_EXTRA_KEYS and k != 'attn_mask'
    }
    state = merge_qkv(state)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def resize_pos_embed(pos_embed: torch.Tensor, grid: Tuple[int, int],
                     old_grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Bicubically resize a ViT positional embedding, keeping the class-token entry.

    Args:
        pos_embed (Tensor): (1 + gh*gw, C), class-token entry first.
        grid (tuple[int, int]): Target grid (h, w).
        old_grid (tuple[int, int], optional): Source grid (gh, gw); square if not given.

    Returns:
        Tensor: (1 + h*w, C), interpolated with ``align_corners=False`` as CAT-Seg does.
    """
    num_patches, channels = pos_embed.shape[0] - 1, pos_embed.shape[1]
    if old_grid is None:
        side = int(round(num_patches**0.5))
        if side * side != num_patches:
            raise ValueError(f'positional embedding with {num_patches} patch entries is not a '
                             'square grid; pass old_grid')
        old_grid = (side, side)
    if tuple(old_grid) == tuple(grid):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    # (gh*gw, C) -> (1, C, gh, gw)
    patch_pos = patch_pos.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=tuple(grid), mode='bicubic', align_corners=False)
    # (1, C, h, w) -> (h*w, C)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], channels)
    return torch.cat([cls_pos, patch_pos], dim=0)


def match_state_dict(state_dict: Mapping[str, torch.Tensor],
                     reference: Mapping[str, torch.Tensor],
                     *,
                     grid: Optional[Tuple[int, int]] = None,
                     strict: bool = True,
                     source: str = '<state dict>') -> StateDict:
    """Check a CLIP state dict against a model's and resize the visual positional embedding.

    Both dicts use the same naming (packed or split). Keys only the model has, or only the
    checkpoint has, are errors when ``strict``; shape mismatches are always errors.

    Args:
        state_dict (Mapping[str, Tensor]): Checkpoint tensors.
        reference (Mapping[str, Tensor]): The model's state dict (only shapes are used).
        grid (tuple[int, int], optional): The model's patch grid. When given and the
            checkpoint's ``visual.positional_embedding`` was made for another grid, it is
            resized with :func:`resize_pos_embed`.
        strict (bool): Refuse missing and unexpected keys. Defaults to True.
        source (str): Name of the checkpoint for error messages.

    Returns:
        dict[str, Tensor]: The checkpoint tensors, positional embedding resized if needed.

    Raises:
        ValueError: Naming ``source`` and the offending keys.
    """
    state = dict(state_dict)
    key = 'visual.positional_embedding'
    if grid is not None and key in state and key in reference:
        old, new = state[key], reference[key]
        if old.dim() == 2 and old.shape[1] == new.shape[1] and old.shape[0] != new.shape[0]:
            state[key] = resize_pos_embed(old, grid)
    problems = []
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(reference[k].shape)}'
                  for k in state if k in reference and state[k].shape != reference[k].shape]
    if mismatched:
        problems.append('shape mismatch for ' + '; '.join(mismatched))
    if strict:
        missing = [k for k in reference if k not in state]
        unexpected = [k for k in state if k not in reference]
        if missing:
            problems.append(f'missing keys: {_short(missing)}')
        if unexpected:
            problems.append(f'unexpected keys: {_short(unexpected)}')
    if problems:
        raise ValueError(f'{source}: weights do not match the configured CLIP architecture: ' +
                         ' | '.join(problems))
    return state


def _short(keys: Iterable[str], limit: int = 12) -> str:
    keys = list(keys)
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return json.dumps(keys[:limit]) + more


def read_clip_file(src: str) -> Tuple[str, StateDict]:
    """Read CLIP weights to convert, saying what a file that is not CLIP weights is.

    Args:
        src (str): Local path or http(s) URL.

    Returns:
        tuple[str, dict[str, Tensor]]: See :func:`read_weights_file`.

    Raises:
        FileNotFoundError: A local ``src`` does not exist.
        ValueError: ``src`` is an HTML page (a failed download), holds Python objects besides
            tensors (named; an mmseg training checkpoint is named as such), or no CLIP weights.
    """
    path = local_checkpoint_path(src, what='CLIP weights')
    problem = html_page_problem(path)
    if problem is not None:
        raise ValueError(f'{src}: {problem}')
    try:
        return read_weights_file(path)
    except ValueError as err:
        if isinstance(err.__cause__, pickle.UnpicklingError):
            raise refused_pickle_error(src, path, 'official CLIP weights file', err) from err
        raise


def open_clip_reference(model_name: str) -> Tuple[StateDict, Optional[Tuple[int, int]]]:
    """The state dict (on the meta device: shapes only) and patch grid of an open_clip CLIP.

    Raises:
        ValueError: ``model_name`` is not an open_clip architecture.
    """
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f'unknown open_clip architecture {model_name!r}; see '
                         'open_clip.list_models()')
    cfg = dict(cfg)
    cfg.pop('custom_text', None)
    cfg.pop('quick_gelu', None)  # an activation: no weights
    with torch.device('meta'):
        model = open_clip.model.CLIP(**cfg)
    grid = getattr(model.visual, 'grid_size', None)
    return model.state_dict(), None if grid is None else tuple(grid)


def convert_clip(weights: Tuple[str, Mapping[str, torch.Tensor]],
                 model_name: Optional[str] = None) -> Converted:
    """CLIP weights under ``CLIPBackbone``'s names in an mmseg model.

    Args:
        weights (tuple[str, Mapping[str, Tensor]]): What :func:`read_clip_file` read.
        model_name (str, optional): open_clip architecture to check the weights against,
            strictly; a positional embedding made for another grid is resized to its grid.

    Returns:
        Converted: ``backbone.clip_model.<name>`` float32 tensors, q/k/v split; the summary
        and ``meta['source_format']`` are the file's format.

    Raises:
        ValueError: For weights that do not fit ``model_name`` (missing, unexpected or
            mis-shaped keys named).
    """
    fmt, raw = weights
    state = normalize_clip_state_dict(raw)  # open_clip names, packed q/k/v, float32
    if model_name is not None:
        reference, grid = open_clip_reference(model_name)
        state = match_state_dict(state, reference, grid=grid, strict=True, source=model_name)
    prefix = MODEL_PREFIXES[0][0]
    return Converted({prefix + k: v.contiguous() for k, v in split_qkv(state).items()}, fmt,
                     meta=dict(source_format=fmt, model_name=model_name or ''))
