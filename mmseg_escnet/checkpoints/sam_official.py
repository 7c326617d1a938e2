"""Official Segment Anything (SAM) checkpoints -> the weights of ESC-Net's prompt encoder and SAM
blocks, and of LMSeg's SAM image encoder.

The published files (``sam_vit_{b,l,h}_*.pth``) are plain state dicts of
:class:`segment_anything.modeling.Sam`.  ESC-Net needs only the prompt encoder
(``prompt_encoder.*``) and the mask decoder's two-way layers
(``mask_decoder.transformer.layers.{i}.*``) plus its output tokens
(``mask_decoder.iou_token.weight``, ``mask_decoder.mask_tokens.weight``); the three
checkpoints have identical shapes for these.  ESC block ``k`` is initialised from layer
``k mod L`` (``layer_map='mod'``, docs/escnet.md) or ``min(k, L-1)`` (``'clamp'``).
"""
import pickle
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from segment_anything.modeling.prompt_encoder import PromptEncoder
from segment_anything.modeling.transformer import TwoWayAttentionBlock

from .download import local_checkpoint_path
from .safe_loading import load_local_checkpoint

__all__ = ['SAM_CHECKPOINT_URLS', 'PROMPT_ENCODER_PREFIX', 'LAYER_PREFIX',
           'OUTPUT_TOKEN_KEYS', 'IMAGE_ENCODER_PREFIX', 'load_sam_checkpoint',
           'load_sam_image_encoder', 'escnet_sam_weights']

#: Official download addresses (facebookresearch/segment-anything README).
SAM_CHECKPOINT_URLS = {
    'vit_h': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth',
    'vit_l': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth',
    'vit_b': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth',
}
PROMPT_ENCODER_PREFIX = 'prompt_encoder.'
DECODER_PREFIX = 'mask_decoder.'
IMAGE_ENCODER_PREFIX = 'image_encoder.'
LAYER_PREFIX = 'mask_decoder.transformer.layers.'
OUTPUT_TOKEN_KEYS = ('mask_decoder.iou_token.weight', 'mask_decoder.mask_tokens.weight')
_LAYER_RE = re.compile(r'^mask_decoder\.transformer\.layers\.(\d+)\.')


def _module_keys(module: nn.Module) -> List[str]:
    return list(module.state_dict().keys())


# Key names do not depend on the dims, so tiny instances give the full expected key lists.
_PROMPT_ENCODER_KEYS = _module_keys(
    PromptEncoder(embed_dim=2, image_embedding_size=(1, 1), input_image_size=(1, 1),
                  mask_in_chans=4))
_LAYER_KEYS = _module_keys(TwoWayAttentionBlock(embedding_dim=4, num_heads=1, mlp_dim=1))


def _short(keys: Sequence[str], limit: int = 10) -> str:
    keys = list(keys)
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def _torch_load(path: str) -> object:
    """The checkpoint, memory-mapped so that the (up to 2.4 GB) image encoder is never read."""
    try:
        return load_local_checkpoint(path, map_location='cpu', mmap=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f'{path}: not a SAM checkpoint ({err})') from err


def _layer_indices(state: Mapping[str, torch.Tensor]) -> List[int]:
    return sorted({int(m.group(1)) for k in state for m in [_LAYER_RE.match(k)] if m})


def _read_sam_state(path_or_url: str,
                    cache_dir: Optional[str]) -> Tuple[str, Mapping[str, torch.Tensor]]:
    """The local path and the (memory-mapped) state dict of a SAM checkpoint, unwrapped."""
    path = local_checkpoint_path(path_or_url, what='SAM checkpoint', cache_dir=cache_dir)
    obj = _torch_load(path)
    if isinstance(obj, Mapping):
        for wrapper in ('model', 'state_dict'):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f'{path}: expected a SAM state dict (mapping of tensors), got '
                         f'{type(obj).__name__}')
    return path, obj


def load_sam_checkpoint(path_or_url: str, *,
                        cache_dir: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Read the prompt-encoder and mask-decoder weights of an official SAM checkpoint.

    Args:
        path_or_url (str): local file or ``http(s)://`` / ``file://`` URL of an official
            checkpoint (a plain ``Sam`` state dict; ``{'model': ...}`` and
            ``{'state_dict': ...}`` wrappers are accepted too).
        cache_dir (str, optional): download cache for URLs; default
            ``$MMSEG_ESCNET_CACHE/checkpoints`` (see ``checkpoints/download.py``).

    Returns:
        dict: the ``prompt_encoder.*`` and ``mask_decoder.*`` entries with their official
        names (the image encoder is dropped).

    Raises:
        FileNotFoundError: if a local file does not exist.
        ValueError: for an unreadable or non-SAM file, or missing required keys (the message
            names the file and the keys).
    """
    path, obj = _read_sam_state(path_or_url, cache_dir)
    state = {k: v for k, v in obj.items()
             if isinstance(k, str) and k.startswith((PROMPT_ENCODER_PREFIX, DECODER_PREFIX))}
    if not state:
        raise ValueError(f'{path}: not a SAM checkpoint (no prompt_encoder.* / mask_decoder.* '
                         f'keys); first keys: {_short([str(k) for k in obj.keys()], 5)}')
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'{path}: entries that are not tensors: {_short(bad)}')
    layers = _layer_indices(state)
    missing = [PROMPT_ENCODER_PREFIX + k for k in _PROMPT_ENCODER_KEYS
               if PROMPT_ENCODER_PREFIX + k not in state]
    missing += [k for k in OUTPUT_TOKEN_KEYS if k not in state]
    if not layers:
        missing.append(f'{LAYER_PREFIX}0.*')
    for i in range(max(layers) + 1 if layers else 0):
        missing += [f'{LAYER_PREFIX}{i}.{k}' for k in _LAYER_KEYS
                    if f'{LAYER_PREFIX}{i}.{k}' not in state]
    if missing:
        raise ValueError(f'{path}: SAM checkpoint lacks {len(missing)} required key(s): '
                         f'{_short(missing)}')
    # clone: detach the kept tensors from the memory-mapped file
    return {k: v.detach().clone() for k, v in state.items()}


def escnet_sam_weights(sam_state: Mapping[str, torch.Tensor], *, num_blocks: int,
                       layer_map: str = 'mod',
                       output_tokens: bool = True) -> Dict[str, torch.Tensor]:
    """Official SAM weights under the parameter names of ESC-Net's neck.

    ``prompt_encoder.*`` <- ``prompt_encoder.*`` (including the random-Fourier PE matrix);
    ``sam_blocks.{k}.block.*`` <- ``mask_decoder.transformer.layers.{m(k)}.*`` with
    ``m(k) = k mod L`` (``'mod'``) or ``min(k, L-1)`` (``'clamp'``), L = number of layers in
    ``sam_state`` (2 in SAM); ``sam_blocks.{k}.output_tokens.weight`` <- ``cat(iou_token,
    mask_tokens)``. The blocks' ``text_proj`` and ``fuse`` are not in SAM.

    Args:
        sam_state (Mapping[str, torch.Tensor]): Official names, e.g. from
            :func:`load_sam_checkpoint`.
        num_blocks (int): Number of ESC blocks.
        layer_map (str): ``'mod'`` or ``'clamp'``.
        output_tokens (bool): Whether the blocks have output tokens to initialise.

    Returns:
        Dict[str, torch.Tensor]: The neck's entries (load with ``strict=False``).

    Raises:
        ValueError: For a bad ``layer_map`` or missing SAM keys.
    """
    if layer_map not in ('mod', 'clamp'):
        raise ValueError(f"layer_map must be 'mod' or 'clamp', got {layer_map!r}")
    layers = _layer_indices(sam_state)
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f'sam_state must hold {LAYER_PREFIX}0..L-1, found layer indices '
                         f'{layers}')
    mapped = {k: v for k, v in sam_state.items() if k.startswith(PROMPT_ENCODER_PREFIX)}
    if output_tokens:
        missing = [k for k in OUTPUT_TOKEN_KEYS if k not in sam_state]
        if missing:
            raise ValueError(f'SAM state lacks {_short(missing)}, needed for the output tokens')
        tokens = torch.cat([sam_state[k] for k in OUTPUT_TOKEN_KEYS], dim=0)  # (1 + 4, S)
    for k in range(num_blocks):
        m = k % len(layers) if layer_map == 'mod' else min(k, len(layers) - 1)
        prefix = f'{LAYER_PREFIX}{m}.'
        mapped.update({f'sam_blocks.{k}.block.{name[len(prefix):]}': value
                       for name, value in sam_state.items() if name.startswith(prefix)})
        if output_tokens:
            mapped[f'sam_blocks.{k}.output_tokens.weight'] = tokens
    return mapped


def load_sam_image_encoder(path_or_url: str, *,
                           cache_dir: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Read the image-encoder weights of an official SAM checkpoint (LMSeg's SAM features).

    Args:
        path_or_url (str): local file or URL of an official checkpoint (see
            :func:`load_sam_checkpoint`).
        cache_dir (str, optional): download cache for URLs.

    Returns:
        dict: the ``image_encoder.*`` entries without the prefix, i.e. the names of
        :class:`segment_anything.modeling.ImageEncoderViT`.

    Raises:
        FileNotFoundError: if a local file does not exist.
        ValueError: for an unreadable or non-SAM file, or one without ``image_encoder.*``
            weights (e.g. a file that holds only the decoder).
    """
    path, obj = _read_sam_state(path_or_url, cache_dir)
    state = {k[len(IMAGE_ENCODER_PREFIX):]: v for k, v in obj.items()
             if isinstance(k, str) and k.startswith(IMAGE_ENCODER_PREFIX)}
    if not state:
        raise ValueError(f'{path}: no SAM image encoder in this checkpoint (no '
                         f'{IMAGE_ENCODER_PREFIX}* keys); first keys: '
                         f'{_short([str(k) for k in obj.keys()], 5)}')
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f'{path}: entries that are not tensors: {_short(bad)}')
    return {k: v.detach().clone() for k, v in state.items()}
