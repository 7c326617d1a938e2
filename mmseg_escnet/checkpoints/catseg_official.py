"""Key mapping from an official CAT-Seg (detectron2) state dict to mmseg_escnet modules.

Only the non-CLIP part is handled here: the official ``Aggregator``
(``sem_seg_head.predictor.transformer.*``) splits into our neck
(:class:`~mmseg_escnet.models.necks.catseg_aggregator.CATSegAggregator`) and decode head
(:class:`~mmseg_escnet.models.decode_heads.catseg_head.CATSegHead`), and the model-level
``upsample1``/``upsample2`` go to the decode head.  Names below the prefixes are identical,
so the mapping is a prefix substitution.  The precomputed Swin ``attn_mask`` buffers are
dropped (our modules rebuild them).  Keys that belong to neither part (e.g. the CLIP model
under ``sem_seg_head.predictor.clip_model.``) are returned separately for other converters.

Whole checkpoints (CLIP included, every key accounted for) are converted by
:func:`.catseg_checkpoint.convert_catseg_checkpoint`.
"""
import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

__all__ = [
    'OFFICIAL_AGGREGATOR_PREFIX', 'NECK_SUBMODULES', 'HEAD_SUBMODULES', 'map_catseg_key',
    'convert_catseg_state_dict', 'strip_prefix'
]

#: Prefix of the official ``Aggregator`` parameters in a CAT-Seg checkpoint.
OFFICIAL_AGGREGATOR_PREFIX = 'sem_seg_head.predictor.transformer.'
#: Aggregator children that live in our neck.
NECK_SUBMODULES = ('layers', 'conv1', 'guidance_projection', 'text_guidance_projection')
#: Aggregator children that live in our decode head.
HEAD_SUBMODULES = ('decoder_guidance_projection', 'decoder1', 'decoder2', 'head')
#: Children of the official model root that live in our decode head.
ROOT_HEAD_SUBMODULES = ('upsample1', 'upsample2')

_DROPPED = re.compile(r'(^|\.)attn_mask$')


def map_catseg_key(key: str, *, neck_prefix: str = 'neck.',
                   head_prefix: str = 'decode_head.') -> Optional[str]:
    """Map one official key to our key.

    Args:
        key (str): key of the official CAT-Seg state dict.
        neck_prefix (str): prefix of the neck in the target model.
        head_prefix (str): prefix of the decode head in the target model.

    Returns:
        str | None: the new key, or None if the key is not part of the aggregator/decoder
        (or is a dropped buffer such as ``attn_mask``).
    """
    if _DROPPED.search(key):
        return None
    if key.startswith(OFFICIAL_AGGREGATOR_PREFIX):
        rest = key[len(OFFICIAL_AGGREGATOR_PREFIX):]
        child = rest.split('.', 1)[0]
        if child in NECK_SUBMODULES:
            return neck_prefix + rest
        if child in HEAD_SUBMODULES:
            return head_prefix + rest
        return None
    if key.split('.', 1)[0] in ROOT_HEAD_SUBMODULES:
        return head_prefix + key
    return None


def convert_catseg_state_dict(
        state_dict: Mapping[str, torch.Tensor], *, neck_prefix: str = 'neck.',
        head_prefix: str = 'decode_head.') -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Convert the aggregator/decoder part of an official CAT-Seg state dict.

    Args:
        state_dict (Mapping[str, torch.Tensor]): official state dict (the ``model`` entry of a
            detectron2 checkpoint).
        neck_prefix (str): prefix of the neck in the target model.
        head_prefix (str): prefix of the decode head in the target model.

    Returns:
        tuple: (converted state dict, list of official keys left unconverted, excluding the
        dropped ``attn_mask`` buffers).

    Raises:
        TypeError: if ``state_dict`` is not a mapping.
        ValueError: if two official keys map to the same new key.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f'state_dict must be a mapping, got {type(state_dict).__name__}')
    converted: Dict[str, torch.Tensor] = {}
    left: List[str] = []
    for key, value in state_dict.items():
        new_key = map_catseg_key(key, neck_prefix=neck_prefix, head_prefix=head_prefix)
        if new_key is None:
            if not _DROPPED.search(key):
                left.append(key)
            continue
        if new_key in converted:
            raise ValueError(f'two official keys map to {new_key!r}')
        converted[new_key] = value
    return converted, left


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Select the entries under ``prefix`` and remove the prefix.

    Args:
        state_dict (Mapping[str, torch.Tensor]): a state dict.
        prefix (str): e.g. ``'neck.'``.

    Returns:
        dict: sub-state-dict suitable for ``module.load_state_dict``.
    """
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}

