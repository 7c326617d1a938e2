"""LMSeg: CAT-Seg's cost aggregation on CLIP features fused with SAM's, prompted by descriptions.

Tang et al., "LMSeg: Unleashing the Power of Large-Scale Models for Open-Vocabulary Semantic
Segmentation", arXiv 2412.00364. No official code is public; every reading taken here is listed
with its reason in docs/lmseg.md.

Data flow (B images, T classes, C CLIP dim, S SAM dim, CLIP grid h x w, SAM grid g x g)::

    images (B, 3, H, W), CLIP-normalised
      -> CLIP backbone at the CLIP resolution: F_c (B, C, h, w), skip features [(B, D, h, w)]
      -> SAM image encoder at its input size:  F_s (B, S, g, g)
      -> fusion: F = w * F_c + (1 - w) * adapter(F_s)          (B, C, h, w)
      -> text: one embedding per class, the mean of its attribute descriptions (T, 1, C)
      -> CAT-Seg's aggregator (cosine cost of F against the text, Swin + linear class
         attention) and upsampling head -> logits (B, T, 4h, 4w)

Under CAT-Seg's sliding + global protocol SAM runs once per image, on the squashed 640 x 640
canvas, and every view reads its box of those features resampled to SAM's grid
(:func:`crop_canvas_features`): one SAM pass instead of five, a reading of ours (docs/lmseg.md);
``sam_per_view=True`` runs SAM on every view instead.

Everything else (vocabularies, inference modes, class filters, post-processing) is
:class:`OpenVocabEncoderDecoder`'s.
"""
from typing import Any, Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import ConfigType
from torch import Tensor

from .model_sizes import fill_sizes, model_sizes
from .open_vocab_encoder_decoder import OpenVocabEncoderDecoder


@MODELS.register_module()
class LMSegEncoderDecoder(OpenVocabEncoderDecoder):
    """:class:`OpenVocabEncoderDecoder` whose dense CLIP features are fused with SAM's.

    Args:
        sam_encoder (dict): Config of the SAM feature extractor (``SAMImageEncoder``).
        fusion (dict): Config of the fusion (``SAMCLIPFusion``); its ``sam_dim`` must equal the
            encoder's output channels.
        sam_per_view (bool): under the sliding + global protocol, run SAM on every view instead
            of once per image (module docstring).
        **kwargs: The arguments of :class:`OpenVocabEncoderDecoder` (backbone, neck,
            decode_head, vocabulary, test_vocabulary, clip_resolution, train_cfg, test_cfg,
            data_preprocessor, ...).
    """

    def __init__(self, *, sam_encoder: ConfigType, fusion: ConfigType,
                 sam_per_view: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sam_per_view = sam_per_view
        self._view_sam_feats: Optional[Tensor] = None  # set by _forward_views only
        self.sam_encoder = MODELS.build(sam_encoder)
        sizes = model_sizes(self.backbone, self.train_text.vocabulary)
        self.fusion = MODELS.build(fill_sizes(fusion, sizes, 'fusion'))
        sam_dim = self.fusion.adapter.in_channels
        if sam_dim != self.sam_encoder.out_channels:
            raise ValueError(f'fusion.sam_dim ({sam_dim}) must equal the SAM encoder\'s output '
                             f'channels ({self.sam_encoder.out_channels})')

    def image_features(self, inputs: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Fused dense features and CLIP's skip features.

        Args:
            inputs (Tensor): (B, 3, H, W) CLIP-normalised images.

        Returns:
            tuple: fused (B, C, h, w) features (the cost volume's and the appearance guidance's
            input) and CLIP's skip features for the decoder.
        """
        clip_dense, clip_features = super().image_features(inputs)  # (B, C, h, w), [...]
        sam_feats = self._view_sam_feats                             # the protocol's views
        if sam_feats is None:
            sam_feats = self.sam_encoder(inputs)                     # (B, S, g, g)
        return self.fusion(clip_dense, sam_feats), clip_features

    def sliding_forward(self) -> Tuple[Callable[..., Tensor], Optional[Callable[[Tensor], Any]]]:
        """The sliding + global protocol's forward: SAM once on the canvas, unless
        ``sam_per_view``."""
        if self.sam_per_view:
            return super().sliding_forward()
        return self._forward_views, self.sam_encoder

    def _forward_views(self, views: Tensor, boxes: Tensor, canvas_sam: Tensor) -> Tensor:
        """The network on views (V, 3, k, k) whose SAM features are their boxes (V, 4, fractions
        of the canvas) of the canvas's (1, S, G, G); returns the logits (V, T, h', w')."""
        self._view_sam_feats = crop_canvas_features(canvas_sam, boxes)
        try:
            return self._forward(views)
        finally:
            self._view_sam_feats = None


def crop_canvas_features(feats: Tensor, boxes: Tensor) -> Tensor:
    """Features of boxes of a canvas, resampled bilinearly to the feature grid.

    The feature map covers the canvas (its cell centres at ``(i + 0.5) / G`` of a side); each box
    is sampled at the centres of a G x G grid over it (``align_corners=False`` semantics), what
    the features of the box's pixels resized to the encoder's input would be if the encoder were
    equivariant to scale.

    Args:
        feats (Tensor): (1, S, G, G) features of the canvas.
        boxes (Tensor): (V, 4) boxes (x0, y0, x1, y1) as fractions of the canvas's sides.

    Returns:
        Tensor: (V, S, G, G) features of the boxes.
    """
    x0, y0, x1, y1 = boxes.unbind(1)                                        # (V,) each
    theta = torch.zeros(len(boxes), 2, 3, dtype=feats.dtype, device=feats.device)
    # output grid in [-1, 1] -> canvas coordinates in [-1, 1]: x_in = sx * x_out + tx
    theta[:, 0, 0] = x1 - x0
    theta[:, 0, 2] = x0 + x1 - 1
    theta[:, 1, 1] = y1 - y0
    theta[:, 1, 2] = y0 + y1 - 1
    grid = F.affine_grid(theta, [len(boxes), *feats.shape[1:]], align_corners=False)
    return F.grid_sample(feats.expand(len(boxes), -1, -1, -1), grid, mode='bilinear',
                         padding_mode='border', align_corners=False)
