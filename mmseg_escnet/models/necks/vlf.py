"""ESC-Net's Vision-Language Fusion (VLF) module (paper §3.5, Fig. 4).

Lee et al., "Effective SAM Combination for Open-Vocabulary Semantic Segmentation"
(ESC-Net).  The VLF refines the embedded correlation (cost) volume with

(a) image guidance: every class slice of the cost volume is processed by a pair of
    (shifted-)window transformer blocks whose queries and keys also see the SAM-refined
    visual feature F'_v (classes folded into the batch, "batch-level parallel operations");
(b) text guidance: for every pixel, a linear transformer without positional embedding
    attends across the classes, with the (projected) text embeddings in queries and keys.

The paper says both parts are built "similar to CAT-Seg": they are CAT-Seg's guided Swin pair
and class transformer (:mod:`mmseg_escnet.models.layers`), plus the appearance-guidance projection
(3x3 conv + ReLU) that CAT-Seg applies once per model, here applied to the F'_v of this ESC
block. Readings of the ambiguous parts: docs/escnet.md.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..layers.guidance_projection import map_guidance_projection
from ..layers.guided_swin import GuidedSwinBlockPair
from ..layers.linear_class_attention import ClassTransformerLayer, PoolSize

__all__ = ['VisionLanguageFusion']


class VisionLanguageFusion(nn.Module):
    """Refine a cost volume with a visual guidance (Swin part) and a text guidance (class part).

    Parameters: ``guidance_projection.0`` (Conv2d visual_dim -> appearance_guidance_dim, 3x3),
    ``swin_block.*`` (spatial part) and ``attention.*`` (class part).

    Args:
        hidden_dim (int): channels of the cost volume.
        visual_dim (int): channels of the visual feature F'_v (SAM dim 256).
        appearance_guidance_dim (int): channels of the projected visual guidance seen by the
            Swin queries/keys (0: no visual guidance, ``visual`` is then ignored).
        text_guidance_dim (int): channels of the (already projected) text guidance seen by the
            class attention (0: no text guidance).
        num_heads (int): heads of both attentions.
        input_resolution (tuple[int, int]): (h, w) of the cost volume.
        window_size (int): Swin window side (the second block shifts by half of it).
        pooling_size (tuple[int, int] | int | None): default average pooling of the class
            attention (CAT-Seg: (2, 2) for training, (1, 1) for evaluation).
        pad_len (int): the class axis is padded to this many learnable tokens (0: none).
    """

    def __init__(self, *, hidden_dim: int = 256, visual_dim: int = 256,
                 appearance_guidance_dim: int = 256, text_guidance_dim: int = 256,
                 num_heads: int = 4, input_resolution: Tuple[int, int] = (24, 24),
                 window_size: int = 12, pooling_size: PoolSize = (2, 2),
                 pad_len: int = 256) -> None:
        super().__init__()
        if len(tuple(input_resolution)) != 2:
            raise ValueError(f'input_resolution must be (h, w), got {input_resolution!r}')
        if appearance_guidance_dim > 0 and visual_dim < 1:
            raise ValueError(f'visual_dim must be positive when appearance_guidance_dim > 0, '
                             f'got {visual_dim}')
        self.input_resolution = tuple(input_resolution)
        self.guidance_projection = map_guidance_projection(visual_dim, appearance_guidance_dim)
        self.swin_block = GuidedSwinBlockPair(dim=hidden_dim, guidance_dim=appearance_guidance_dim,
                                              input_resolution=self.input_resolution,
                                              num_heads=num_heads, window_size=window_size)
        self.attention = ClassTransformerLayer(hidden_dim=hidden_dim,
                                               guidance_dim=text_guidance_dim, num_heads=num_heads,
                                               pooling_size=pooling_size, pad_len=pad_len)

    def forward(self, cost: torch.Tensor, visual: Optional[torch.Tensor],
                text_guidance: Optional[torch.Tensor], pooling_size: PoolSize = None,
                class_chunk_size: Optional[int] = None, with_cp: bool = False) -> torch.Tensor:
        """Fuse.

        Args:
            cost (torch.Tensor): (B, hidden_dim, T, h, w) embedded cost volume.
            visual (torch.Tensor, optional): (B, visual_dim, h, w) SAM-refined visual
                feature F'_v, shared by all classes (ignored with no visual guidance).
            text_guidance (torch.Tensor, optional): (B, T, text_guidance_dim) text guidance,
                already projected by the caller.
            pooling_size (tuple[int, int] | int, optional): class-attention pooling for this
                call (None: the default given at construction).
            class_chunk_size (int, optional): run the per-class Swin part on chunks of this
                many classes (same result, lower peak memory); the class attention always
                sees all T classes at once.
            with_cp (bool): checkpoint the per-class Swin part chunk by chunk (training memory
                of one chunk; activations are recomputed in backward).

        Returns:
            torch.Tensor: (B, hidden_dim, T, h, w) refined cost volume.
        """
        assert cost.dim() == 5 and tuple(cost.shape[-2:]) == self.input_resolution, cost.shape
        guidance = None
        if self.guidance_projection is not None:
            assert visual is not None, 'the visual guidance is missing'
            guidance = self.guidance_projection(visual)  # (B, Ga, h, w)
        # (a) spatial aggregation, classes independent: (B, C, t, h, w) -> (B, C, t, h, w)
        cost = self.swin_block(cost, guidance, class_chunk_size=class_chunk_size, with_cp=with_cp)
        # (b) class aggregation over all T classes: (B, C, T, h, w) -> (B, C, T, h, w)
        return self.attention(cost, text_guidance, pooling_size=pooling_size)
