"""Official SED (detectron2) checkpoints -> our SED model's state dict.

Xie et al., "SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation",
CVPR 2024 (arXiv:2311.15537); official code https://github.com/xb534/SED. The released
checkpoints (ConvNeXt-B and ConvNeXt-L, links in its README) are detectron2 files
``{'model': state_dict, ...}``. Every entry is accounted for:

==============================================  ==============================================
official key                                    our key
==============================================  ==============================================
``sem_seg_head.predictor.clip_model.<name>``    ``backbone.clip_model.<name>``
                                                (``CLIPConvNeXtBackbone``: open_clip names)
``sem_seg_head.predictor.transformer.<name>``   ``neck.conv1.*`` / ``decode_head.*``
                                                (:func:`map_sed_decoder_key`)
``sem_seg_head.predictor.clip_model.attn_mask`` dropped: the text causal mask, a constant
anything else                                   refused (``ValueError`` listing the keys)
==============================================  ==============================================

SED builds and then deletes a detectron2 backbone and registers its pixel mean/std buffers as
non-persistent, so an official checkpoint has neither.

The official ``Aggregator`` (``sem_seg_head.predictor.transformer.*``) splits into our neck
(``SEDCostNeck``: ``conv1``) and decode head (``SEDHead``: everything else). Names are kept,
except in the decoder ConvNeXt blocks, which are mmpretrain's ``ConvNeXtBlock``::

    official (below the prefix)                      ours
    conv1.{weight,bias}                              neck.conv1.*
    decoder_guidance_projection.{i}.0.*              decode_head.<same>
    decoder_corr_guidance_projection.{i}.0.*         decode_head.<same>
    decoder{n}.up.*, decoder{n}.conv.double_conv.{0,1,3,4}.*,
    decoder{n}.attention.{attention.{q,k,v},MLP.{0,2},norm1,norm2}.*
                                                     decode_head.<same>
    decoder{n}.cnext.dwconv.*                        decode_head.decoder{n}.cnext.depthwise_conv.*
    decoder{n}.cnext.pwconv1.* / pwconv2.*           ... .cnext.pointwise_conv1.* / 2.*
    decoder{n}.cnext.{norm.*,gamma}                  decode_head.<same>
    head0, head1, head2, head                        decode_head.<same>

An unknown key below the prefix (e.g. ``text_guidance_projection`` of a text-guided variant,
which no SED config uses) is an error. :func:`convert_sed` (the walk over the keys is
:func:`~.official_checkpoint.convert_detectron2`, shared with ERR-Seg) is the format's converter
in :mod:`.convert` (``sed_official``, used by the model zoo and
``tools/model_converters/sed2mmseg.py``).
"""
import re
from functools import partial
from typing import Dict, Mapping, Optional

import torch
from torch import Tensor

from .official_checkpoint import (Converted, convert_detectron2, map_decoder_keys,
                                  stem_architecture)

__all__ = ['OFFICIAL_SED_PREFIX', 'OFFICIAL_SED_CLIP_PREFIX', 'SED_ARCHITECTURES', 'SED_CONFIGS',
           'map_sed_decoder_key', 'sed_decoder_to_mmseg', 'sed_architecture', 'convert_sed',
           'convert_sed_checkpoint']

#: Prefix of the official ``Aggregator`` parameters in a SED checkpoint.
OFFICIAL_SED_PREFIX = 'sem_seg_head.predictor.transformer.'
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
#: Config checked against by default, by open_clip model name (relative to the repository root).
SED_CONFIGS = {'convnext_base_w_320': 'configs/sed_convnext_base.py',
               'convnext_large_d_320': 'configs/sed_convnext_large.py'}

_PARAM = r'\.(weight|bias)'
#: (pattern on the key below the prefix, part) for names kept as they are.
_SAME_NAME = [
    (re.compile(r'conv1' + _PARAM), 'neck'),
    (re.compile(r'decoder_(corr_)?guidance_projection\.\d+\.0' + _PARAM), 'head'),
    (re.compile(r'decoder\d+\.up' + _PARAM), 'head'),
    (re.compile(r'decoder\d+\.conv\.double_conv\.[0134]' + _PARAM), 'head'),
    (re.compile(r'decoder\d+\.attention\.(attention\.[qkv]|MLP\.[02]|norm[12])' + _PARAM),
     'head'),
    (re.compile(r'decoder\d+\.cnext\.(norm' + _PARAM + r'|gamma)'), 'head'),
    (re.compile(r'head\d*' + _PARAM), 'head'),
]
#: The official ConvNeXt block's layer names -> mmpretrain's.
_CNEXT = re.compile(r'(decoder\d+\.cnext\.)(dwconv|pwconv1|pwconv2)(' + _PARAM + ')')
_CNEXT_NAMES = dict(dwconv='depthwise_conv', pwconv1='pointwise_conv1',
                    pwconv2='pointwise_conv2')


def map_sed_decoder_key(key: str, *, neck_prefix: str = 'neck.',
                        head_prefix: str = 'decode_head.') -> str:
    """Map one official key below ``sem_seg_head.predictor.transformer.`` to ours.

    Args:
        key (str): the official key, with or without the prefix.
        neck_prefix (str): prefix of the neck in the target model.
        head_prefix (str): prefix of the decode head in the target model.

    Returns:
        str: our key.

    Raises:
        KeyError: naming the key if it is not a parameter of SED's decoder.
    """
    rest = key[len(OFFICIAL_SED_PREFIX):] if key.startswith(OFFICIAL_SED_PREFIX) else key
    for pattern, part in _SAME_NAME:
        if pattern.fullmatch(rest):
            return (neck_prefix if part == 'neck' else head_prefix) + rest
    match = _CNEXT.fullmatch(rest)
    if match:
        return head_prefix + match[1] + _CNEXT_NAMES[match[2]] + match[3]
    raise KeyError(f'unknown SED decoder key {key!r}: not a parameter of the official '
                   'Aggregator as SED configures it (no text guidance, ConvNeXt V1 blocks)')


def sed_decoder_to_mmseg(state_dict: Mapping[str, torch.Tensor], *, neck_prefix: str = 'neck.',
                         head_prefix: str = 'decode_head.') -> Dict[str, torch.Tensor]:
    """Convert the decoder part of an official SED state dict.

    Args:
        state_dict (Mapping[str, torch.Tensor]): official state dict (the ``model`` entry of a
            detectron2 checkpoint); keys outside ``sem_seg_head.predictor.transformer.`` are
            skipped.
        neck_prefix (str): prefix of the neck in the target model.
        head_prefix (str): prefix of the decode head in the target model.

    Returns:
        dict: our keys -> the official tensors (``neck.conv1.*``, ``decode_head.*``).

    Raises:
        TypeError: if ``state_dict`` is not a mapping.
        KeyError: naming every key below the prefix that is not a known decoder parameter.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f'state_dict must be a mapping, got {type(state_dict).__name__}')
    return map_decoder_keys(state_dict, OFFICIAL_SED_PREFIX, partial(
        map_sed_decoder_key, neck_prefix=neck_prefix, head_prefix=head_prefix),
        "SED decoder keys (not parameters of the official Aggregator as SED configures it)")


def sed_architecture(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The open_clip model name of a converted SED state dict (None for another trunk width)."""
    return stem_architecture(state_dict, SED_ARCHITECTURES)


def convert_sed(checkpoint: Mapping) -> Converted:
    """Convert an official SED (detectron2) checkpoint; also say which ConvNeXt it holds.

    Args:
        checkpoint (Mapping): A detectron2 checkpoint ``{'model': state_dict, ...}`` (other
            entries such as ``iteration`` or ``optimizer`` are ignored) or a bare official
            state dict.

    Returns:
        Converted: ``backbone.clip_model.*``, ``neck.*`` and ``decode_head.*``, floating tensors
        as float32; the architecture is the open_clip model name of a released checkpoint
        (:data:`SED_ARCHITECTURES`) or ``'custom'``; the dropped text causal mask, if any.

    Raises:
        TypeError: If ``checkpoint`` is not a mapping.
        ValueError: For entries that are not named tensors, missing parts of SED, or keys that
            are not part of SED (listed).
    """
    return convert_detectron2(
        checkpoint, name='SED', clip_prefix=OFFICIAL_SED_CLIP_PREFIX,
        decoder_prefix=OFFICIAL_SED_PREFIX, map_decoder_key=map_sed_decoder_key,
        required=_REQUIRED, dropped_pattern=_DROPPED, architecture=sed_architecture)


def convert_sed_checkpoint(checkpoint: Mapping) -> Dict[str, Tensor]:
    """Convert an official SED (detectron2) checkpoint into our model's full state dict.

    Args:
        checkpoint (Mapping): See :func:`convert_sed`.

    Returns:
        dict[str, Tensor]: ``backbone.clip_model.*``, ``neck.*`` and ``decode_head.*``,
        floating tensors as float32.

    Raises:
        TypeError: If ``checkpoint`` is not a mapping.
        ValueError: See :func:`convert_sed`.
    """
    return convert_sed(checkpoint).state_dict
