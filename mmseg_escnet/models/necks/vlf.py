"""ESC-Net's Vision-Language Fusion (VLF) module (paper §3.5, Fig. 4).

Lee et al., "Effective SAM Combination for Open-Vocabulary Semantic Segmentation"
(ESC-Net).  The VLF refines the embedded correlation (cost) volume with

(a) image guidance: every class slice of the cost volume is processed by a pair of
    (shifted-)window transformer blocks whose queries and keys also see the SAM-refined
    visual feature F'_v (classes folded into the batch, "batch-level parallel operations");
(b) text guidance: for every pixel, a linear transformer without positional embedding
    attends across the classes, with the (projected) text embeddings in queries and keys.

The paper says both parts are built "similar to CAT-Seg", so this module reuses
:class:`~mmseg_escnet.models.necks.catseg_aggregator.CATSegAggregatorLayer` (guided Swin
pair + class transformer) and adds the appearance-guidance projection (3x3 conv + ReLU) that
CAT-Seg applies once per model, here applied to the F'_v of this ESC block.
Readings of the ambiguous parts: docs/escnet.md.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from mmseg_escnet.models.layers.class_chunks import check_class_chunk_size, map_class_chunks
from mmseg_escnet.models.necks.catseg_aggregator import CATSegAggregatorLayer

__all__ = ['VisionLanguageFusion']

PoolSize = Union[int, Sequence[int], None]


class VisionLanguageFusion(nn.Module):
    """Refine a cost volume with a visual guidance (Swin part) and a text guidance (class part).

    Parameters: ``guidance_projection.0`` (Conv2d visual_dim -> appearance_guidance_dim, 3x3)
    and ``layer.swin_block.*`` / ``layer.attention.*`` (CAT-Seg aggregator-layer names).

    Args:
        hidden_dim (int): channels of the cost volume.
        visual_dim (int): channels of the visual feature F'_v (SAM dim 256).
        appearance_guidance_dim (int): channels of the projected visual guidance seen by the
            Swin queries/keys (0: no visual guidance, ``visual`` must then be None).
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
        self.hidden_dim = hidden_dim
        self.visual_dim = visual_dim
        self.appearance_guidance_dim = appearance_guidance_dim
        self.text_guidance_dim = text_guidance_dim
        self.input_resolution = tuple(input_resolution)
        self.guidance_projection = nn.Sequential(
            nn.Conv2d(visual_dim, appearance_guidance_dim, kernel_size=3, stride=1, padding=1),
            nn.ReLU(),
        ) if appearance_guidance_dim > 0 else None
        self.layer = CATSegAggregatorLayer(hidden_dim=hidden_dim,
                                           appearance_guidance_dim=appearance_guidance_dim,
                                           text_guidance_dim=text_guidance_dim,
                                           num_heads=num_heads,
                                           input_resolution=self.input_resolution,
                                           window_size=window_size, pooling_size=pooling_size,
                                           pad_len=pad_len)

    def _check_inputs(self, cost: torch.Tensor, visual: Optional[torch.Tensor],
                      text_guidance: Optional[torch.Tensor]) -> None:
        """Raise ValueError on inconsistent input shapes."""
        if cost.dim() != 5 or cost.shape[1] != self.hidden_dim:
            raise ValueError(f'cost must be (B, {self.hidden_dim}, T, h, w), got '
                             f'{tuple(cost.shape)}')
        b, _, t, h, w = cost.shape
        if (h, w) != self.input_resolution:
            raise ValueError(f'cost grid {(h, w)} differs from input_resolution '
                             f'{self.input_resolution}')
        if self.guidance_projection is not None:
            expected = (b, self.visual_dim, h, w)
            if visual is None or tuple(visual.shape) != expected:
                got = None if visual is None else tuple(visual.shape)
                raise ValueError(f'visual must be {expected}, got {got}')
        elif visual is not None:
            raise ValueError('visual must be None when appearance_guidance_dim is 0')
        if self.text_guidance_dim > 0:
            expected = (b, t, self.text_guidance_dim)
            if text_guidance is None or tuple(text_guidance.shape) != expected:
                got = None if text_guidance is None else tuple(text_guidance.shape)
                raise ValueError(f'text_guidance must be {expected}, got {got}')
        elif text_guidance is not None:
            raise ValueError('text_guidance must be None when text_guidance_dim is 0')

    def forward(self, cost: torch.Tensor, visual: Optional[torch.Tensor],
                text_guidance: Optional[torch.Tensor], pooling_size: PoolSize = None,
                class_chunk_size: Optional[int] = None, with_cp: bool = False) -> torch.Tensor:
        """Fuse.

        Args:
            cost (torch.Tensor): (B, hidden_dim, T, h, w) embedded cost volume.
            visual (torch.Tensor, optional): (B, visual_dim, h, w) SAM-refined visual
                feature F'_v, shared by all classes.
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
        check_class_chunk_size(class_chunk_size)
        self._check_inputs(cost, visual, text_guidance)
        guidance = None
        if self.guidance_projection is not None:
            guidance = self.guidance_projection(visual)  # (B, Ga, h, w)
        # (a) spatial aggregation, classes independent: (B, C, t, h, w) -> (B, C, t, h, w)
        swin = self.layer.swin_block
        cost = map_class_chunks(lambda chunk: swin(chunk, guidance), cost, class_chunk_size,
                                dim=2, with_cp=with_cp)
        # (b) class aggregation over all T classes: (B, C, T, h, w) -> (B, C, T, h, w)
        return self.layer.attention(cost, text_guidance, pooling_size=pooling_size)
