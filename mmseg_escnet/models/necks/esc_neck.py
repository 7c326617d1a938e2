"""ESC-Net's neck: N consecutive ESC blocks = PPG -> SAM block -> VLF (paper §3.1, Fig. 2).

Lee et al., "Effective SAM Combination for Open-Vocabulary Semantic Segmentation" (ESC-Net).
The paper leaves several details open; every reading taken here is a constructor argument and is listed
with its reason in ``docs/escnet.md``.

Data flow (B images, T classes (T' <= pad_len after pruning), P templates, C CLIP dim, S = 256 SAM dim)::

    img_feats (B, C, h, w), text_feats (B, T, P, C)
      -> cosine correlation C_v&l (B, P, T, h, w), top-pad_len class pruning (CAT-Seg)
      -> 1x1 conv embed per class -> cost (B, hidden, T', h, w)
      F_v = visual_proj(img_feats) (B, S, h, w)
      for k in 0..N-1:
          score (B*T', h, w)   = C_v&l averaged over P              if k == 0 or prompt_source='initial'
                               = class_score(cost)                  otherwise (the refined correlation)
          prompts              = PPG(score)                         # detached points / boxes / masks
          sparse, dense        = SAM prompt encoder(prompts)        # (B*T', Ns, S), (B*T', S, h, w)
          F_v                  = SAM block k(F_v, prompts, text)    # Eq. 2, class-agnostic (B, S, h, w)
          cost                 = VLF k(cost, F_v, text guidance)    # (B, hidden, T', h, w)
      -> AggregatedCost(cost, class_index) for the decode head

``class_score`` reads the refined cost back through the least-squares inverse of the 1x1
correlation embedding (``cost = W c + b``, so ``c_hat = mean_p pinv(W) (cost - b)``): before
block 1 it is the Eq. 1 score exactly, and its sign and scale are those of the embedding that
made the cost from the correlation, whatever the seed (docs/escnet.md, "Prompts from every block").
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmseg.registry import MODELS

from ...checkpoints.sam_official import escnet_sam_weights, load_sam_checkpoint
from ...checkpoints.state_dict_fit import check_state_dict_fits
from ..layers.class_chunks import check_class_chunk_size
from ..layers.guidance_projection import text_guidance_projection
from ..structures import AggregatedCost, ClassFilter
from .cost_opening import CostVolumeNeck, cost_embedding
from .ppg import PseudoPromptGenerator, PseudoPrompts
from .sam_block import SAMBlock, build_prompt_encoder, encode_prompts, unused_prompt_parameters
from .vlf import VisionLanguageFusion

SAM_INITS = ('pretrained', 'random')
PROMPT_SOURCES = ('refined', 'initial')


class BlockPrompts(NamedTuple):
    """What the PPG of one ESC block saw and made (for analysis and pictures).

    Attributes:
        score (Tensor): (B, T', h, w) the class score map the PPG read.
        prompts (PseudoPrompts): its prompts, maps indexed ``b*T' + t``.
        refined (Tensor, optional): (B, T', h, w) the block's output read as class scores
            (:meth:`ESCNeck.class_score` of the cost after its VLF: the paper's Fig. 6 maps);
            None when the correlation embedding is not 1x1.
    """
    score: torch.Tensor
    prompts: PseudoPrompts
    refined: Optional[torch.Tensor] = None


@MODELS.register_module()
class ESCNeck(CostVolumeNeck):
    """ESC-Net's N ESC blocks between the CLIP encoders and the decoder.

    The shared opening (:mod:`.cost_opening`) gives the embedded cost (``corr_embed``), the
    projected visual feature F_v (``visual_proj``) and the text guidance
    (``text_guidance_projection``); the cost volume is in the layout (B, C, T, h, w) of
    :mod:`mmseg_escnet.models.structures`.

    Args:
        embed_dim (int): CLIP embedding width C of the dense image and the text features.
        num_blocks (int): Number N of ESC blocks (paper: 4).
        hidden_dim (int): Channels of the embedded correlation (VLF width).
        sam_dim (int): SAM's transformer dim S (256 for every official SAM).
        sam_num_heads (int): SAM's attention heads (8).
        sam_mlp_dim (int): SAM's MLP width (2048).
        use_sam (bool): False removes PPG and the SAM blocks (paper Table 2 (a)): the VLF is guided by
            the unrefined, projected CLIP features.
        sam_init (str): ``'pretrained'`` (weights from ``sam_checkpoint``, Table 2 (c)) or
            ``'random'`` (Table 2 (b)).
        sam_checkpoint (str, optional): Official SAM checkpoint (vit_b / vit_l / vit_h ``.pth``, path
            or URL); read in :meth:`init_weights`, never at construction.
        sam_layer_map (str): Which SAM decoder layer initialises ESC block k: ``'mod'`` (k mod 2) or
            ``'clamp'`` (min(k, 1)).
        ppg (dict): Keyword arguments of :class:`PseudoPromptGenerator` (num_regions, threshold,
            temperature, smooth, normalize, use_points, use_boxes, use_masks, ...). The
            prompt-encoder parameters that the chosen prompt types never reach are frozen.
        num_heads (int): Heads of the VLF attentions.
        appearance_guidance_dim (int): Projected channels of the VLF's visual guidance (0: none).
        text_guidance_dim (int): Projected channels of the VLF's text guidance (0: none).
        pooling_size (tuple): Class-attention pooling in training; ``test_pooling_size`` in eval.
        test_pooling_size (tuple, optional): Eval-mode pooling (None: same as training).
        feature_resolution (tuple): CLIP grid (h, w).
        window_size (int): Swin window side.
        prompt_channel (int): Templates P per class.
        pad_len (int): Class tokens of the class attention; more classes are pruned to the top
            ``pad_len`` before the ESC blocks (CAT-Seg's rule).
        embed_kernel_size (int): Kernel of the correlation embedding (paper: 1x1; CAT-Seg: 7x7).
        prompt_source (str): What the PPG of block k > 1 reads. ``'refined'`` (Fig. 2: "each
            ESC-Block generates a pseudo prompt"): the correlation as refined by blocks 1..k-1,
            read back through the inverse of the 1x1 correlation embedding
            (:meth:`class_score`); needs ``embed_kernel_size=1``. ``'initial'``: the Eq. 1
            correlation in every block (the prompts are then computed once). Block 1 reads
            Eq. 1 either way.
        class_chunk_size (int, optional): Classes per chunk in the per-class stages (SAM block, VLF
            spatial part); the result equals the unchunked one. None: all at once.
        with_cp (bool): Checkpoint every class chunk of those stages in training (activations are
            recomputed in the backward pass), so training memory is that of one chunk.
        init_cfg (dict, optional): mmengine init config.
    """

    #: Official parameter names of the cost embedding and of the F_v projection.
    cost_embed_name = 'corr_embed'
    appearance_projection_name = 'visual_proj'

    def __init__(self, *, embed_dim: int = 512, num_blocks: int = 4, hidden_dim: int = 256,
                 sam_dim: int = 256, sam_num_heads: int = 8, sam_mlp_dim: int = 2048,
                 use_sam: bool = True, sam_init: str = 'pretrained',
                 sam_checkpoint: Optional[str] = None, sam_layer_map: str = 'mod',
                 ppg: Optional[dict] = None, num_heads: int = 4,
                 appearance_guidance_dim: int = 256, text_guidance_dim: int = 256,
                 pooling_size: Sequence[int] = (2, 2),
                 test_pooling_size: Optional[Sequence[int]] = None,
                 feature_resolution: Sequence[int] = (24, 24), window_size: int = 12,
                 prompt_channel: int = 1, pad_len: int = 256, embed_kernel_size: int = 1,
                 prompt_source: str = 'refined',
                 class_chunk_size: Optional[int] = None, with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dim=embed_dim, prompt_channel=prompt_channel, pad_len=pad_len,
                         feature_resolution=feature_resolution, pooling_size=pooling_size,
                         test_pooling_size=test_pooling_size, init_cfg=init_cfg)
        if sam_init not in SAM_INITS:
            raise ValueError(f'sam_init must be one of {SAM_INITS}, got {sam_init!r}')
        if sam_layer_map not in ('mod', 'clamp'):
            raise ValueError(f"sam_layer_map must be 'mod' or 'clamp', got {sam_layer_map!r}")
        if use_sam and sam_init == 'pretrained' and sam_checkpoint is None:
            raise ValueError("sam_init='pretrained' needs sam_checkpoint (an official SAM .pth); "
                             "use sam_init='random' to train SAM blocks from scratch")
        if prompt_source not in PROMPT_SOURCES:
            raise ValueError(f'prompt_source must be one of {PROMPT_SOURCES}, got {prompt_source!r}')
        if use_sam and prompt_source == 'refined' and embed_kernel_size != 1:
            raise ValueError("prompt_source='refined' reads the cost back through the 1x1 "
                             f'correlation embedding; embed_kernel_size={embed_kernel_size} has no '
                             "pointwise inverse: use embed_kernel_size=1 or prompt_source='initial'")
        check_class_chunk_size(class_chunk_size)
        self.prompt_source = prompt_source
        self.use_sam = use_sam
        self.sam_init = sam_init
        self.sam_checkpoint = sam_checkpoint
        self.sam_layer_map = sam_layer_map
        self.class_chunk_size = class_chunk_size
        self.with_cp = with_cp

        self.corr_embed = cost_embedding(prompt_channel, hidden_dim, embed_kernel_size)
        self.visual_proj = nn.Conv2d(embed_dim, sam_dim, kernel_size=1)
        self.text_guidance_projection = text_guidance_projection(embed_dim, text_guidance_dim)
        if use_sam:
            self.ppg = PseudoPromptGenerator(**(ppg or {}))
            if not (self.ppg.use_points or self.ppg.use_boxes or self.ppg.use_masks):
                raise ValueError('ppg gives no prompt: set at least one of use_points, '
                                 'use_boxes, use_masks (or use_sam=False for no SAM blocks)')
            self.prompt_encoder = build_prompt_encoder(grid=self.feature_resolution,
                                                       embed_dim=sam_dim)
            # what these prompt types never reach gets no gradient: frozen, so DDP needs no
            # find_unused_parameters
            unused = unused_prompt_parameters(use_points=self.ppg.use_points,
                                              use_boxes=self.ppg.use_boxes,
                                              use_masks=self.ppg.use_masks)
            for name, param in self.prompt_encoder.named_parameters():
                if name.startswith(unused):
                    param.requires_grad_(False)
            self.sam_blocks = nn.ModuleList([
                SAMBlock(text_dim=embed_dim, embed_dim=sam_dim, num_heads=sam_num_heads,
                         mlp_dim=sam_mlp_dim, skip_first_layer_pe=self._sam_layer(k) == 0)
                for k in range(num_blocks)
            ])
        self.vlf_blocks = nn.ModuleList([
            VisionLanguageFusion(hidden_dim=hidden_dim, visual_dim=sam_dim,
                                 appearance_guidance_dim=appearance_guidance_dim,
                                 text_guidance_dim=text_guidance_dim, num_heads=num_heads,
                                 input_resolution=self.feature_resolution, window_size=window_size,
                                 pooling_size=pooling_size, pad_len=self.pad_len)
            for _ in range(num_blocks)
        ])

    def _sam_layer(self, block: int, num_sam_layers: int = 2) -> int:
        """Index of the SAM decoder layer that initialises ESC block ``block``."""
        if self.sam_layer_map == 'mod':
            return block % num_sam_layers
        return min(block, num_sam_layers - 1)

    def init_weights(self) -> None:
        """mmengine init, then the official SAM weights if ``sam_init='pretrained'``."""
        super().init_weights()
        if self.use_sam and self.sam_init == 'pretrained':
            weights = escnet_sam_weights(
                load_sam_checkpoint(self.sam_checkpoint), num_blocks=len(self.sam_blocks),
                layer_map=self.sam_layer_map,
                output_tokens=self.sam_blocks[0].output_tokens is not None)
            check_state_dict_fits(self, weights, source=str(self.sam_checkpoint),
                                  target='the SAM blocks of ESCNeck', partial=True,
                                  hint='Give an official SAM checkpoint (vit_b, vit_l or vit_h) '
                                  'and sam_dim=256, sam_num_heads=8, sam_mlp_dim=2048')
            self.load_state_dict(weights, strict=False)
            print_log(f'ESCNeck: SAM blocks initialised from {self.sam_checkpoint} '
                      f'({self.sam_layer_map} layer map)', logger='current')

    @torch.no_grad()
    def class_score(self, cost: torch.Tensor) -> torch.Tensor:
        """Read a (refined) cost volume back as one correlation score per class and pixel.

        The 1x1 correlation embedding maps the P template correlations c to
        ``cost = W c + b`` (W: (hidden, P)). Its least-squares inverse averaged over the
        templates, ``c_hat = mean_p pinv(W)_p . (cost - b)`` (for P = 1:
        ``w . (cost - b) / |w|^2``), gives back the Eq. 1 score exactly before block 1; after
        block k it reads the VLFs' residual updates along the same direction, so its sign and
        scale come from the embedding, not from a seed.

        Args:
            cost (torch.Tensor): (B, hidden, T', h, w).

        Returns:
            torch.Tensor: (B, T', h, w) detached scores.
        """
        weight = self.corr_embed.weight.detach().flatten(1)  # (hidden, P, 1, 1) -> (hidden, P)
        if weight.shape[1] == 1:  # w / |w|^2, in elementary ops (an exported graph holds them)
            readout = weight[:, 0] / weight.square().sum()  # (hidden,)
        else:  # (P, hidden) least-squares inverse, averaged over the templates
            readout = torch.linalg.pinv(weight.double()).mean(dim=0)
        readout = readout.to(cost.dtype)
        bias = self.corr_embed.bias
        if bias is not None:
            cost = cost - bias.detach().view(1, -1, 1, 1, 1)
        # (B, hidden, T', h, w) . (hidden,) -> (B, T', h, w)
        return torch.einsum('bcthw,c->bthw', cost.detach(), readout)

    def forward(self, img_feats: torch.Tensor, text_feats: torch.Tensor,
                appearance_guidance: Optional[torch.Tensor] = None,
                class_filter: Optional[ClassFilter] = None) -> AggregatedCost:
        """Run the ESC blocks.

        Args:
            img_feats (torch.Tensor): (B, C, h, w) dense CLIP image features F_v.
            text_feats (torch.Tensor): (B, T, P, C) L2-normalised class embeddings F_l.
            appearance_guidance (torch.Tensor, optional): (B, C, h, w) features refined by the SAM
                blocks; defaults to ``img_feats`` (the segmentor passes the dense features).
            class_filter (ClassFilter, optional): the neck's test-time class filter, passed on
                to :meth:`~.cost_opening.CostVolumeNeck.open_cost`: PPG, SAM blocks, VLFs and the
                decoder run on the kept classes only.

        Returns:
            AggregatedCost: ``cost`` (B, hidden, T', h, w) and ``class_index`` (None or (B, T')
            kept classes).
        """
        return self.forward_with_prompts(img_feats, text_feats, appearance_guidance,
                                         class_filter, record=False)[0]

    def forward_with_prompts(
            self, img_feats: torch.Tensor, text_feats: torch.Tensor,
            appearance_guidance: Optional[torch.Tensor] = None,
            class_filter: Optional[ClassFilter] = None,
            record: bool = True) -> Tuple[AggregatedCost, List[BlockPrompts]]:
        """:meth:`forward`, also returning what every block's PPG read and made.

        Args:
            img_feats, text_feats, appearance_guidance, class_filter: as in :meth:`forward`.
            record (bool): keep the per-block :class:`BlockPrompts` (False: an empty list).

        Returns:
            tuple: the :class:`AggregatedCost`, and one :class:`BlockPrompts` per ESC block
            (blocks of the ``'initial'`` source share the first one's tensors; empty without
            SAM blocks).
        """
        opening = self.open_cost(img_feats, text_feats, appearance_guidance, class_filter)
        cost = opening.cost                                           # (B, hidden, T', h, w)
        text = F.normalize(opening.text_feats.mean(dim=2), dim=-1)    # (B, T', C)
        visual = opening.appearance_guidance                          # (B, S, h, w)

        records: List[BlockPrompts] = []
        score = opening.corr.mean(dim=1)              # (B, P, T, h, w) -> (B, T, h, w): Eq. 1
        last = len(self.vlf_blocks) - 1
        for k, vlf in enumerate(self.vlf_blocks):
            if self.use_sam:
                if k == 0 or self.prompt_source == 'refined':
                    prompted = self._prompt(score)
                _, sparse, dense, image_pe = prompted
                visual = self.sam_blocks[k](visual, image_pe, sparse, dense, text,
                                            class_chunk_size=self.class_chunk_size,
                                            with_cp=self.with_cp)
            cost = vlf(cost, visual, opening.text_guidance, pooling_size=opening.pooling_size,
                       class_chunk_size=self.class_chunk_size, with_cp=self.with_cp)
            if not self.use_sam:
                continue
            readable = self.corr_embed.kernel_size == (1, 1)
            reads_next = self.prompt_source == 'refined' and k < last
            refined = self.class_score(cost) if readable and (record or reads_next) else None
            if record:
                records.append(BlockPrompts(score=score.detach(), prompts=prompted[0],
                                            refined=refined))
            if reads_next:
                score = refined                       # (B, T, h, w): block k + 1's PPG input
        return AggregatedCost(cost=cost, class_index=opening.class_index), records

    def _prompt(self, score: torch.Tensor) -> Tuple[PseudoPrompts, torch.Tensor, torch.Tensor,
                                                     torch.Tensor]:
        """PPG and SAM's prompt encoder on (B, T, h, w) class scores.

        Returns:
            tuple: the prompts, sparse (B*T, Ns, S) and dense (B*T, S, h, w) embeddings and the
            dense PE (1, S, h, w).
        """
        b, t, h, w = score.shape
        prompts = self.ppg(score.reshape(b * t, h, w))             # (B, T, h, w) -> (B*T, h, w)
        sparse, dense = encode_prompts(                            # (B*T, Ns, S), (B*T, S, h, w)
            self.prompt_encoder, points=prompts.points, point_labels=prompts.point_labels,
            boxes=prompts.boxes, masks=prompts.masks)
        return prompts, sparse, dense, self.prompt_encoder.get_dense_pe()
