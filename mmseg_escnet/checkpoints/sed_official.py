"""Key mapping from an official SED (detectron2) decoder state dict to mmseg_escnet modules.

Xie et al., "SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation",
CVPR 2024 (arXiv:2311.15537); official code https://github.com/xb534/SED.

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

Keys outside the prefix (the CLIP model) are left to the CLIP converter; an unknown key below
the prefix (e.g. ``text_guidance_projection`` of a text-guided variant, which no SED config
uses) is an error.
"""
import re
from typing import Dict, Mapping

import torch

__all__ = ['OFFICIAL_SED_PREFIX', 'map_sed_decoder_key', 'sed_decoder_to_mmseg']

#: Prefix of the official ``Aggregator`` parameters in a SED checkpoint.
OFFICIAL_SED_PREFIX = 'sem_seg_head.predictor.transformer.'

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
    converted: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if not key.startswith(OFFICIAL_SED_PREFIX):
            continue
        try:
            converted[map_sed_decoder_key(key, neck_prefix=neck_prefix,
                                          head_prefix=head_prefix)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise KeyError(f'unknown SED decoder keys (not parameters of the official Aggregator as '
                       f'SED configures it): {unknown}')
    return converted
