"""Sizes the segmentor derives for its neck and head, so configs do not repeat them.

A neck or head declares which of its constructor arguments follow from the rest of the model
in a class attribute ``derived_sizes`` (argument -> size name), e.g. ESC-Net's neck::

    derived_sizes = {'embed_dim': 'embed_dim', 'prompt_channel': 'num_prompts'}

The size names (:func:`model_sizes`):

===============  ===========================================================================
``embed_dim``    the backbone's joint image-text embedding width C (``backbone.embed_dim``)
``num_prompts``  prompts per class P of the vocabulary (templates or description channels)
``skip_width``   the width of a ViT backbone's skip features (``backbone.width``)
``skip_dims``    the skip features' channels, deepest first (the order decoders take them)
``stage_dims``   a ConvNeXt backbone's four stage-output channels, deepest first
===============  ===========================================================================

The segmentor fills an argument the config leaves out; one the config sets must equal the derived
value, else building fails with a message naming both (a paper config sets only what the paper
sets; a wrong value is never silently used).
"""
from typing import Any, Dict, Mapping, Optional

from mmseg.registry import MODELS
from torch import nn

from ...text import Vocabulary

__all__ = ['SIZE_SOURCES', 'model_sizes', 'fill_sizes']

#: Where each size comes from (for messages).
SIZE_SOURCES = {
    'embed_dim': 'backbone.embed_dim',
    'num_prompts': "the vocabulary's prompts per class",
    'skip_width': 'backbone.width',
    'skip_dims': "the backbone's skip feature channels (deepest first)",
    'stage_dims': "the backbone's stage output channels (deepest first)",
}


def model_sizes(backbone: nn.Module, vocabulary: Optional[Vocabulary]) -> Dict[str, Any]:
    """The sizes a neck or head may derive, from the built backbone and the training vocabulary.

    Args:
        backbone (nn.Module): the built backbone.
        vocabulary (Vocabulary, optional): the training vocabulary.

    Returns:
        dict: size name -> value; None where the backbone or vocabulary does not tell (a
        descriptions file is read on first use: its P is checked then).
    """
    skip_dims = getattr(backbone, 'skip_dims', None)
    stage_dims = getattr(backbone, 'stage_dims', None)
    num_prompts = None
    if vocabulary is not None:
        try:
            num_prompts = vocabulary.num_prompts
        except (OSError, ValueError):
            pass
    return dict(embed_dim=getattr(backbone, 'embed_dim', None), num_prompts=num_prompts,
                skip_width=getattr(backbone, 'width', None),
                skip_dims=None if skip_dims is None else tuple(reversed(skip_dims)),
                stage_dims=None if stage_dims is None else tuple(reversed(stage_dims)))


def _same(configured: Any, derived: Any) -> bool:
    if isinstance(derived, tuple):
        return isinstance(configured, (tuple, list)) and tuple(configured) == derived
    return configured == derived


def fill_sizes(cfg: Mapping[str, Any], sizes: Mapping[str, Any], part: str) -> dict:
    """``cfg`` with the derived arguments of its class filled in and the configured ones checked.

    Args:
        cfg (Mapping): a registry config (``type`` plus arguments).
        sizes (Mapping): :func:`model_sizes`.
        part (str): ``'neck'`` or ``'decode_head'``, for messages.

    Returns:
        dict: a new config.

    Raises:
        ValueError: for a configured argument that differs from its derived value, naming both.
    """
    cfg = dict(cfg)
    cls = cfg.get('type')
    cls = MODELS.get(cls) if isinstance(cls, str) else cls
    for arg, size in getattr(cls, 'derived_sizes', {}).items():
        derived = sizes.get(size)
        if derived is None:
            continue
        if arg not in cfg:
            cfg[arg] = derived
        elif not _same(cfg[arg], derived):
            raise ValueError(f'{part}.{arg}={cfg[arg]!r} but {SIZE_SOURCES[size]} is '
                             f'{derived!r}: leave {part}.{arg} out of the config (it is derived) '
                             'or change the backbone/vocabulary')
    return cfg
