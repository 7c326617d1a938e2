"""CAT-Seg upsampling decoder as an mmseg decode head, with CAT-Seg's per-class BCE loss.

Cho et al., "CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation",
CVPR 2024 (arXiv:2303.11797); official code https://github.com/cvlab-kaist/CAT-Seg
(MIT licence).  Re-implements the decoder part of the official ``Aggregator``
(``decoder_guidance_projection``, ``decoder1``, ``decoder2``, ``head``) plus the model-level
``upsample1``/``upsample2`` transposed convolutions that turn intermediate CLIP block
outputs into the decoder's skip guidance.  The cost volume comes from
:class:`mmseg_escnet.models.necks.catseg_aggregator.CATSegAggregator`.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from ..layers.class_chunks import class_bytes, fold_classes, map_class_chunks
from ..layers.guidance_projection import map_guidance_projections
from ..layers.upsampling import Up
from ..structures import DecodeInputs
from .per_class_bce_head import PerClassBCEHead

__all__ = ['CATSegHead']


@MODELS.register_module()
class CATSegHead(PerClassBCEHead):
    """Per-class U-Net decoder of an aggregated cost volume, guided by CLIP skip features.

    The cost volume is in the layout (B, C, T, h, w) of :mod:`mmseg_escnet.models.structures`.

    Args:
        clip_width (int): channels of the intermediate CLIP block outputs (768 for ViT-B,
            1024 for ViT-L).
        upsample_dims (tuple[int, ...]): output channels of ``upsample1``, ``upsample2``.
        upsample_scales (tuple[int, ...]): kernel = stride of ``upsample1``, ``upsample2``;
            stage i's guidance must have 2**(i+1) times the cost-volume resolution.
        decoder_guidance_proj_dims (tuple[int, ...]): projected skip-guidance channels per
            decoder stage.
        decoder_dims (tuple[int, ...]): output channels of ``decoder1``, ``decoder2``.
        hidden_dim (int): channels of the cost volume.
        upsample_mode (str): x2 upsampling of the decoder stages: ``'transposed'`` (CAT-Seg,
            ConvTranspose2d) or ``'bilinear'`` (ESC-Net); see
            :class:`~mmseg_escnet.models.layers.upsampling.Up`.
        class_chunk_size (int, optional): decode the B*T per-class maps in chunks of this
            many classes (same logits, lower peak memory); None decodes all at once.
        with_cp (bool): checkpoint each chunk of the decoder in training (activations are
            recomputed in the backward pass: training memory of one chunk).
        num_classes (int): nominal number of classes (the real T comes with the input).
        ignore_index (int): label value ignored by the loss (all-zero target rows).
        align_corners (bool): used when resizing logits to label / image size.
        init_cfg (dict, optional): mmengine initialisation config.
        **kwargs: other :class:`BaseDecodeHead` arguments (``loss_decode`` is rejected: the
            loss is CAT-Seg's BCE, see :meth:`loss_by_feat`).
    """

    #: Arguments the segmentor fills from the model: the width of the ViT's skip features.
    derived_sizes: Dict[str, str] = {'clip_width': 'skip_width'}

    def __init__(self, *, clip_width: int = 768, upsample_dims: Sequence[int] = (256, 128),
                 upsample_scales: Sequence[int] = (2, 4),
                 decoder_guidance_proj_dims: Sequence[int] = (32, 16),
                 decoder_dims: Sequence[int] = (64, 32), hidden_dim: int = 128,
                 upsample_mode: str = 'transposed', class_chunk_size: Optional[int] = None,
                 with_cp: bool = False,
                 num_classes: int = 171, ignore_index: int = 255, align_corners: bool = False,
                 init_cfg: Optional[dict] = None, **kwargs) -> None:
        num_stages = len(decoder_dims)
        if not (len(upsample_dims) == len(upsample_scales) == len(decoder_guidance_proj_dims)
                == num_stages) or num_stages == 0:
            raise ValueError('upsample_dims, upsample_scales, decoder_guidance_proj_dims and '
                             'decoder_dims must have the same non-zero length')
        super().__init__(hidden_dim=hidden_dim, decoder_dims=decoder_dims,
                         class_chunk_size=class_chunk_size, num_classes=num_classes,
                         ignore_index=ignore_index, align_corners=align_corners,
                         init_cfg=init_cfg, **kwargs)
        self.upsample_mode = upsample_mode
        self.with_cp = with_cp

        for i, (dim, scale) in enumerate(zip(upsample_dims, upsample_scales)):
            self.add_module(f'upsample{i + 1}',
                            nn.ConvTranspose2d(clip_width, dim, kernel_size=scale, stride=scale))
        self.decoder_guidance_projection = map_guidance_projections(upsample_dims,
                                                                    decoder_guidance_proj_dims)
        in_dims = [hidden_dim, *decoder_dims[:-1]]
        for i, (cin, cout, guid) in enumerate(zip(in_dims, decoder_dims,
                                                  decoder_guidance_proj_dims)):
            self.add_module(f'decoder{i + 1}',
                            Up(in_channels=cin, out_channels=cout, guidance_channels=guid,
                               upsample_mode=upsample_mode))
        self.head = nn.Conv2d(decoder_dims[-1], 1, kernel_size=3, stride=1, padding=1)
        # the widest per-class activation, relative to one class of the cost volume: stage i
        # works at 2**(i+1) times its resolution
        self._decode_expansion = max(max(cin + guid, cout) * 4**(i + 1) / hidden_dim
                                     for i, (cin, cout, guid) in enumerate(
                                         zip(in_dims, decoder_dims, decoder_guidance_proj_dims)))

    def upsample_clip_features(self, clip_features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Turn raw intermediate CLIP features into decoder guidance.

        Args:
            clip_features (list[torch.Tensor]): per stage (B, clip_width, h, w).

        Returns:
            list[torch.Tensor]: per stage i (B, upsample_dims[i], s_i*h, s_i*w).
        """
        assert len(clip_features) == self.num_stages, len(clip_features)
        return [getattr(self, f'upsample{i + 1}')(f) for i, f in enumerate(clip_features)]

    def decode(self, cost: torch.Tensor, decoder_guidance: Sequence[torch.Tensor],
               class_index: Optional[torch.Tensor] = None,
               num_classes: Optional[int] = None) -> torch.Tensor:
        """Decode a cost volume given already-upsampled skip guidance.

        Args:
            cost (torch.Tensor): (B, hidden_dim, T', h, w) aggregated cost volume.
            decoder_guidance (list[torch.Tensor]): per stage i
                (B, upsample_dims[i], 2**(i+1)*h, 2**(i+1)*w).
            class_index (torch.Tensor, optional): (B, T') indices of the classes kept by the
                neck; the other classes get logit -100.
            num_classes (int, optional): total T; required with ``class_index``.

        Returns:
            torch.Tensor: (B, T, 2**S*h, 2**S*w) logits (S stages, i.e. 4h x 4w).  The
            classes are decoded in chunks of ``self.class_chunk_size``.
        """
        assert cost.dim() == 5 and cost.shape[1] == self.hidden_dim, cost.shape
        assert len(decoder_guidance) == self.num_stages, len(decoder_guidance)
        # Project the per-image skip features once, shared by all class chunks.
        projected = [proj(g) for proj, g in zip(self.decoder_guidance_projection,
                                                decoder_guidance)]
        # (B, C, T, h, w) -> chunks (B, C, t, h, w) -> (B, t, H, W) -> (B, T, H, W)
        logits = map_class_chunks(lambda chunk: self._decode_classes(chunk, projected), cost,
                                  self.class_chunk_size, dim=2, out_dim=1, with_cp=self.with_cp,
                                  item_bytes=class_bytes(cost, self._decode_expansion))

        assert class_index is None or num_classes is not None, 'class_index needs num_classes'
        return self.scatter_classes(logits, class_index, num_classes)

    def _decode_classes(self, cost: torch.Tensor,
                        projected_guidance: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the decoder stages and the 1-channel head on the classes of ``cost``.

        Args:
            cost (torch.Tensor): (B, C, t, h, w), any number t of classes.
            projected_guidance (list[torch.Tensor]): per stage i (B, G_i, 2**(i+1)*h,
                2**(i+1)*w), already through ``decoder_guidance_projection``.

        Returns:
            torch.Tensor: (B, t, H, W) logits.
        """
        x = fold_classes(cost)  # (B, C, t, h, w) -> (B*t, C, h, w)
        for i, guidance in enumerate(projected_guidance):
            x = getattr(self, f'decoder{i + 1}')(x, guidance)  # (B*t, C_i, H_i, W_i)
        logits = self.head(x)  # (B*t, 1, H, W)
        return logits.view(cost.shape[0], -1, *logits.shape[-2:])  # -> (B, t, H, W)

    def forward(self, inputs: DecodeInputs) -> torch.Tensor:
        """Decode the neck output.

        Args:
            inputs (DecodeInputs): the aggregated cost (B, hidden_dim, T', h, w), the kept
                classes, the CLIP block outputs (B, clip_width, h, w) (shallower first) and T.

        Returns:
            torch.Tensor: (B, T, 4h, 4w) logits; classes pruned by the neck get -100.
        """
        guidance = self.upsample_clip_features(inputs.clip_features)
        return self.decode(inputs.cost, guidance, class_index=inputs.class_index,
                           num_classes=inputs.num_classes)
