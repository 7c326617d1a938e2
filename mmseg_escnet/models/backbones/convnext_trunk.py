"""open_clip's CLIP with a timm ConvNeXt image trunk of any size (``trunk_cfg``).

open_clip's ``TimmModel`` builds its trunk by name with ``timm.create_model``, so only the sizes
timm registers can be built. :func:`build_convnext_clip` builds open_clip's own ``CLIP`` either
with the named timm trunk or, given a ``trunk_cfg`` (timm ``ConvNeXt`` arguments such as
``depths`` and ``dims``), with a trunk of that size: for the duration of the build, the timm entry
:data:`CUSTOM_TRUNK_NAME` creates the named (else ``convnext_base``) ConvNeXt with the
``trunk_cfg`` overrides. Used by :class:`.clip_convnext.CLIPConvNeXtBackbone` (the tiny test and
synthetic configs use small trunks).
"""
import contextvars
from copy import deepcopy
from typing import Optional

import open_clip
import timm
from timm.models import register_model
from timm.models.convnext import ConvNeXt

__all__ = ['CUSTOM_TRUNK_NAME', 'check_trunk_cfg', 'build_convnext_clip']

#: ConvNeXt arguments a ``trunk_cfg`` must not set (open_clip's config or the removed classifier).
_RESERVED_TRUNK_KEYS = ('pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'checkpoint_path',
                        'num_classes', 'global_pool', 'in_chans', 'drop_path_rate', 'output_stride')
#: timm entry building the trunk while a ``trunk_cfg`` is active.
CUSTOM_TRUNK_NAME = 'mmseg_escnet_clip_convnext_custom'
#: The timm model whose arguments are the defaults when the config names no timm model.
_DEFAULT_TEMPLATE = 'convnext_base'

# (timm model whose arguments are the defaults, ConvNeXt keyword overrides); set only while
# build_convnext_clip builds a CLIP, so the timm entry below sees it.
_TRUNK_SPEC: contextvars.ContextVar = contextvars.ContextVar('clip_convnext_trunk', default=None)


@register_model
def mmseg_escnet_clip_convnext_custom(pretrained: bool = False, **kwargs) -> ConvNeXt:
    """timm entry for a ConvNeXt with a ``trunk_cfg`` (only while :func:`build_convnext_clip`
    runs)."""
    spec = _TRUNK_SPEC.get()
    if spec is None:
        raise RuntimeError(f'{CUSTOM_TRUNK_NAME} is only built by '
                           'CLIPConvNeXtBackbone(trunk_cfg=...)')
    if pretrained:
        raise ValueError('a custom-size ConvNeXt trunk has no pretrained timm weights')
    template, trunk_cfg = spec
    return timm.create_model(template, pretrained=False, **{**kwargs, **trunk_cfg})


def check_trunk_cfg(trunk_cfg: Optional[dict]) -> Optional[dict]:
    """Validate ``trunk_cfg`` and return a copy with tuple ``depths``/``dims``.

    Raises:
        TypeError: not a dict.
        ValueError: a reserved key, or ``depths``/``dims`` that are not 4 positive ints.
    """
    if trunk_cfg is None:
        return None
    if not isinstance(trunk_cfg, dict):
        raise TypeError(f'trunk_cfg must be a dict of timm ConvNeXt arguments, got '
                        f'{type(trunk_cfg)!r}')
    reserved = sorted(set(trunk_cfg) & set(_RESERVED_TRUNK_KEYS))
    if reserved:
        raise ValueError(f'trunk_cfg must not set {reserved}: drop path comes from '
                         'vision_cfg.timm_drop_path, the classifier is removed by open_clip')
    trunk_cfg = deepcopy(dict(trunk_cfg))
    for key in ('depths', 'dims'):
        if key in trunk_cfg:
            value = trunk_cfg[key]
            if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(
                    isinstance(v, int) and v > 0 for v in value):
                raise ValueError(f'trunk_cfg.{key} must be 4 positive ints, got {value!r}')
            trunk_cfg[key] = tuple(value)
    return trunk_cfg


def build_convnext_clip(cfg: dict, trunk_cfg: Optional[dict]) -> open_clip.model.CLIP:
    """Build open_clip's CLIP with random weights; timm never loads pretrained weights.

    Args:
        cfg (dict): an open_clip model config (``embed_dim``, ``vision_cfg`` with
            ``timm_model_name``, ``text_cfg``...); consumed (entries are popped).
        trunk_cfg (dict, optional): ConvNeXt overrides (:func:`check_trunk_cfg`'s result).

    Raises:
        ValueError: no ``trunk_cfg`` and ``vision_cfg.timm_model_name`` is not a timm model.
    """
    cfg.pop('custom_text', None)
    quick_gelu = bool(cfg.pop('quick_gelu', False))  # only affects the text tower
    vision = dict(cfg.pop('vision_cfg'), timm_model_pretrained=False)
    name = vision['timm_model_name']
    if trunk_cfg is None:
        if not timm.is_model(name) or name == CUSTOM_TRUNK_NAME:
            raise ValueError(f'vision_cfg.timm_model_name={name!r} is not a timm model; give '
                             'trunk_cfg=dict(depths=..., dims=...) for a custom ConvNeXt')
        return open_clip.model.CLIP(**cfg, vision_cfg=vision, quick_gelu=quick_gelu)
    template = name if timm.is_model(name) and name != CUSTOM_TRUNK_NAME else _DEFAULT_TEMPLATE
    vision['timm_model_name'] = CUSTOM_TRUNK_NAME
    token = _TRUNK_SPEC.set((template, trunk_cfg))
    try:
        return open_clip.model.CLIP(**cfg, vision_cfg=vision, quick_gelu=quick_gelu)
    finally:
        _TRUNK_SPEC.reset(token)
