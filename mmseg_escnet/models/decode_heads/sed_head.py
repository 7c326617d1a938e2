"""SED's gradual fusion decoder with category early rejection, as an mmseg decode head.

Xie et al., "SED: A Simple Encoder-Decoder for Open-Vocabulary Semantic Segmentation",
CVPR 2024 (arXiv:2311.15537); official code https://github.com/xb534/SED
(``sed/modeling/transformer/model.py``: ``Aggregator`` without ``conv1``, ``conv_decoder``,
``fast_conv_decoder``; the loss of ``sed/sed_model.py``).  The embedded cost and the raw
correlation come from :class:`mmseg_escnet.models.necks.sed_cost.SEDCostNeck`.

Per stage i (deepest encoder skip first; SED-B: res4, res3, res2)::

    aux_i  = head_i(x.detach())                                   (B, T, h_i, w_i)
    [test, 'sed_cer': keep the union of every pixel's top-k classes of aux_i, drop the rest]
    corr_i = ReLU(ConvT_2x2(corr_{i-1}))       corr_0 = the raw P-channel correlation
    x      = SEDUp(x, proj_i(skip_i), corr_i)  (ConvNeXt block, class attention, x2 fusion)
    logits = head(x)                                              (B, T, 8h, 8w)

Category early rejection differs from the official ``fast_conv_decoder`` in one point: the
union of the top-k classes is taken per image, not over the batch (the official code indexes
the B*T class maps with a length-T mask and fails for B > 1), so an image's result does not
depend on the other images of its batch. Rejected classes get ``PRUNED_LOGIT`` (official:
probability 0).
Parameter names equal the official ones below ``sem_seg_head.predictor.transformer.`` except
in the ConvNeXt blocks (see :mod:`mmseg_escnet.checkpoints.sed_official`).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from torch import Tensor

from ..layers.class_chunks import class_bytes, map_class_chunks, on_class_maps
from ..layers.cost_volume import pixel_top_k_union, select_pooling
from ..layers.guidance_projection import map_guidance_projections
from ..layers.linear_class_attention import PoolSize
from ..layers.sed_blocks import SEDUp
from ..structures import PRUNED_LOGIT, ClassFilter, DecodeInputs
from .per_class_bce_head import PerClassBCEHead

__all__ = ['SEDHead']

#: Training output: the logits and the auxiliary logits of the stages.
SEDOutput = Union[Tensor, Tuple[Tensor, List[Tensor]]]


@MODELS.register_module()
class SEDHead(PerClassBCEHead):
    """SED's decoder: S gradual-fusion stages with auxiliary heads and category early rejection.

    Args:
        hidden_dim (int): channels of the embedded cost (the neck's ``hidden_dim``).
        prompt_channel (int): templates P, the channels of the raw correlation.
        decoder_dims (tuple[int, ...]): output channels of the S stages, multiples of 16
            (GroupNorm with 16 channels per group). The logits have 2**S times the cost grid.
        decoder_guidance_dims (tuple[int, ...]): channels of the encoder skips, deepest first
            (SED-B: res4, res3, res2 = 512, 256, 128; SED-L: 768, 384, 192).
        decoder_guidance_proj_dims (tuple[int, ...]): projected encoder-skip channels per stage.
        decoder_corr_guidance_dims (tuple[int, ...], optional): output channels of the chained
            transposed convolutions of the cost-map skip (P -> d_0 -> d_1 -> ...); None: equal to
            ``decoder_guidance_proj_dims``, the only widths the official code supports (its
            ``Aggregator`` argument of this name holds their input widths, (P, d_0, d_1)).
        num_heads (int): class-attention heads.
        kernel_sizes (tuple[int, ...]): ConvNeXt depthwise kernel per stage.
        pooling_size (tuple[int, int]): class-attention pooling in training mode.
        test_pooling_size (tuple[int, int], optional): in eval mode (None: the training one).
        detach_guidance (bool): stop the gradient into the encoder skips (SED does).
        class_chunk_size (int, optional): run the per-class convolutions (ConvNeXt blocks,
            fusion, cost-map skips, heads) on chunks of this many classes (same logits, lower
            peak memory); the class attention sees all classes. None: all at once.
        num_classes (int): nominal number of classes (the real T comes with the input).
        ignore_index (int): label value whose pixels get all-zero targets in the loss.
        align_corners (bool): used when resizing logits to the label size.
        init_cfg (dict, optional): mmengine initialisation config.
        **kwargs: other :class:`BaseDecodeHead` arguments (``loss_decode`` is rejected: the loss
            is SED's BCE, see :meth:`loss_by_feat`).
    """

    #: The test-time class filters this head applies itself (the segmentor checks it).
    class_filters = ('sed_cer', )
    #: Arguments the segmentor fills from the model (see ``derived_sizes`` of the necks).
    derived_sizes: Dict[str, str] = {'prompt_channel': 'num_prompts',
                                     'decoder_guidance_dims': 'skip_dims'}

    def __init__(self, *, hidden_dim: int = 128, prompt_channel: int = 80,
                 decoder_dims: Sequence[int] = (64, 32, 16),
                 decoder_guidance_dims: Sequence[int] = (512, 256, 128),
                 decoder_guidance_proj_dims: Sequence[int] = (32, 16, 8),
                 decoder_corr_guidance_dims: Optional[Sequence[int]] = None,
                 num_heads: int = 4, kernel_sizes: Sequence[int] = (9, 9, 9),
                 pooling_size: PoolSize = (2, 2), test_pooling_size: PoolSize = (1, 1),
                 detach_guidance: bool = True, class_chunk_size: Optional[int] = None,
                 num_classes: int = 171, ignore_index: int = 255, align_corners: bool = False,
                 init_cfg: Optional[dict] = None, **kwargs) -> None:
        if decoder_corr_guidance_dims is None:
            decoder_corr_guidance_dims = decoder_guidance_proj_dims
        lengths = dict(decoder_dims=decoder_dims, decoder_guidance_dims=decoder_guidance_dims,
                       decoder_guidance_proj_dims=decoder_guidance_proj_dims,
                       decoder_corr_guidance_dims=decoder_corr_guidance_dims,
                       kernel_sizes=kernel_sizes)
        num_stages = len(decoder_dims)
        if num_stages == 0 or any(len(v) != num_stages for v in lengths.values()):
            raise ValueError('decoder_dims, decoder_guidance_dims, decoder_guidance_proj_dims, '
                             'decoder_corr_guidance_dims and kernel_sizes must have the same '
                             f'non-zero length, got {lengths}')
        if any(d < 16 or d % 16 != 0 for d in decoder_dims):
            raise ValueError(f'decoder_dims must be multiples of 16 (GroupNorm(C // 16, C) in '
                             f'the DoubleConv), got {tuple(decoder_dims)}')
        in_dims = [hidden_dim, *decoder_dims[:-1]]
        for cin, proj in zip(in_dims, decoder_guidance_proj_dims):
            if not 0 < proj < cin:
                raise ValueError(f'decoder_guidance_proj_dims must satisfy 0 < proj < the '
                                 f'stage input channels {in_dims}, got '
                                 f'{tuple(decoder_guidance_proj_dims)}')
        if any(d < 1 for d in decoder_corr_guidance_dims):
            raise ValueError(f'decoder_corr_guidance_dims must be positive, got '
                             f'{tuple(decoder_corr_guidance_dims)}')
        if any(c % num_heads for c in in_dims):
            raise ValueError(f'the stage input channels {in_dims} must be divisible by '
                             f'num_heads ({num_heads})')
        for name, size in (('pooling_size', pooling_size),
                           ('test_pooling_size', test_pooling_size)):
            pair = (size, size) if isinstance(size, int) else size
            if size is not None and (len(pair) != 2 or not all(
                    isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair)):
                raise ValueError(f'{name} must be None, a positive int or a pair of them, got '
                                 f'{size!r}')
        super().__init__(hidden_dim=hidden_dim, decoder_dims=decoder_dims,
                         class_chunk_size=class_chunk_size, num_classes=num_classes,
                         ignore_index=ignore_index, align_corners=align_corners,
                         init_cfg=init_cfg, **kwargs)
        self.prompt_channel = prompt_channel
        self.pooling_size = pooling_size
        self.test_pooling_size = test_pooling_size
        self.detach_guidance = detach_guidance

        self.decoder_guidance_projection = map_guidance_projections(decoder_guidance_dims,
                                                                    decoder_guidance_proj_dims)
        corr_in = [prompt_channel, *decoder_corr_guidance_dims[:-1]]
        self.decoder_corr_guidance_projection = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2), nn.ReLU())
            for cin, cout in zip(corr_in, decoder_corr_guidance_dims)
        ])
        for i, (cin, cout, proj, corr_dim, kernel) in enumerate(zip(
                in_dims, decoder_dims, decoder_guidance_proj_dims, decoder_corr_guidance_dims,
                kernel_sizes)):
            self.add_module(f'decoder{i + 1}',
                            SEDUp(in_channels=cin, out_channels=cout, guidance_channels=proj,
                                  corr_guidance_channels=corr_dim, num_heads=num_heads,
                                  kernel_size=kernel, pooling_size=pooling_size))
            self.add_module(f'head{i}', nn.Conv2d(cin, 1, kernel_size=3, stride=1, padding=1))
        self.head = nn.Conv2d(decoder_dims[-1], 1, kernel_size=3, stride=1, padding=1)

    # -- decoding --------------------------------------------------------------------------------
    def project_guidance(self, clip_features: Sequence[Tensor]) -> List[Tensor]:
        """Project the encoder skips (detached if ``detach_guidance``).

        Args:
            clip_features (list[Tensor]): S encoder features, shallower first (SED-B: res2
                (B, 128, 8h, 8w), res3 (B, 256, 4h, 4w), res4 (B, 512, 2h, 2w)).

        Returns:
            list[Tensor]: per stage i, deepest first, (B, G_i, 2**(i+1) h, 2**(i+1) w).
        """
        feats = list(clip_features)[::-1]  # shallower first -> deepest first
        if self.detach_guidance:
            feats = [f.detach() for f in feats]
        return [proj(f) for proj, f in zip(self.decoder_guidance_projection, feats)]

    def decode(self, cost: Tensor, corr: Tensor, guidance: Sequence[Tensor], *,
               with_aux: bool = True) -> Tuple[Tensor, List[Tensor]]:
        """Decode all classes (the official ``conv_decoder``).

        Args:
            cost (Tensor): (B, hidden_dim, T, h, w) embedded cost.
            corr (Tensor): (B, P, T, h, w) raw correlation.
            guidance (list[Tensor]): from :meth:`project_guidance`.
            with_aux (bool): also compute the auxiliary logits (on detached features).

        Returns:
            tuple: logits (B, T, 2**S h, 2**S w) and, if ``with_aux``, the auxiliary logits
            [(B, T, h, w), (B, T, 2h, 2w), ...] of the S stage inputs (else []).
        """
        x, pooling = cost, self._pooling_size()
        aux = []
        for i in range(self.num_stages):
            if with_aux:
                aux.append(self._aux_logits(i, x))
            x, corr = self._stage(i, x, corr, guidance[i], pooling)
        return self._logits(x), aux

    def decode_cer(self, cost: Tensor, corr: Tensor, guidance: Sequence[Tensor], *, k: int
                   ) -> Tuple[Tensor, List[List[Tensor]]]:
        """Decode with category early rejection (the official ``fast_conv_decoder``), per image.

        Before every stage, each pixel's top-``k`` classes by the stage's auxiliary logits are
        collected; the classes in no pixel's top-k are dropped for the rest of the decoder.

        Args:
            cost (Tensor): (B, hidden_dim, T, h, w) embedded cost.
            corr (Tensor): (B, P, T, h, w) raw correlation.
            guidance (list[Tensor]): from :meth:`project_guidance`.
            k (int): classes kept per pixel (SED: 8).

        Returns:
            tuple: logits (B, T, 2**S h, 2**S w), ``PRUNED_LOGIT`` for the rejected classes, and
            per image the S ascending (T_i,) indices (into the T classes of ``cost``) of the
            classes that enter each stage.
        """
        pooling = self._pooling_size()
        logits, kept = [], []
        for b in range(cost.shape[0]):
            x, x_corr = cost[b:b + 1], corr[b:b + 1]  # (1, C, T, h, w), (1, P, T, h, w)
            index = torch.arange(x.shape[2], device=x.device)
            stages = []
            for i in range(self.num_stages):
                keep = pixel_top_k_union(self._aux_logits(i, x), k)  # (t',)
                x, x_corr, index = x[:, :, keep], x_corr[:, :, keep], index[keep]
                stages.append(index)
                x, x_corr = self._stage(i, x, x_corr, guidance[i][b:b + 1], pooling)
            live = self._logits(x)  # (1, t', H, W)
            out = live.new_full((1, cost.shape[2], *live.shape[-2:]), PRUNED_LOGIT)
            out[:, index] = live
            logits.append(out)
            kept.append(stages)
        return torch.cat(logits), kept

    def _pooling_size(self) -> PoolSize:
        """The class-attention pooling of the current mode."""
        return select_pooling(self.training, self.pooling_size, self.test_pooling_size)

    def _stage(self, i: int, x: Tensor, corr: Tensor, guidance: Tensor, pooling: PoolSize
               ) -> Tuple[Tensor, Tensor]:
        """Stage i: the next cost-map skip, then ``decoder{i+1}``.

        Args:
            x (Tensor): (B, C_i, T, h_i, w_i).
            corr (Tensor): (B, Gc_{i-1}, T, h_i, w_i) previous cost-map skip (i = 0: the raw
                correlation).
            guidance (Tensor): (B, G_i, 2h_i, 2w_i) projected encoder skip.
            pooling (tuple[int, int] | int): class-attention pooling.

        Returns:
            tuple: x (B, C_{i+1}, T, 2h_i, 2w_i) and the cost-map skip (B, Gc_i, T, 2h_i, 2w_i).
        """
        corr = self._per_class(self.decoder_corr_guidance_projection[i], corr)
        x = getattr(self, f'decoder{i + 1}')(x, guidance, corr, pooling_size=pooling,
                                             class_chunk_size=self.class_chunk_size)
        return x, corr

    def _aux_logits(self, i: int, x: Tensor) -> Tensor:
        """``head{i}`` on the detached stage input (B, C_i, T, h, w): (B, T, h, w)."""
        return self._per_class(getattr(self, f'head{i}'), x.detach())[:, 0]

    def _logits(self, x: Tensor) -> Tensor:
        """The final ``head`` on (B, C, T, H, W): (B, T, H, W)."""
        return self._per_class(self.head, x)[:, 0]

    def _per_class(self, module: nn.Module, x: Tensor) -> Tensor:
        """A 2-D ``module`` on every class map of (B, C, T, h, w), in chunks of
        ``class_chunk_size`` classes: (B, C', T, h', w')."""
        # per class, the projections and heads hold about twice their input at most
        return map_class_chunks(lambda chunk: on_class_maps(module, chunk), x,
                                self.class_chunk_size, item_bytes=class_bytes(x, 2))

    # -- the mmseg interface ---------------------------------------------------------------------
    def forward(self, inputs: DecodeInputs) -> SEDOutput:
        """Decode the neck output.

        Args:
            inputs (DecodeInputs): the embedded cost (B, hidden_dim, T', h, w), the raw
                correlation (B, P, T', h, w), the kept classes, the S encoder skips (shallower
                first), T, and the test-time class filter (``dict(type='sed_cer', k=K)`` turns on
                category early rejection in eval mode).

        Returns:
            Tensor | tuple: eval mode: logits (B, T, 2**S h, 2**S w); training mode: the logits
            and the auxiliary logits [(B, T, h, w), (B, T, 2h, 2w), (B, T, 4h, 4w)]. Classes the
            neck dropped or CER rejected get ``PRUNED_LOGIT``.
        """
        self._check_inputs(inputs)
        guidance = self.project_guidance(inputs.clip_features)
        cer_k = None if self.training else self._cer_k(inputs.class_filter)
        if cer_k is not None:
            logits, aux = self.decode_cer(inputs.cost, inputs.corr, guidance, k=cer_k)[0], []
        else:
            logits, aux = self.decode(inputs.cost, inputs.corr, guidance,
                                      with_aux=self.training)
        logits, *aux = [self.scatter_classes(x, inputs.class_index, inputs.num_classes)
                        for x in (logits, *aux)]
        return (logits, aux) if self.training else logits

    @staticmethod
    def _cer_k(class_filter: Optional[ClassFilter]) -> Optional[int]:
        """k of a ``'sed_cer'`` class filter (None for none).

        Raises:
            ValueError: for a filter of another stage (the segmentor gives the head only its own).
        """
        if class_filter is None:
            return None
        if class_filter.type not in SEDHead.class_filters:
            raise ValueError(f'SEDHead applies class filters {SEDHead.class_filters}, got '
                             f'{class_filter.type!r} (a neck-stage filter)')
        return class_filter.k

    def _check_inputs(self, inputs: DecodeInputs) -> None:
        """Raise ValueError if the inputs do not fit this head."""
        if inputs.corr is None:
            raise ValueError('SEDHead needs the raw correlation (AggregatedCost.corr), e.g. '
                             'from SEDCostNeck')
        if inputs.cost.dim() != 5 or inputs.cost.shape[1] != self.hidden_dim:
            raise ValueError(f'cost must be (B, {self.hidden_dim}, T, h, w), got '
                             f'{tuple(inputs.cost.shape)}')
        b, _, t, h, w = inputs.cost.shape
        if inputs.corr.shape != (b, self.prompt_channel, t, h, w):
            raise ValueError(f'corr must be (B, P={self.prompt_channel}, T, h, w) = '
                             f'{(b, self.prompt_channel, t, h, w)}, got '
                             f'{tuple(inputs.corr.shape)}')
        feats = list(inputs.clip_features)
        if len(feats) != self.num_stages:
            raise ValueError(f'SEDHead needs {self.num_stages} encoder skips (shallower first), '
                             f'got {len(feats)}')
        for i, f in enumerate(feats[::-1]):
            size = (h * 2**(i + 1), w * 2**(i + 1))
            if f.shape[0] != b or tuple(f.shape[-2:]) != size:
                raise ValueError(f'encoder skip of stage {i + 1} must be (B={b}, C, *{size}), '
                                 f'got {tuple(f.shape)}')

    def loss_by_feat(self, seg_logits: SEDOutput,
                     batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """SED's loss: per-class binary cross-entropy of the logits and of every aux output.

        Every output is resized bilinearly to the label size; the target is one-hot over the T
        classes, ignored pixels having all-zero targets (they count as negatives, as in the
        official code); each BCE is averaged over all B*T*H*W elements, weight 1.

        Args:
            seg_logits (Tensor | tuple): (B, T, h, w) logits, or the training output of
                :meth:`forward` (logits and the auxiliary logits).
            batch_data_samples (list[SegDataSample]): samples with ``gt_sem_seg`` (1, H, W).

        Returns:
            dict: ``loss_bce`` and ``loss_aux0`` ... ``loss_aux{S-1}`` scalars.
        """
        logits, aux = (seg_logits, []) if isinstance(seg_logits, Tensor) else seg_logits
        target = self.one_hot_targets(batch_data_samples, logits.shape[1], logits.dtype)
        losses = dict(loss_bce=self.bce(logits, target))
        for i, aux_logits in enumerate(aux):
            losses[f'loss_aux{i}'] = self.bce(aux_logits, target)
        return losses
