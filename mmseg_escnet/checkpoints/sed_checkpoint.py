"""Whole official SED (detectron2) checkpoints -> our SED model's state dict.

The released checkpoints of xb534/SED (ConvNeXt-B and ConvNeXt-L, links in its README) are
detectron2 files ``{'model': state_dict, ...}``. Every entry is accounted for:

==============================================  ==============================================
official key                                    our key
==============================================  ==============================================
``sem_seg_head.predictor.clip_model.<name>``    ``backbone.clip_model.<name>``
                                                (``CLIPConvNeXtBackbone``: open_clip names)
``sem_seg_head.predictor.transformer.<name>``   ``neck.conv1.*`` / ``decode_head.*``
                                                (:func:`.sed_official.map_sed_decoder_key`)
``sem_seg_head.predictor.clip_model.attn_mask`` dropped: the text causal mask, a constant
anything else                                   refused (``ValueError`` listing the keys)
==============================================  ==============================================

SED builds and then deletes a detectron2 backbone and registers its pixel mean/std buffers as
non-persistent, so an official checkpoint has neither.
"""
import re
from typing import Dict, Mapping, Optional

from torch import Tensor

from .official_checkpoint import detectron2_state_dict, float32, short_list
from .sed_official import OFFICIAL_SED_PREFIX, map_sed_decoder_key

__all__ = ['OFFICIAL_SED_CLIP_PREFIX', 'SED_ARCHITECTURES', 'sed_architecture',
           'convert_sed_checkpoint']

#: Prefix of the CLIP model in an official SED checkpoint.
OFFICIAL_SED_CLIP_PREFIX = 'sem_seg_head.predictor.clip_model.'
#: Width of the ConvNeXt stem -> (architecture, open_clip model name) of the released models.
SED_ARCHITECTURES = {128: ('ConvNeXt-B', 'convnext_base_w_320'),
                     192: ('ConvNeXt-L', 'convnext_large_d_320')}
_STEM = 'visual.trunk.stem.0.weight'
_DROPPED = re.compile(re.escape(OFFICIAL_SED_CLIP_PREFIX) + r'(transformer\.resblocks\.\d+\.)?'
                      r'attn_mask$')
_REQUIRED = (OFFICIAL_SED_CLIP_PREFIX + _STEM,
             OFFICIAL_SED_CLIP_PREFIX + 'token_embedding.weight',
             OFFICIAL_SED_PREFIX + 'conv1.weight', OFFICIAL_SED_PREFIX + 'head.weight')


def sed_architecture(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The open_clip model name of a converted SED state dict (None for another trunk width)."""
    stem = state_dict.get('backbone.clip_model.' + _STEM)
    entry = SED_ARCHITECTURES.get(None if stem is None else stem.shape[0])
    return entry[1] if entry else None


def convert_sed_checkpoint(checkpoint: Mapping) -> Dict[str, Tensor]:
    """Convert an official SED (detectron2) checkpoint into our model's full state dict.

    Args:
        checkpoint (Mapping): A detectron2 checkpoint ``{'model': state_dict, ...}`` (other
            entries such as ``iteration`` or ``optimizer`` are ignored) or a bare official
            state dict.

    Returns:
        dict[str, Tensor]: ``backbone.clip_model.*``, ``neck.*`` and ``decode_head.*``,
        floating tensors as float32.

    Raises:
        TypeError: If ``checkpoint`` is not a mapping.
        ValueError: For entries that are not named tensors, missing parts of SED, or keys that
            are not part of SED (listed).
    """
    state = detectron2_state_dict(checkpoint, 'SED')
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise ValueError(f'not a complete SED checkpoint: missing {missing}')
    converted: Dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if _DROPPED.match(key):
            continue
        if key.startswith(OFFICIAL_SED_CLIP_PREFIX):
            converted['backbone.clip_model.' + key[len(OFFICIAL_SED_CLIP_PREFIX):]] = value
            continue
        try:
            if not key.startswith(OFFICIAL_SED_PREFIX):
                raise KeyError(key)
            converted[map_sed_decoder_key(key)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f'{len(unknown)} entries are not part of SED: {short_list(unknown, 12)}')
    return float32(converted)
