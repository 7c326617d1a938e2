"""Official Segment Anything (SAM) checkpoints -> ESC-Net's prompt encoder and SAM blocks.

The published files (``sam_vit_{b,l,h}_*.pth``) are plain state dicts of
:class:`segment_anything.modeling.Sam`.  ESC-Net needs only the prompt encoder
(``prompt_encoder.*``) and the mask decoder's two-way layers
(``mask_decoder.transformer.layers.{i}.*``) plus its output tokens
(``mask_decoder.iou_token.weight``, ``mask_decoder.mask_tokens.weight``); the three
checkpoints have identical shapes for these.  ESC block ``k`` is initialised from layer
``k mod L`` (``layer_map='mod'``, docs/escnet.md) or ``min(k, L-1)`` (``'clamp'``).
"""
import re
import warnings
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from segment_anything.modeling.prompt_encoder import PromptEncoder
from segment_anything.modeling.transformer import TwoWayAttentionBlock

from .download import local_checkpoint_path

if TYPE_CHECKING:  # imported lazily to keep checkpoints/ free of model-package import cycles
    from mmseg_escnet.models.necks.sam_block import SAMBlock

__all__ = ['SAM_CHECKPOINT_URLS', 'PROMPT_ENCODER_PREFIX', 'LAYER_PREFIX',
           'OUTPUT_TOKEN_KEYS', 'load_sam_checkpoint', 'init_from_sam']

#: Official download addresses (facebookresearch/segment-anything README).
SAM_CHECKPOINT_URLS = {
    'vit_h': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth',
    'vit_l': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth',
    'vit_b': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth',
}
PROMPT_ENCODER_PREFIX = 'prompt_encoder.'
DECODER_PREFIX = 'mask_decoder.'
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
    try:  # memory-map so that the (up to 2.4 GB) image encoder is never read into memory
        return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) files cannot be mapped; garbage fails again below
        pass
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # torch raises several unrelated types for garbage input
        raise ValueError(f'{path}: not a readable torch checkpoint '
                         f'({type(err).__name__}: {err})') from err


def _layer_indices(state: Mapping[str, torch.Tensor]) -> List[int]:
    return sorted({int(m.group(1)) for k in state for m in [_LAYER_RE.match(k)] if m})


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


def _copy_into(module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str) -> None:
    """Copy ``state[prefix + name]`` into each state entry of ``module`` (strict, shape-checked)."""
    own = module.state_dict()
    missing = [prefix + k for k in own if prefix + k not in state]
    if missing:
        raise ValueError(f'SAM state lacks {len(missing)} key(s): {_short(missing)}')
    for name, target in own.items():
        source = state[prefix + name]
        if tuple(source.shape) != tuple(target.shape):
            raise ValueError(f'{prefix}{name}: checkpoint shape {tuple(source.shape)} does not '
                             f'match the module shape {tuple(target.shape)}')
    module.load_state_dict({k: state[prefix + k] for k in own}, strict=True)


def init_from_sam(sam_state: Mapping[str, torch.Tensor], *, prompt_encoder: PromptEncoder,
                  blocks: Sequence['SAMBlock'], layer_map: str = 'mod') -> None:
    """Initialise the prompt encoder and SAM blocks from official SAM weights (in place).

    ``prompt_encoder`` <- ``prompt_encoder.*`` (including the random-Fourier PE matrix);
    ``blocks[k].block`` <- ``mask_decoder.transformer.layers.{m(k)}.*`` with
    ``m(k) = k mod L`` (``'mod'``) or ``min(k, L-1)`` (``'clamp'``), L = number of layers in
    ``sam_state`` (2 in SAM); ``blocks[k].output_tokens`` <- ``cat(iou_token, mask_tokens)``
    when the token counts match.  ``text_proj`` and ``fuse`` keep their initialisation.
    Every block gets its own copy of the tensors.

    Args:
        sam_state (Mapping[str, torch.Tensor]): official names, e.g. from
            :func:`load_sam_checkpoint`.
        prompt_encoder (PromptEncoder): e.g. from ``build_prompt_encoder``.
        blocks (Sequence[SAMBlock]): the ESC blocks' SAM parts, in order.
        layer_map (str): ``'mod'`` or ``'clamp'``.

    Raises:
        TypeError: for wrong argument types.
        ValueError: for a bad ``layer_map``, missing keys or shape mismatches (naming the key).
    """
    if layer_map not in ('mod', 'clamp'):
        raise ValueError(f"layer_map must be 'mod' or 'clamp', got {layer_map!r}")
    if not isinstance(sam_state, Mapping):
        raise TypeError(f'sam_state must be a mapping, got {type(sam_state).__name__}')
    if not isinstance(prompt_encoder, PromptEncoder):
        raise TypeError(f'prompt_encoder must be a segment_anything PromptEncoder, got '
                        f'{type(prompt_encoder).__name__}')
    if isinstance(blocks, nn.Module) and not isinstance(blocks, nn.ModuleList):
        blocks = [blocks]
    for k, blk in enumerate(blocks):
        if not isinstance(getattr(blk, 'block', None), TwoWayAttentionBlock):
            raise TypeError(f'blocks[{k}] must be a SAMBlock (with a TwoWayAttentionBlock '
                            f'.block), got {type(blk).__name__}')
    layers = _layer_indices(sam_state)
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f'sam_state must hold {LAYER_PREFIX}0..L-1, found layer indices '
                         f'{layers}')
    num_layers = len(layers)

    with torch.no_grad():
        _copy_into(prompt_encoder, sam_state, PROMPT_ENCODER_PREFIX)
        tokens = None
        if all(k in sam_state for k in OUTPUT_TOKEN_KEYS):
            tokens = torch.cat([sam_state[k] for k in OUTPUT_TOKEN_KEYS], dim=0)  # (1+4, S)
        for k, blk in enumerate(blocks):
            m = k % num_layers if layer_map == 'mod' else min(k, num_layers - 1)
            if bool(blk.block.skip_first_layer_pe) != (m == 0):
                warnings.warn(f'blocks[{k}] is initialised from SAM layer {m} but has '
                              f'skip_first_layer_pe={blk.block.skip_first_layer_pe} (SAM '
                              f'uses True exactly for layer 0)')
            _copy_into(blk.block, sam_state, f'{LAYER_PREFIX}{m}.')
            out = getattr(blk, 'output_tokens', None)
            if out is None:
                continue
            if tokens is None:
                raise ValueError(f'SAM state lacks {_short(OUTPUT_TOKEN_KEYS)} needed by '
                                 f'blocks[{k}].output_tokens')
            if tuple(tokens.shape) != tuple(out.weight.shape):
                raise ValueError(f'{OUTPUT_TOKEN_KEYS[0]} + {OUTPUT_TOKEN_KEYS[1]}: checkpoint '
                                 f'shape {tuple(tokens.shape)} does not match '
                                 f'blocks[{k}].output_tokens {tuple(out.weight.shape)}')
            out.weight.copy_(tokens)
