"""Whole official CAT-Seg (detectron2) checkpoints -> our CAT-Seg model's state dict.

The released checkpoints of cvlab-kaist/CAT-Seg (``model_final_base.pth``: CLIP ViT-B/16,
``model_final_large.pth``: CLIP ViT-L/14@336px) are detectron2 files
``{'model': state_dict, ...}`` (possibly with ``iteration``, ``optimizer``, ``scheduler``).
Every entry of the state dict is accounted for:

==============================================  ==============================================
official key                                    our key
==============================================  ==============================================
``sem_seg_head.predictor.clip_model.<name>``    ``backbone.clip_model.<name>`` (CLIPBackbone)
``sem_seg_head.predictor.transformer.<name>``   ``neck.<name>`` / ``decode_head.<name>``
                                                (:func:`.catseg_official.map_catseg_key`)
``upsample1.*``, ``upsample2.*``                ``decode_head.upsample1.*``, ``...upsample2.*``
``*.attn_mask``                                 dropped: :data:`DROPPED_KEYS`
``backbone.*``                                  refused: early two-backbone CAT-Seg version
anything else                                   refused (``ValueError`` listing the keys)
==============================================  ==============================================

CLIP names: CAT-Seg's CLIP (``cat_seg/third_party/model_vpt.py``) is OpenAI's with every
attention's ``in_proj_weight`` split into ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``
(``in_proj_bias`` stays packed), exactly :class:`~mmseg_escnet.models.backbones.clip.CLIPBackbone`'s
naming; ``logit_scale`` is a parameter of both. A packed ``in_proj_weight`` (OpenAI/open_clip
style) is accepted and split. Not in official checkpoints, hence not expected: the pixel mean/std
buffers (registered non-persistent), the class text features and the text causal mask (plain
attributes), and the visual prompt tokens (``PROMPT_DEPTH = PROMPT_LENGTH = 0`` in the released
configs; a checkpoint that has them is refused since ``CLIPBackbone`` has no prompt tuning).
"""
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .clip_official import merge_qkv, split_qkv
from .catseg_official import map_catseg_key
from .official_checkpoint import detectron2_state_dict, float32, short_list

__all__ = [
    'OFFICIAL_CLIP_PREFIX', 'CLIP_PREFIX', 'DROPPED_KEYS', 'REQUIRED_OFFICIAL_KEYS',
    'CLIPArchitecture', 'KNOWN_ARCHITECTURES', 'clip_architecture',
    'clip_architecture_from_config', 'check_architecture', 'split_catseg_checkpoint',
    'convert_catseg_checkpoint'
]

#: Prefix of the CLIP model in an official CAT-Seg checkpoint.
OFFICIAL_CLIP_PREFIX = 'sem_seg_head.predictor.clip_model.'
#: Prefix of the CLIP model in our segmentor.
CLIP_PREFIX = 'backbone.clip_model.'
#: Official entries that are not learned and that our modules rebuild, dropped by name:
#: (pattern, what it is).
DROPPED_KEYS: Tuple[Tuple[str, str], ...] = (
    (r'^sem_seg_head\.predictor\.transformer\.layers\.\d+\.swin_block\.block_\d\.attn_mask$',
     'shifted-window Swin attention mask, a constant of feature_resolution and window_size '
     '(CATSegAggregator rebuilds it)'),
    (r'^sem_seg_head\.predictor\.clip_model\.(transformer\.resblocks\.\d+\.)?attn_mask$',
     'causal mask of the CLIP text transformer, a constant of the context length'),
)
#: Official keys without which a checkpoint is not a complete CAT-Seg model.
REQUIRED_OFFICIAL_KEYS = (
    OFFICIAL_CLIP_PREFIX + 'visual.conv1.weight',
    OFFICIAL_CLIP_PREFIX + 'token_embedding.weight',
    'sem_seg_head.predictor.transformer.conv1.weight',
    'sem_seg_head.predictor.transformer.head.weight',
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


@dataclass(frozen=True)
class CLIPArchitecture:
    """Shape-defining hyper-parameters of a CLIP ViT (what a config must match).

    Attributes:
        vision_width (int): Vision transformer width (768 for ViT-B/16, 1024 for ViT-L/14).
        vision_layers (int): Vision transformer blocks.
        patch_size (int): Patch side in pixels.
        image_size (int): Resolution the visual positional embedding was made for.
        embed_dim (int): Joint image-text embedding dim.
        text_width (int): Text transformer width.
        text_layers (int): Text transformer blocks.
    """
    vision_width: int
    vision_layers: int
    patch_size: int
    image_size: int
    embed_dim: int
    text_width: int
    text_layers: int

    @property
    def name(self) -> str:
        """``'ViT-B/16'``, ``'ViT-L/14@336px'`` or a description of another architecture."""
        for name, arch in KNOWN_ARCHITECTURES.items():
            if arch == self:
                return name
        return (f'ViT (width {self.vision_width}, {self.vision_layers} layers, patch '
                f'{self.patch_size}, {self.image_size}px; text width {self.text_width}, '
                f'{self.text_layers} layers; embed dim {self.embed_dim})')


#: The CLIP models of the released CAT-Seg checkpoints.
KNOWN_ARCHITECTURES: Dict[str, CLIPArchitecture] = {
    'ViT-B/16': CLIPArchitecture(768, 12, 16, 224, 512, 512, 12),
    'ViT-L/14@336px': CLIPArchitecture(1024, 24, 14, 336, 768, 768, 12),
}


def _num_blocks(keys: List[str], stem: str) -> int:
    pattern = re.compile(re.escape(stem) + r'(\d+)\.')
    return len({m.group(1) for m in map(pattern.match, keys) if m})


def clip_architecture(state_dict: Mapping[str, Tensor]) -> CLIPArchitecture:
    """Read the CLIP architecture from tensor shapes.

    Args:
        state_dict (Mapping[str, Tensor]): An official CAT-Seg state dict
            (``sem_seg_head.predictor.clip_model.*``), a converted one (``backbone.clip_model.*``)
            or bare CLIP weights. Only shapes are read (``meta`` tensors work).

    Returns:
        CLIPArchitecture: The architecture; ``.name`` is e.g. ``'ViT-B/16'``.

    Raises:
        ValueError: If the CLIP tensors the architecture is read from are missing.
    """
    prefix = next((p for p in (OFFICIAL_CLIP_PREFIX, CLIP_PREFIX, '')
                   if p + 'visual.conv1.weight' in state_dict), None)
    if prefix is None:
        tried = [p + 'visual.conv1.weight' for p in (OFFICIAL_CLIP_PREFIX, CLIP_PREFIX, '')]
        raise ValueError(f'no CLIP ViT weights found: none of {tried} is in the state dict')
    needed = ('visual.conv1.weight', 'visual.positional_embedding', 'visual.proj',
              'ln_final.weight')
    missing = [prefix + k for k in needed if prefix + k not in state_dict]
    if missing:
        raise ValueError(f'cannot read the CLIP architecture: missing {missing}')
    conv1 = state_dict[prefix + 'visual.conv1.weight'].shape  # (width, 3, patch, patch)
    num_pos = state_dict[prefix + 'visual.positional_embedding'].shape[0]  # 1 + grid**2
    grid = round((num_pos - 1)**0.5)
    if grid * grid != num_pos - 1:
        raise ValueError(f'{prefix}visual.positional_embedding has {num_pos - 1} patch entries, '
                         'not a square grid')
    keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    return CLIPArchitecture(
        vision_width=int(conv1[0]),
        vision_layers=_num_blocks(keys, 'visual.transformer.resblocks.'),
        patch_size=int(conv1[-1]),
        image_size=int(conv1[-1]) * grid,
        embed_dim=int(state_dict[prefix + 'visual.proj'].shape[1]),
        text_width=int(state_dict[prefix + 'ln_final.weight'].shape[0]),
        text_layers=_num_blocks(keys, 'transformer.resblocks.'))


def clip_architecture_from_config(backbone_cfg: Mapping) -> CLIPArchitecture:
    """The CLIP architecture a ``CLIPBackbone`` config builds, without building it.

    Args:
        backbone_cfg (Mapping): ``model.backbone`` of a config: ``model_name`` (open_clip
            architecture, e.g. ``'ViT-B-16'``) or an explicit ``model_cfg``.

    Returns:
        CLIPArchitecture: open_clip's defaults fill the fields the config leaves out.

    Raises:
        ValueError: If ``model_name`` is not an open_clip architecture.
    """
    import open_clip

    model_cfg = backbone_cfg.get('model_cfg')
    if model_cfg is None:
        name = backbone_cfg.get('model_name', 'ViT-B-16')
        model_cfg = open_clip.get_model_config(name)
        if model_cfg is None:
            raise ValueError(f'backbone.model_name={name!r} is not an open_clip architecture')
    vision = open_clip.model.CLIPVisionCfg(**dict(model_cfg.get('vision_cfg', {})))
    text = open_clip.model.CLIPTextCfg(**dict(model_cfg.get('text_cfg', {})))
    image_size = vision.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    return CLIPArchitecture(vision_width=vision.width, vision_layers=vision.layers,
                            patch_size=vision.patch_size, image_size=image_size,
                            embed_dim=model_cfg['embed_dim'], text_width=text.width,
                            text_layers=text.layers)


def check_architecture(checkpoint_arch: CLIPArchitecture, config_arch: CLIPArchitecture,
                       config: str = 'the config') -> None:
    """Refuse a checkpoint whose CLIP is not the one the config builds.

    Args:
        checkpoint_arch (CLIPArchitecture): From :func:`clip_architecture`.
        config_arch (CLIPArchitecture): From :func:`clip_architecture_from_config`.
        config (str): Config name for the message.

    Raises:
        ValueError: ``'checkpoint is ViT-L/14@336px but <config> builds ViT-B/16'``.
    """
    if checkpoint_arch != config_arch:
        raise ValueError(f'checkpoint is {checkpoint_arch.name} but {config} builds '
                         f'{config_arch.name}')


def split_catseg_checkpoint(
        checkpoint: Mapping) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Convert an official CAT-Seg checkpoint and also return what was dropped.

    Args:
        checkpoint (Mapping): See :func:`convert_catseg_checkpoint`.

    Returns:
        tuple[dict, dict]: Our full state dict (float32) and the dropped
        :data:`DROPPED_KEYS` entries under their official names.

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
            'the early CAT-Seg version with an extra Swin/ResNet backbone (configs vitl_swinb_384*, '
            'vitb_r101_384), which this port does not implement; use the current release '
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
    return float32(converted), dropped


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
        ValueError: See :func:`split_catseg_checkpoint`.
    """
    return split_catseg_checkpoint(checkpoint)[0]
