"""Official CAT-Seg (detectron2) checkpoints -> our CAT-Seg model's state dict.

The released checkpoints of cvlab-kaist/CAT-Seg (``model_final_base.pth``: CLIP ViT-B/16,
``model_final_large.pth``: CLIP ViT-L/14@336px) are detectron2 files
``{'model': state_dict, ...}`` (possibly with ``iteration``, ``optimizer``, ``scheduler``).
Every entry of the state dict is accounted for:

==============================================  ==============================================
official key                                    our key
==============================================  ==============================================
``sem_seg_head.predictor.clip_model.<name>``    ``backbone.clip_model.<name>`` (CLIPBackbone)
``sem_seg_head.predictor.transformer.<name>``   ``neck.<name>`` / ``decode_head.<name>``
                                                (:func:`map_catseg_key`)
``upsample1.*``, ``upsample2.*``                ``decode_head.upsample1.*``, ``...upsample2.*``
``*.attn_mask``                                 dropped: :data:`DROPPED_KEYS`
``backbone.*``                                  refused: early two-backbone CAT-Seg version
anything else                                   refused (``ValueError`` listing the keys)
==============================================  ==============================================

The official ``Aggregator`` splits into our neck
(:class:`~mmseg_escnet.models.necks.catseg_aggregator.CATSegAggregator`) and decode head
(:class:`~mmseg_escnet.models.decode_heads.catseg_head.CATSegHead`); names below the prefixes are
identical, so that part is a prefix substitution. The precomputed Swin ``attn_mask`` buffers are
dropped (our modules rebuild them; :func:`catseg_model_problems` checks they are equal).

CLIP names: CAT-Seg's CLIP (``cat_seg/third_party/model_vpt.py``) is OpenAI's with every
attention's ``in_proj_weight`` split into ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``
(``in_proj_bias`` stays packed), exactly :class:`~mmseg_escnet.models.backbones.clip.CLIPBackbone`'s
naming; ``logit_scale`` is a parameter of both. A packed ``in_proj_weight`` (OpenAI/open_clip
style) is accepted and split. Not in official checkpoints, hence not expected: the pixel mean/std
buffers (registered non-persistent), the class text features and the text causal mask (plain
attributes), and the visual prompt tokens (``PROMPT_DEPTH = PROMPT_LENGTH = 0`` in the released
configs; a checkpoint that has them is refused since ``CLIPBackbone`` has no prompt tuning).

:func:`convert_catseg` is the format's converter in :mod:`.convert` (``catseg_official``, used by
the model zoo and ``tools/model_converters/catseg2mmseg.py``).
"""
import re
from dataclasses import asdict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.config import Config
from torch import Tensor, nn

from .clip_architecture import (CLIP_PREFIX, OFFICIAL_CLIP_PREFIX, check_architecture,
                                clip_architecture, clip_architecture_from_config)
from .clip_official import merge_qkv, split_qkv
from .official_checkpoint import Converted, detectron2_state_dict, float32, short_list

__all__ = [
    'OFFICIAL_AGGREGATOR_PREFIX', 'NECK_SUBMODULES', 'HEAD_SUBMODULES', 'DROPPED_KEYS',
    'REQUIRED_OFFICIAL_KEYS', 'CATSEG_CONFIGS', 'map_catseg_key', 'convert_catseg_state_dict',
    'strip_prefix', 'convert_catseg', 'convert_catseg_checkpoint', 'check_catseg_config',
    'catseg_model_problems'
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
#: Official entries that are not learned and that our modules rebuild, dropped by name:
#: (pattern, what it is).
DROPPED_KEYS: Tuple[Tuple[str, str], ...] = (
    (r'^sem_seg_head\.predictor\.transformer\.layers\.\d+\.swin_block\.block_\d\.attn_mask$',
     'shifted-window Swin attention mask, a constant of feature_resolution and window_size '
     '(CATSegAggregator rebuilds it)'),
    (r'^sem_seg_head\.predictor\.clip_model\.(transformer\.resblocks\.\d+\.)?attn_mask$',
     'causal mask of the CLIP text transformer, a constant of the context length'),
)
#: Config checked against by default, by CLIP architecture (relative to the repository root).
CATSEG_CONFIGS = {'ViT-B/16': 'configs/catseg_vitb16.py',
                  'ViT-L/14@336px': 'configs/catseg_vitl14.py'}
#: Official keys without which a checkpoint is not a complete CAT-Seg model.
REQUIRED_OFFICIAL_KEYS = (
    OFFICIAL_CLIP_PREFIX + 'visual.conv1.weight',
    OFFICIAL_CLIP_PREFIX + 'token_embedding.weight',
    OFFICIAL_AGGREGATOR_PREFIX + 'conv1.weight',
    OFFICIAL_AGGREGATOR_PREFIX + 'head.weight',
    'upsample1.weight',
    'upsample2.weight',
)

_DROPPED_RES = tuple(re.compile(pattern) for pattern, _ in DROPPED_KEYS)
_BLOCK = (r'(visual\.)?transformer\.resblocks\.\d+\.(ln_[12]\.(weight|bias)|'
          r'mlp\.c_(fc|proj)\.(weight|bias)|'
          r'attn\.([qkv]_proj_weight|in_proj_weight|in_proj_bias|out_proj\.(weight|bias)))')
_TOP = (r'positional_embedding|text_projection|logit_scale|token_embedding\.weight|'
        r'ln_final\.(weight|bias)|'
        r'visual\.(class_embedding|positional_embedding|proj|conv1\.weight|'
        r'ln_(pre|post)\.(weight|bias))')
#: Names (below the CLIP prefix) of an OpenAI-style CLIP ViT, packed or split q/k/v.
_CLIP_KEY = re.compile(rf'^({_TOP}|{_BLOCK})$')
_HINTS = (
    ('visual.transformer.prompt_tokens',
     'visual prompt tokens: the checkpoint was trained with PROMPT_DEPTH/PROMPT_LENGTH > 0 '
     '(visual prompt tuning), which CLIPBackbone does not implement'),
    ('sem_seg_head.predictor.clip_model.visual.layer',
     'a ResNet CLIP image encoder: only ViT CLIP models are supported'),
)


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


def convert_catseg(checkpoint: Mapping) -> Converted:
    """Convert an official CAT-Seg checkpoint; also say what CLIP it holds and what was dropped.

    Args:
        checkpoint (Mapping): See :func:`convert_catseg_checkpoint`.

    Returns:
        Converted: Our full state dict (float32); the CLIP architecture (``'ViT-B/16'``...);
        the dropped :data:`DROPPED_KEYS` entries under their official names; ``meta`` with the
        CLIP hyper-parameters (``clip``) and the dropped keys (``dropped_keys``).

    Raises:
        TypeError: If ``checkpoint`` is not a mapping.
        ValueError: For non-tensor entries, ``backbone.*`` keys (early CAT-Seg version), keys
            that are not part of CAT-Seg, missing :data:`REQUIRED_OFFICIAL_KEYS` or incomplete
            q/k/v triples; the message lists the keys.
    """
    state = detectron2_state_dict(checkpoint, 'CAT-Seg')
    old = [k for k in state if k.startswith('backbone.')]
    if old:
        raise ValueError(
            f'{len(old)} backbone.* keys (e.g. {short_list(old, 3)}): this checkpoint comes from '
            'the early CAT-Seg version with an extra Swin/ResNet backbone (configs '
            'vitl_swinb_384*, vitb_r101_384), which this port does not implement; use the current '
            'release '
            '(model_final_base.pth / model_final_large.pth)')
    missing = [k for k in REQUIRED_OFFICIAL_KEYS if k not in state]
    if missing:
        raise ValueError(f'not a complete CAT-Seg checkpoint: missing {missing}')

    converted: Dict[str, Tensor] = {}
    clip: Dict[str, Tensor] = {}
    dropped: Dict[str, Tensor] = {}
    unknown: List[str] = []
    for key, value in state.items():
        if any(p.match(key) for p in _DROPPED_RES):
            dropped[key] = value
        elif key.startswith(OFFICIAL_CLIP_PREFIX):
            name = key[len(OFFICIAL_CLIP_PREFIX):]
            if _CLIP_KEY.match(name):
                clip[name] = value
            else:
                unknown.append(key)
        else:
            new_key = map_catseg_key(key)
            if new_key is None:
                unknown.append(key)
            else:
                converted[new_key] = value
    if unknown:
        hints = [hint for stem, hint in _HINTS if any(stem in k for k in unknown)]
        raise ValueError(f'{len(unknown)} entries are not part of CAT-Seg: {short_list(unknown)}' +
                         ''.join(f'; {h}' for h in hints))
    both = [k for k in clip if k.endswith('.in_proj_weight')
            and k[:-len('in_proj_weight')] + 'q_proj_weight' in clip]
    if both:
        raise ValueError(f'attention weights both packed and split: {short_list(both)}')
    try:
        clip = split_qkv(merge_qkv(clip))  # packed or split in -> split out
    except ValueError as err:
        raise ValueError(f'CLIP attention weights under {OFFICIAL_CLIP_PREFIX}: {err}') from err
    converted.update({CLIP_PREFIX + k: v for k, v in clip.items()})
    arch = clip_architecture(converted)
    return Converted(float32(converted), f'{arch.name}, {len(dropped)} constant buffers dropped',
                     architecture=arch.name, dropped=dropped,
                     meta=dict(clip=asdict(arch), dropped_keys=sorted(dropped)))


def convert_catseg_checkpoint(checkpoint: Mapping) -> Dict[str, Tensor]:
    """Convert an official CAT-Seg (detectron2) checkpoint into our model's full state dict.

    Args:
        checkpoint (Mapping): A detectron2 checkpoint ``{'model': state_dict, ...}`` (other
            entries such as ``iteration``, ``optimizer``, ``scheduler`` are ignored) or a bare
            official state dict.

    Returns:
        dict[str, Tensor]: ``backbone.clip_model.*`` (CLIPBackbone naming, q/k/v split),
        ``neck.*`` and ``decode_head.*`` entries, floating tensors as float32 (they may share
        memory with the input). :data:`DROPPED_KEYS` entries are left out.

    Raises:
        TypeError: If ``checkpoint`` is not a mapping.
        ValueError: See :func:`convert_catseg`.
    """
    return convert_catseg(checkpoint).state_dict


def check_catseg_config(converted: Converted, cfg: Config, config: str) -> None:
    """Refuse a config that builds another CLIP than the checkpoint's, before building it.

    Raises:
        ValueError: ``'checkpoint is ViT-L/14@336px but <config> builds ViT-B/16'``.
    """
    check_architecture(clip_architecture(converted.state_dict),
                       clip_architecture_from_config(cfg.model.backbone), config)


def catseg_model_problems(converted: Converted, model: nn.Module) -> List[str]:
    """The dropped Swin attention masks that differ from the ones ``model`` rebuilds.

    A difference means another aggregator geometry (``feature_resolution``/``window_size``),
    which the weights' shapes do not reveal.
    """
    buffers = dict(model.named_buffers())
    problems = []
    for key, mask in converted.dropped.items():
        if not key.startswith(OFFICIAL_AGGREGATOR_PREFIX):
            continue  # the CLIP text causal mask: a constant of the context length
        ours = 'neck.' + key[len(OFFICIAL_AGGREGATOR_PREFIX):]
        theirs = buffers.get(ours)
        if theirs is None or theirs.shape != mask.shape or not torch.equal(theirs.float(),
                                                                            mask.float()):
            problems.append(f"{key} differs from the model's {ours} (another "
                            'feature_resolution/window_size?)')
    return problems
