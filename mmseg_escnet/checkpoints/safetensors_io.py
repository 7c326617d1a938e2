"""Checkpoints in the safetensors format, the Hugging Face Hub's format for weights.

A safetensors file holds named tensors and a ``str -> str`` metadata header; reading it runs no
code (nothing is unpickled), and the Hub shows its tensors without a pickle warning. Our
checkpoints in this format hold the ``state_dict`` as the tensors and the ``meta`` dict (plain
types, as ``tools/publish_model.py`` writes it) as JSON under the metadata key :data:`META_KEY`.
:func:`load_safetensors_checkpoint` gives back ``{'state_dict': ..., 'meta': ...}``, the shape of a
torch checkpoint, so every reader of :func:`.safe_loading.load_local_checkpoint` (MMEngine's
``load_checkpoint``, ``tools/test.py``, the inferencer, the demos) takes either file. A safetensors
file without our metadata (open_clip's, for instance) loads with ``meta == {}``.

File layout (https://github.com/huggingface/safetensors): a little-endian u64 header size ``N``,
``N`` bytes of JSON (per tensor ``dtype``, ``shape`` and ``data_offsets``, plus ``__metadata__``),
then the tensor data.
"""
import json
import os.path as osp
import struct
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch

__all__ = ['META_KEY', 'is_safetensors', 'safetensors_problem', 'save_safetensors_checkpoint',
           'read_safetensors_meta', 'load_safetensors_checkpoint']

#: The metadata entry that holds our checkpoint's ``meta`` as JSON.
META_KEY = 'mmseg_escnet.meta'
# a header larger than this is not a header (safetensors itself refuses more than 100 MB)
_MAX_HEADER = 100 * 1024 * 1024


def _header_size(path: str) -> Optional[int]:
    """``N`` of the file's first 8 bytes if the JSON header starts after them, else None."""
    with open(path, 'rb') as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b'{':
        return None
    (size, ) = struct.unpack('<Q', head[:8])
    return size if 0 < size <= _MAX_HEADER else None


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is (the start of) a safetensors file: header size, then ``{``."""
    return osp.isfile(path) and _header_size(path) is not None


def safetensors_problem(path: str) -> Optional[str]:
    """What is wrong with a safetensors file, or None; reads the header only.

    Returns:
        str, optional: ``'is cut short (...)'`` when the file ends before its header or before
        the data the header announces, ``'has an unreadable safetensors header (...)'``.
    """
    size = _header_size(path)
    total = osp.getsize(path)
    if size is None:
        return 'is not a safetensors file'
    if 8 + size > total:
        return (f'is cut short: it ends at byte {total}, inside its {size}-byte safetensors '
                f'header (an interrupted save or download)')
    with open(path, 'rb') as f:
        f.seek(8)
        try:
            header = json.loads(f.read(size))
            ends = [int(entry['data_offsets'][1]) for name, entry in header.items()
                    if name != '__metadata__']
        except (ValueError, TypeError, KeyError, IndexError) as error:
            return f'has an unreadable safetensors header ({type(error).__name__}: {error})'
    needed = 8 + size + max(ends, default=0)
    if needed > total:
        return (f'is cut short: its header announces {needed} bytes, the file has {total} (an '
                f'interrupted save or download)')
    return None


def save_safetensors_checkpoint(checkpoint: Mapping[str, Any], path: str) -> None:
    """Write ``{'state_dict': tensors, 'meta': plain dict}`` as a safetensors file.

    Tensors are saved contiguous, on the CPU; a tensor that shares memory with another one
    (tied weights, views) is saved as its own copy (safetensors stores no aliasing).

    Args:
        checkpoint (Mapping): ``state_dict`` (str -> tensor) and optionally ``meta`` (JSON-able).
        path (str): the file to write.

    Raises:
        ValueError: an entry that is not a named dense tensor, or a ``meta`` that JSON cannot
            hold unchanged (tuples, non-str keys, NaN, objects).
    """
    from safetensors.torch import save_file
    tensors: Dict[str, torch.Tensor] = {}
    storages = set()
    for name, tensor in checkpoint['state_dict'].items():
        if not isinstance(name, str) or not torch.is_tensor(tensor):
            raise ValueError(f'state_dict entry {name!r} is a {type(tensor).__name__}, not a '
                             f'named tensor')
        if tensor.layout != torch.strided:
            raise ValueError(f'state_dict entry {name!r} is a {tensor.layout} tensor; '
                             f'safetensors holds dense (strided) tensors only')
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages or tensor.untyped_storage().nbytes() != \
                tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    meta = checkpoint.get('meta') or {}
    try:
        text = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f'the checkpoint meta cannot be written as JSON: {error}') from error
    if json.loads(text) != meta:
        raise ValueError('the checkpoint meta does not survive JSON unchanged (tuples, non-str '
                         'keys or other non-JSON types); give plain lists, str keys, numbers, '
                         'str, bool and None (tools/publish_model.py makes them so)')
    save_file(tensors, path, metadata={'format': 'pt', META_KEY: text})
    _canonical_header(path)


def _canonical_header(path: str) -> None:
    """Rewrite the JSON header with sorted keys, in place and at the same length.

    safetensors writes its metadata map in hash-map order, which changes between runs, so the
    same checkpoint would give different bytes (and a different ``-<sha8>`` name). The compact,
    key-sorted header is as long as the original (same entries, no spaces) and is padded with
    spaces, as safetensors pads its header, to the original size; the data offsets do not move.
    """
    with open(path, 'r+b') as f:
        (size, ) = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(size))
        text = json.dumps(header, sort_keys=True, separators=(',', ':'),
                          ensure_ascii=False).encode('utf-8')
        if len(text) > size:
            raise RuntimeError(f'{path}: the sorted safetensors header is longer than the '
                               f'original ({len(text)} > {size} bytes)')
        f.seek(8)
        f.write(text + b' ' * (size - len(text)))


def _read(path: str, tensors: bool) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(meta, tensors on the CPU, or {} if not ``tensors``) of a safetensors file."""
    from safetensors import safe_open
    problem = safetensors_problem(path)
    if problem is not None:
        raise ValueError(f'checkpoint {path} {problem}')
    try:
        with safe_open(path, framework='pt', device='cpu') as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()} if tensors else {}
    except Exception as error:  # noqa: BLE001  (safetensors raises its own SafetensorError)
        raise ValueError(f'checkpoint {path} is not a readable safetensors file '
                         f'({type(error).__name__}: {error})') from error
    try:
        meta = json.loads(metadata.get(META_KEY, '{}'))
    except ValueError as error:
        raise ValueError(f'checkpoint {path}: its {META_KEY!r} metadata is not JSON ({error})') \
            from error
    if not isinstance(meta, dict):
        raise ValueError(f'checkpoint {path}: its {META_KEY!r} metadata is not a JSON object')
    return meta, state


def read_safetensors_meta(path: str) -> Dict[str, Any]:
    """The ``meta`` of a safetensors checkpoint, from its header only (no tensor is read).

    Raises:
        ValueError: as :func:`load_safetensors_checkpoint`.
    """
    return _read(path, tensors=False)[0]


def load_safetensors_checkpoint(path: str,
                                map_location: Optional[Union[str, torch.device,
                                                             Callable]] = None) -> Dict[str, Any]:
    """Read a safetensors file as ``{'state_dict': tensors, 'meta': dict}``.

    Args:
        path (str): the file.
        map_location (str | torch.device, optional): the device the tensors go to (``'cpu'``,
            ``'cuda:0'``); None: the CPU. torch.load's dict and callable mappings of storage
            locations do not apply to a safetensors file and are refused.

    Raises:
        ValueError: a cut short or unreadable file, metadata that is not our JSON ``meta``, or a
            ``map_location`` that is not a device; the message names the file.
    """
    if map_location is not None and not isinstance(map_location, (str, torch.device)):
        raise ValueError(f'checkpoint {path}: a safetensors file is loaded onto one device; '
                         f'map_location must be a device such as \'cpu\', got '
                         f'{type(map_location).__name__} {map_location!r}')
    meta, state = _read(path, tensors=True)
    if map_location is not None and str(map_location) != 'cpu':
        state = {name: tensor.to(map_location) for name, tensor in state.items()}
    return {'state_dict': state, 'meta': meta}
