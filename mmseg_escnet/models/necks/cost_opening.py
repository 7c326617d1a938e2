"""The opening every cost-volume neck shares (CAT-Seg, ESC-Net, SED; LMSeg uses CAT-Seg's neck).

In the layout of :mod:`mmseg_escnet.models.structures` (C = ``embed_dim``, P = ``prompt_channel``,
T' <= T kept classes)::

    img_feats (B, C, h, w), text_feats (B, T, P, C), appearance (B, C, h, w)
      -> input checks
      -> correlation                                        (B, P, T, h, w)
      -> class selection (test-time filter, ``pad_len``)    (B, P, T', h, w), text (B, T', P, C)
      -> cost embedding: a per-class conv of P channels     (B, hidden, T', h, w)
      -> appearance projection of the appearance map        (B, Ga, h, w)   (None without one)
      -> text guidance: mean prompt, projected              (B, T', Gt)     (None without one)
      -> the class-attention pooling of the current mode

:class:`CostVolumeNeck` runs these steps (:meth:`CostVolumeNeck.open_cost`) on modules its
subclasses build in the order and under the names of their official checkpoints (the class
attributes ``cost_embed_name`` and ``appearance_projection_name``, and
``text_guidance_projection``); a neck then holds only what it does with the opening.
"""
from typing import Dict, NamedTuple, Optional, Sequence

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from ..layers.cost_volume import (correlation, embed_cost, select_classes, select_pooling,
                                  text_guidance)
from ..layers.linear_class_attention import PoolSize
from ..structures import ClassFilter

__all__ = ['CostOpening', 'CostVolumeNeck', 'cost_embedding']


class CostOpening(NamedTuple):
    """What the shared opening gives a neck.

    Attributes:
        corr (Tensor): (B, P, T', h, w) cosine correlation of the kept classes.
        text_feats (Tensor): (B, T', P, C) their text embeddings.
        class_index (Tensor, optional): (B, T') the kept classes, ascending; None: all T.
        cost (Tensor): (B, hidden, T', h, w) the embedded cost volume.
        appearance_guidance (Tensor, optional): (B, Ga, h, w) the projected appearance map;
            None without an appearance projection.
        text_guidance (Tensor, optional): (B, T', Gt) the projected text guidance; None
            without a text projection.
        pooling_size (tuple[int, int] | int | None): class-attention pooling of the mode.
    """
    corr: Tensor
    text_feats: Tensor
    class_index: Optional[Tensor]
    cost: Tensor
    appearance_guidance: Optional[Tensor]
    text_guidance: Optional[Tensor]
    pooling_size: PoolSize


def cost_embedding(prompt_channel: int, hidden_dim: int, kernel_size: int) -> nn.Conv2d:
    """The per-class embedding of the P correlation channels: (B*T, P, h, w) -> (B*T, hidden, h, w)
    (a k x k conv, 'same' padding; CAT-Seg and SED: 7 x 7, ESC-Net: 1 x 1)."""
    if hidden_dim < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'the cost embedding needs hidden_dim >= 1 and an odd kernel_size >= 1, '
                         f'got hidden_dim={hidden_dim}, kernel_size={kernel_size}')
    return nn.Conv2d(prompt_channel, hidden_dim, kernel_size=kernel_size, stride=1,
                     padding=kernel_size // 2)


class CostVolumeNeck(BaseModule):
    """Base of the necks: their shared settings and opening.

    Args:
        embed_dim (int, optional): CLIP embedding width C of the dense image features and of
            the text embeddings (``backbone.embed_dim``); None for a neck with no module that
            takes them (SED's).
        prompt_channel (int): prompts P per class (the vocabulary's templates).
        pad_len (int, optional): with more classes, only the top ``pad_len`` by maximal
            correlation are kept (CAT-Seg); 0/None keeps all.
        feature_resolution (tuple[int, int], optional): (h, w) of the CLIP grid the neck is
            built for (its Swin windows); None: any.
        pooling_size (tuple[int, int] | int, optional): class-attention pooling in training.
        test_pooling_size (tuple[int, int] | int, optional): in evaluation (None: the training
            one).
        init_cfg (dict, optional): mmengine initialisation config.
    """

    #: Constructor arguments the segmentor fills from the model: argument -> size name
    #: (``'embed_dim'``: backbone.embed_dim, ``'num_prompts'``: the vocabulary's P).
    derived_sizes: Dict[str, str] = {'embed_dim': 'embed_dim', 'prompt_channel': 'num_prompts'}
    #: Attribute (official parameter name) of the cost embedding.
    cost_embed_name: str = 'conv1'
    #: Attribute (official parameter name) of the appearance projection; None: the neck has none.
    appearance_projection_name: Optional[str] = 'guidance_projection'

    def __init__(self, *, embed_dim: Optional[int], prompt_channel: int, pad_len: Optional[int],
                 feature_resolution: Optional[Sequence[int]] = None,
                 pooling_size: PoolSize = None, test_pooling_size: PoolSize = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(prompt_channel, bool) or not isinstance(prompt_channel, int) or \
                prompt_channel < 1:
            raise ValueError(f'prompt_channel must be a positive int, got {prompt_channel!r}')
        if pad_len is not None and pad_len < 0:
            raise ValueError(f'pad_len must be >= 0 or None, got {pad_len}')
        if feature_resolution is not None and len(feature_resolution) != 2:
            raise ValueError(f'feature_resolution must be (h, w), got {feature_resolution!r}')
        self.embed_dim = embed_dim
        self.prompt_channel = prompt_channel  # P, checked against the vocabulary at build
        self.pad_len = pad_len or 0
        self.feature_resolution = None if feature_resolution is None else tuple(
            feature_resolution)
        self.pooling_size = pooling_size
        self.test_pooling_size = test_pooling_size

    def check_inputs(self, img_feats: Tensor, text_feats: Tensor) -> None:
        """Raise ValueError, naming the shapes, if the inputs do not fit this neck.

        Args:
            img_feats (Tensor): (B, C, h, w).
            text_feats (Tensor): (B, T, P, C).
        """
        if img_feats.dim() != 4 or text_feats.dim() != 4 or \
                text_feats.shape[-1] != img_feats.shape[1]:
            raise ValueError(f'expected img_feats (B, C, h, w) and text_feats (B, T, P, C), got '
                             f'{tuple(img_feats.shape)} and {tuple(text_feats.shape)}')
        if text_feats.shape[2] != self.prompt_channel:
            raise ValueError(f'text_feats has {text_feats.shape[2]} prompts per class, '
                             f'prompt_channel is {self.prompt_channel}')
        if self.feature_resolution is not None and \
                tuple(img_feats.shape[-2:]) != self.feature_resolution:
            raise ValueError(f'img_feats {tuple(img_feats.shape)} is not on the '
                             f'feature_resolution {self.feature_resolution} grid')

    def open_cost(self, img_feats: Tensor, text_feats: Tensor,
                  appearance_guidance: Optional[Tensor] = None,
                  class_filter: Optional[ClassFilter] = None) -> CostOpening:
        """Run the shared opening.

        Args:
            img_feats (Tensor): (B, C, h, w) dense CLIP image features.
            text_feats (Tensor): (B, T, P, C) class prompt embeddings.
            appearance_guidance (Tensor, optional): (B, C_a, h, w) the map the appearance
                projection takes; None: ``img_feats``.
            class_filter (ClassFilter, optional): the test-time class filter of the neck stage
                (:func:`~mmseg_escnet.models.layers.cost_volume.select_classes`).

        Returns:
            CostOpening: everything after the opening's steps, on the T' kept classes.
        """
        self.check_inputs(img_feats, text_feats)
        corr = correlation(img_feats, text_feats)  # (B, P, T, h, w)
        corr, text_feats, class_index = select_classes(corr, text_feats, pad_len=self.pad_len,
                                                      class_filter=class_filter)
        cost = embed_cost(getattr(self, self.cost_embed_name), corr)  # (B, hidden, T', h, w)
        projection = getattr(self, self.appearance_projection_name or '', None)
        appearance = None
        if projection is not None:  # (B, C_a, h, w) -> (B, Ga, h, w)
            appearance = projection(img_feats if appearance_guidance is None
                                    else appearance_guidance)
        guidance = text_guidance(getattr(self, 'text_guidance_projection', None),
                                 text_feats)  # (B, T', Gt)
        pooling_size = select_pooling(self.training, self.pooling_size, self.test_pooling_size)
        return CostOpening(corr=corr, text_feats=text_feats, class_index=class_index, cost=cost,
                           appearance_guidance=appearance, text_guidance=guidance,
                           pooling_size=pooling_size)
