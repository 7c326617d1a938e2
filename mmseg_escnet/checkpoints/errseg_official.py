"""Official ERR-Seg (detectron2) checkpoints -> our ERR-Seg model's state dict.

Chen et al., "Efficient Redundancy Reduction for Open-Vocabulary Semantic Segmentation"
(arXiv:2501.17642); official code https://github.com/lchen1019/ERR-Seg, weights on the Hugging Face
Hub (``lchen1019/ERR-Seg``). The checkpoints are detectron2 files ``{'model': state_dict, ...}``.
Every entry is accounted for:

================================================  ============================================
official key                                      our key
================================================  ============================================
``sem_seg_head.clip_model.<name>``                ``backbone.clip_model.<name>`` (open_clip
                                                  names, plus ``visual.modify_downsample.*``)
``sem_seg_head.clip_model.attn_mask``             dropped: the text causal mask, a constant
``sem_seg_head.decoder.<name>``                   ``neck.*`` / ``decode_head.*``
                                                  (:func:`map_errseg_decoder_key`)
anything else                                     refused (``ValueError`` listing the keys)
================================================  ============================================

The official ``Decoder`` splits into our neck (``ERRSegNeck``: the cost maps, guidance fusion,
text projection and RRCA layers) and decode head (``ERRSegHead``: the decoder guidance, the
up-decoders and the head). Names are kept, except::

    official (below sem_seg_head.decoder.)           ours
    aggregator_layers.{i}.spatial_fusion.sa.<p>      neck.aggregator_layers.{i}.spatial_fusion.<p>
    aggregator_layers.{i}.class_fusion.sa.<p>        neck.aggregator_layers.{i}.class_fusion.<p>
      ... .mlp.dwconv.dwconv.*                       ... .mlp.dwconv.*
    up_decoder{n}.textual_fusion.{0,1,3,4}.*         decode_head.up_decoder{n}.textual_fusion.
                                                     double_conv.{0,1,3,4}.*

:func:`convert_errseg` (the walk over the keys is
:func:`~.official_checkpoint.convert_detectron2`, shared with SED) is the format's converter in
:mod:`.convert` (``errseg_official``, used by the model zoo and
``tools/model_converters/errseg2mmseg.py``).
"""
import re
from functools import partial
from typing import Dict, Mapping, Optional

from torch import Tensor

from .official_checkpoint import (Converted, convert_detectron2, map_decoder_keys,
                                  stem_architecture)

__all__ = ['OFFICIAL_ERRSEG_PREFIX', 'OFFICIAL_ERRSEG_CLIP_PREFIX', 'ERRSEG_ARCHITECTURES',
           'ERRSEG_CONFIGS', 'map_errseg_decoder_key', 'errseg_decoder_to_mmseg',
           'errseg_architecture', 'convert_errseg']

#: Prefix of the official ``Decoder`` parameters in an ERR-Seg checkpoint.
OFFICIAL_ERRSEG_PREFIX = 'sem_seg_head.decoder.'
#: Prefix of the CLIP model in an official ERR-Seg checkpoint.
OFFICIAL_ERRSEG_CLIP_PREFIX = 'sem_seg_head.clip_model.'
#: Width of the ConvNeXt stem -> (architecture, open_clip model name) of the released models.
ERRSEG_ARCHITECTURES = {128: ('ConvNeXt-B', 'convnext_base_w_320'),
                        192: ('ConvNeXt-L', 'convnext_large_d_320')}
#: Config checked against by default, by open_clip model name (relative to the repository root).
ERRSEG_CONFIGS = {'convnext_base_w_320': 'configs/errseg_convnext_base.py',
                  'convnext_large_d_320': 'configs/errseg_convnext_large.py'}
_STEM = 'visual.trunk.stem.0.weight'
_DROPPED = re.compile(re.escape(OFFICIAL_ERRSEG_CLIP_PREFIX) + r'(transformer\.resblocks\.\d+\.)?'
                      r'attn_mask$')
_REQUIRED = (OFFICIAL_ERRSEG_CLIP_PREFIX + _STEM,
             OFFICIAL_ERRSEG_CLIP_PREFIX + 'visual.modify_downsample.2.weight',
             OFFICIAL_ERRSEG_PREFIX + 'low_corr_fusion.weight',
             OFFICIAL_ERRSEG_PREFIX + 'head.weight')

_PARAM = r'\.(weight|bias)'
_BLOCK = r'(?P<p>(norm[12]|attention\.(q|k|v|proj|sr_k|norm_k|sr_v|norm_v)|mlp\.fc[123])' + \
    _PARAM + ')'
#: (pattern on the key below the prefix, part, replacement of the match or None: same name).
_RULES = [
    (re.compile(r'corr_proj_convs\.[01]\.0' + _PARAM), 'neck', None),
    (re.compile(r'(low_corr_fusion|low_img_fusion)' + _PARAM), 'neck', None),
    (re.compile(r'img_guidance_projection_agg\.[01]\.0' + _PARAM), 'neck', None),
    (re.compile(r'text_guidance_projection\.0' + _PARAM), 'neck', None),
    (re.compile(r'(aggregator_layers\.\d+\.(spatial|class)_fusion)\.sa\.' + _BLOCK), 'neck',
     r'\1.\g<p>'),
    (re.compile(r'(aggregator_layers\.\d+\.spatial_fusion)\.sa\.mlp\.dwconv\.dwconv' + _PARAM),
     'neck', r'\1.mlp.dwconv.\2'),
    (re.compile(r'img_guidance_projection_dec\.\d+\.0' + _PARAM), 'head', None),
    (re.compile(r'up_decoder\d+\.up_conv' + _PARAM), 'head', None),
    (re.compile(r'(up_decoder\d+\.textual_fusion)\.([0134])' + _PARAM), 'head',
     r'\1.double_conv.\2.\3'),
    (re.compile(r'head' + _PARAM), 'head', None),
]


def map_errseg_decoder_key(key: str, *, neck_prefix: str = 'neck.',
                           head_prefix: str = 'decode_head.') -> str:
    """Map one official key below ``sem_seg_head.decoder.`` to ours.

    Args:
        key (str): the official key, with or without the prefix.
        neck_prefix (str): prefix of the neck in the target model.
        head_prefix (str): prefix of the decode head in the target model.

    Returns:
        str: our key.

    Raises:
        KeyError: naming the key if it is not a parameter of ERR-Seg's decoder.
    """
    rest = key[len(OFFICIAL_ERRSEG_PREFIX):] if key.startswith(OFFICIAL_ERRSEG_PREFIX) else key
    for pattern, part, replacement in _RULES:
        match = pattern.fullmatch(rest)
        if match:
            name = rest if replacement is None else match.expand(replacement)
            return (neck_prefix if part == 'neck' else head_prefix) + name
    raise KeyError(f'unknown ERR-Seg decoder key {key!r}: not a parameter of the official '
                   'Decoder')


def errseg_decoder_to_mmseg(state_dict: Mapping[str, Tensor], *, neck_prefix: str = 'neck.',
                            head_prefix: str = 'decode_head.') -> Dict[str, Tensor]:
    """Convert the decoder part of an official ERR-Seg state dict.

    Args:
        state_dict (Mapping[str, Tensor]): official state dict; keys outside
            ``sem_seg_head.decoder.`` are skipped.
        neck_prefix (str): prefix of the neck in the target model.
        head_prefix (str): prefix of the decode head in the target model.

    Returns:
        dict: our keys -> the official tensors.

    Raises:
        KeyError: naming every key below the prefix that is not a decoder parameter.
    """
    return map_decoder_keys(state_dict, OFFICIAL_ERRSEG_PREFIX, partial(
        map_errseg_decoder_key, neck_prefix=neck_prefix, head_prefix=head_prefix),
        'ERR-Seg decoder keys')


def errseg_architecture(state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The open_clip model name of a converted ERR-Seg state dict (None for another width)."""
    return stem_architecture(state_dict, ERRSEG_ARCHITECTURES)


def convert_errseg(checkpoint: Mapping) -> Converted:
    """Convert an official ERR-Seg (detectron2) checkpoint; also say which ConvNeXt it holds.

    Args:
        checkpoint (Mapping): a detectron2 checkpoint ``{'model': state_dict, ...}`` (other
            entries are ignored) or a bare official state dict.

    Returns:
        Converted: ``backbone.clip_model.*``, ``neck.*`` and ``decode_head.*``, floating tensors
        as float32; the architecture is the open_clip model name of a released checkpoint
        (:data:`ERRSEG_ARCHITECTURES`) or ``'custom'``; the dropped text causal mask, if any.

    Raises:
        TypeError: if ``checkpoint`` is not a mapping.
        ValueError: for entries that are not named tensors, missing parts of ERR-Seg, or keys
            that are not part of ERR-Seg (listed).
    """
    return convert_detectron2(
        checkpoint, name='ERR-Seg', clip_prefix=OFFICIAL_ERRSEG_CLIP_PREFIX,
        decoder_prefix=OFFICIAL_ERRSEG_PREFIX, map_decoder_key=map_errseg_decoder_key,
        required=_REQUIRED, dropped_pattern=_DROPPED, architecture=errseg_architecture)
