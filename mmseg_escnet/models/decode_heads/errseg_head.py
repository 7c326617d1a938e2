"""ERR-Seg's up-decoder as an mmseg decode head, with the per-class BCE loss.

Chen et al., "Efficient Redundancy Reduction for Open-Vocabulary Semantic Segmentation"
(arXiv:2501.17642); official code https://github.com/lchen1019/ERR-Seg
(``err_seg/modeling/modules/decoder.py``: ``img_guidance_projection_dec``, ``up_decoder1..3``,
``head``; the loss of ``err_seg/err_seg_model.py``). The aggregated cost of the K kept classes
comes from :class:`~mmseg_escnet.models.necks.errseg_neck.ERRSegNeck`::

    cost (B, A, K, H, W); stage outputs os16, os8, os4, clamped to [-16, 16], detached
      -> 3 x 3 conv + ReLU6 each (img_guidance_projection_dec)     (B, g_i, 2**i H, 2**i W)
      -> per class: up_decoder1 (1 x 1 conv), up_decoder2, up_decoder3 (2 x 2 transposed convs),
         each concatenating its guidance and fusing with a DoubleConv    (B*K, d_2, 4H, 4W)
      -> head (1 x 1 conv)                                               (B, K, 4H, 4W)
      -> scattered into (B, T, 4H, 4W), ``PRUNED_LOGIT`` (-100, as official) elsewhere

Parameter names equal the official ones below ``sem_seg_head.decoder.``, except the fusion convs
(official ``textual_fusion.{0,1,3,4}``, ours ``textual_fusion.double_conv.{0,1,3,4}``).
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from ..layers.class_chunks import class_bytes, fold_classes, map_class_chunks
from ..layers.guidance_projection import clamp_guidance, map_guidance_projections
from ..layers.upsampling import UpDecoder
from ..structures import DecodeInputs
from .per_class_bce_head import PerClassBCEHead

__all__ = ['ERRSegHead']


@MODELS.register_module()
class ERRSegHead(PerClassBCEHead):
    """ERR-Seg's per-class up-decoder, guided by the CLIP stage outputs.

    Args:
        hidden_dim (int): channels A of the aggregated cost (the neck's ``aggregator_dim``).
        decoder_dims (Sequence[int]): output channels of the stages (multiples of
            ``channels_per_group``); the first stage keeps the resolution, every other doubles it.
        decoder_guidance_dims (Sequence[int]): channels of the stage outputs the stages take,
            deepest first (os16, os8, os4; derived from the backbone).
        decoder_guidance_proj_dims (Sequence[int]): their projected channels.
        channels_per_group (int): GroupNorm channels per group (ERR-Seg: 8).
        class_chunk_size (int, optional): classes decoded at once (None: all, or the CPU
            inference budget).
        with_cp (bool): checkpoint each chunk of the decoder in training.
        num_classes (int): nominal number of classes (the vocabulary sets T).
        ignore_index (int): label of ignored pixels (all-zero targets).
        align_corners (bool): of the resize to the label size.
        init_cfg (dict, optional): mmengine init config.
        **kwargs: other ``BaseDecodeHead`` arguments (``loss_decode`` is refused).
    """

    derived_sizes: Dict[str, str] = {'decoder_guidance_dims': 'skip_dims'}

    def __init__(self, *, hidden_dim: int = 128, decoder_dims: Sequence[int] = (64, 32, 16),
                 decoder_guidance_dims: Sequence[int] = (512, 256, 128),
                 decoder_guidance_proj_dims: Sequence[int] = (32, 16, 8),
                 channels_per_group: int = 8, class_chunk_size: Optional[int] = None,
                 with_cp: bool = False, num_classes: int = 171, ignore_index: int = 255,
                 align_corners: bool = False, init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        lengths = {len(decoder_dims), len(decoder_guidance_dims), len(decoder_guidance_proj_dims)}
        if len(lengths) != 1 or not decoder_dims:
            raise ValueError(f'decoder_dims {tuple(decoder_dims)}, decoder_guidance_dims '
                             f'{tuple(decoder_guidance_dims)} and decoder_guidance_proj_dims '
                             f'{tuple(decoder_guidance_proj_dims)} need the same non-zero length')
        super().__init__(hidden_dim=hidden_dim, decoder_dims=decoder_dims,
                         class_chunk_size=class_chunk_size, num_classes=num_classes,
                         ignore_index=ignore_index, align_corners=align_corners,
                         init_cfg=init_cfg, **kwargs)
        self.with_cp = with_cp
        self.img_guidance_projection_dec = map_guidance_projections(
            decoder_guidance_dims, decoder_guidance_proj_dims, activation=nn.ReLU6)
        in_dims = [hidden_dim, *decoder_dims[:-1]]
        for i, (cin, cout, guid) in enumerate(zip(in_dims, decoder_dims,
                                                  decoder_guidance_proj_dims)):
            self.add_module(f'up_decoder{i + 1}',
                            UpDecoder(in_channels=cin, out_channels=cout, guidance_channels=guid,
                                      scale=1 if i == 0 else 2,
                                      channels_per_group=channels_per_group))
        self.head = nn.Conv2d(decoder_dims[-1], 1, kernel_size=1)
        # the widest per-class activation relative to one class of the cost: stage i works at
        # 4**i times its resolution
        self._decode_expansion = max((cout + guid) * 4**i / hidden_dim for i, (cout, guid) in
                                     enumerate(zip(decoder_dims, decoder_guidance_proj_dims)))

    def project_guidance(self, clip_features: Sequence[torch.Tensor], cost: torch.Tensor
                         ) -> List[torch.Tensor]:
        """The stages' guidance from the stage outputs.

        Args:
            clip_features (Sequence[Tensor]): os4 (B, c0, 4H, 4W), os8 (B, c1, 2H, 2W), os16
                (B, c2, H, W), shallower first (more are ignored).
            cost (Tensor): (B, A, K, H, W) the cost they guide (for the shape checks).

        Returns:
            list[Tensor]: per stage i (B, g_i, 2**i H, 2**i W), deepest first.

        Raises:
            ValueError: naming a stage output of the wrong shape.
        """
        feats = list(clip_features)[:self.num_stages][::-1]  # shallower first -> deepest first
        if len(feats) != self.num_stages:
            raise ValueError(f'ERRSegHead needs {self.num_stages} stage outputs, got {len(feats)}')
        for i, (f, proj) in enumerate(zip(feats, self.img_guidance_projection_dec)):
            shape = (cost.shape[0], proj[0].in_channels, *(s * 2**i for s in cost.shape[-2:]))
            if tuple(f.shape) != shape:
                raise ValueError(f'the guidance of stage {i + 1} must be {shape} for the cost '
                                 f'{tuple(cost.shape)}, got {tuple(f.shape)}')
        return [proj(clamp_guidance(f.detach()))
                for proj, f in zip(self.img_guidance_projection_dec, feats)]

    def forward(self, inputs: DecodeInputs) -> torch.Tensor:
        """Decode the kept classes.

        Args:
            inputs (DecodeInputs): the aggregated cost (B, A, K, H, W), the kept classes
                (B, K), the stage outputs (shallower first) and T.

        Returns:
            Tensor: (B, T, 4H, 4W) logits; ``PRUNED_LOGIT`` for the classes not kept.
        """
        cost = inputs.cost
        if cost.dim() != 5 or cost.shape[1] != self.hidden_dim:
            raise ValueError(f'cost must be (B, {self.hidden_dim}, K, H, W), got '
                             f'{tuple(cost.shape)}')
        guidance = self.project_guidance(inputs.clip_features, cost)

        def decode(chunk: torch.Tensor) -> torch.Tensor:  # (B, A, k, H, W) -> (B, k, 4H, 4W)
            x = fold_classes(chunk)  # (B*k, A, H, W)
            for i, g in enumerate(guidance):
                x = getattr(self, f'up_decoder{i + 1}')(x, g)
            logits = self.head(x)  # (B*k, 1, 4H, 4W)
            return logits.view(chunk.shape[0], -1, *logits.shape[-2:])

        logits = map_class_chunks(decode, cost, self.class_chunk_size, dim=2, out_dim=1,
                                  with_cp=self.with_cp,
                                  item_bytes=class_bytes(cost, self._decode_expansion))
        return self.scatter_classes(logits, inputs.class_index, inputs.num_classes)
