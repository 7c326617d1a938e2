"""LMSeg's learnable fusion of SAM and CLIP image features (Tang et al., arXiv 2412.00364).

LMSeg supplements the dense CLIP features F_c with SAM's F_s through a learnable weighting,
``F = w * F_c + (1 - w) * F_s``, before the cost volume (a cosine against CLIP text embeddings,
so F must lie in CLIP's space). Its revised version maps SAM's features into CLIP's space with
a lightweight adapter first. Both readings of w are here (docs/lmseg.md):

* ``'scalar'``: ``w = sigmoid(theta)``, one learnable scalar (arXiv v1);
* ``'pixel'``: ``w = sigmoid(conv1x1(relu(conv3x3([F_c; F_s]))))``, a weight per pixel (v2).

Data flow::

    F_s (B, S, g, g) -> resize to CLIP's grid (B, S, h, w) -> adapter 1x1 conv (B, C, h, w)
    w (1,) or (B, 1, h, w);  F = w * F_c + (1 - w) * F_s  (B, C, h, w)

The adapter starts at zero (``zero_init_adapter``), so training starts from CLIP's own cost
volume (a cosine ignores the scale w): random SAM features would otherwise perturb it.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS

__all__ = ['SAMCLIPFusion', 'FUSION_MODES']

FUSION_MODES = ('scalar', 'pixel')


@MODELS.register_module()
class SAMCLIPFusion(BaseModule):
    """Adapter (resize + 1x1 conv) and weighted fusion of SAM and CLIP features.

    Args:
        sam_dim (int): channels S of SAM's features (256).
        clip_dim (int): channels C of CLIP's dense features (512 for ViT-B/16, 768 for L/14).
        mode (str): ``'scalar'`` or ``'pixel'`` (see the module docstring).
        init_weight (float): the initial CLIP weight w in (0, 1).
        hidden_dim (int): channels of the per-pixel weight's 3x3 conv (``'pixel'`` only).
        zero_init_adapter (bool): start the adapter at zero (F = w * F_c at first).
        init_cfg (dict, optional): mmengine init config.
    """

    #: Arguments the segmentor fills from the model (``models/segmentors/model_sizes.py``).
    derived_sizes = {'clip_dim': 'embed_dim'}

    def __init__(self, *, sam_dim: int = 256, clip_dim: int = 512, mode: str = 'scalar',
                 init_weight: float = 0.5, hidden_dim: int = 64, zero_init_adapter: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if mode not in FUSION_MODES:
            raise ValueError(f'fusion mode must be one of {FUSION_MODES}, got {mode!r}')
        if not 0.0 < init_weight < 1.0:
            raise ValueError(f'init_weight must be in (0, 1), got {init_weight}')
        self.mode = mode
        self.init_weight = init_weight
        self.zero_init_adapter = zero_init_adapter
        self.adapter = nn.Conv2d(sam_dim, clip_dim, kernel_size=1)
        bias = math.log(init_weight / (1.0 - init_weight))  # logit(w0)
        if mode == 'scalar':
            self.weight_logit = nn.Parameter(torch.tensor(bias))
        else:
            self.weight_net = nn.Sequential(
                nn.Conv2d(2 * clip_dim, hidden_dim, kernel_size=3, padding=1), nn.ReLU(),
                nn.Conv2d(hidden_dim, 1, kernel_size=1))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self.zero_init_adapter:
            nn.init.zeros_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)
        if self.mode == 'pixel':
            nn.init.constant_(self.weight_net[2].bias,
                              math.log(self.init_weight / (1.0 - self.init_weight)))

    def init_weights(self) -> None:
        """mmengine init, then the adapter and weight initialisation above."""
        super().init_weights()
        self._reset_parameters()

    def adapt(self, sam_feats: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """SAM features in CLIP's space and grid.

        Args:
            sam_feats (torch.Tensor): (B, S, g, g).
            size (tuple[int, int]): CLIP's grid (h, w).

        Returns:
            torch.Tensor: (B, C, h, w).
        """
        if tuple(sam_feats.shape[-2:]) != tuple(size):
            down = sam_feats.shape[-2] > size[0] or sam_feats.shape[-1] > size[1]
            sam_feats = F.interpolate(sam_feats, size=tuple(size), mode='bilinear',
                                      align_corners=False, antialias=down)  # (B, S, h, w)
        return self.adapter(sam_feats)                                      # (B, C, h, w)

    def clip_weight(self, clip_feats: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
        """The weight w of CLIP's features: a 0-dim tensor or (B, 1, h, w)."""
        if self.mode == 'scalar':
            return torch.sigmoid(self.weight_logit)
        # [F_c; F_s] (B, 2C, h, w) -> (B, 1, h, w)
        return torch.sigmoid(self.weight_net(torch.cat([clip_feats, adapted], dim=1)))

    def forward(self, clip_feats: torch.Tensor, sam_feats: torch.Tensor) -> torch.Tensor:
        """Fuse.

        Args:
            clip_feats (torch.Tensor): (B, C, h, w) dense CLIP features F_c.
            sam_feats (torch.Tensor): (B, S, g, g) SAM image-encoder features.

        Returns:
            torch.Tensor: (B, C, h, w) ``w * F_c + (1 - w) * adapter(F_s)``.
        """
        adapted = self.adapt(sam_feats.to(clip_feats.dtype), clip_feats.shape[-2:])
        weight = self.clip_weight(clip_feats, adapted)
        return weight * clip_feats + (1.0 - weight) * adapted
