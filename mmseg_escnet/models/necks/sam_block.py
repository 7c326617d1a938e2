"""ESC-Net's SAM block (paper §3.4, Eq. 2) built from segment_anything's own modules.

One ESC block refines the (already 256-d) CLIP image feature ``F_v`` with one pretrained
SAM mask-decoder layer (:class:`segment_anything.modeling.transformer.TwoWayAttentionBlock`):
for every image ``b`` and class ``t`` a SAM prompt set (pseudo points -> sparse tokens, pseudo
mask -> dense embedding, from :func:`build_prompt_encoder`) plus one text token queries the
image, and the two-way layer returns refined image tokens ``(F'_v)^t``.  All ``B*T`` prompt
sets run as one batch (optionally in class chunks) and Eq. 2 fuses them class-agnostically:
``F'_v = Conv1x1([F_v ; mean_t (F'_v)^t])`` (docs/escnet.md).

Parameter names below ``block.`` are those of SAM's ``mask_decoder.transformer.layers.{i}.``;
``output_tokens`` holds SAM's ``[iou_token; mask_tokens]``.  Loading official weights is in
:mod:`mmseg_escnet.checkpoints.sam_official`.

Shapes: B images, T classes, S = SAM dim (256), h x w the feature grid, Ns sparse tokens.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from segment_anything.modeling.prompt_encoder import PromptEncoder
from segment_anything.modeling.transformer import TwoWayAttentionBlock

from ..layers.class_chunks import inference_chunk_size, maybe_checkpoint
from ..layers.fused_sam_attention import fuse_sam_attention

__all__ = ['build_prompt_encoder', 'encode_prompts', 'SAMBlock', 'unused_prompt_parameters']


def _check_pos_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')


def build_prompt_encoder(*, grid: Sequence[int] = (24, 24), embed_dim: int = 256,
                         mask_in_chans: int = 16) -> PromptEncoder:
    """SAM's :class:`PromptEncoder` working directly in feature-grid coordinates.

    ``image_embedding_size`` and ``input_image_size`` are both ``grid``, so point coordinates
    are given in grid-cell units, ``(x, y) = (col, row)`` (SAM adds 0.5 -> the cell centre,
    which is exactly where :meth:`PromptEncoder.get_dense_pe` samples the dense PE of that
    cell), and mask prompts are ``(N, 1, 4*h, 4*w)`` (SAM's low-resolution mask logits).

    Args:
        grid (Sequence[int]): feature grid ``(h, w)``.
        embed_dim (int): prompt embedding dim S (256 in SAM); must be even.
        mask_in_chans (int): hidden channels of the mask downscaling (16 in SAM); must be a
            multiple of 4.

    Returns:
        PromptEncoder: ``forward(points=(coords (N, P, 2), labels (N, P)), boxes=None,
        masks=(N, 1, 4h, 4w) | None)`` -> sparse ``(N, P+1, S)`` (a pad token is appended when
        there are no boxes), dense ``(N, S, h, w)``; ``get_dense_pe()`` -> ``(1, S, h, w)``.

    Raises:
        ValueError: for a bad grid or dims.
    """
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or len(grid) != 2:
        raise ValueError(f'grid must be a pair (h, w), got {grid!r}')
    for name, v in zip(('grid[0]', 'grid[1]'), grid):
        _check_pos_int(name, v)
    _check_pos_int('embed_dim', embed_dim, 2)
    if embed_dim % 2:
        raise ValueError(f'embed_dim must be even (sin/cos PE halves), got {embed_dim}')
    _check_pos_int('mask_in_chans', mask_in_chans, 4)
    if mask_in_chans % 4:
        raise ValueError(f'mask_in_chans must be a multiple of 4, got {mask_in_chans}')
    size = (int(grid[0]), int(grid[1]))
    return PromptEncoder(embed_dim=embed_dim, image_embedding_size=size, input_image_size=size,
                         mask_in_chans=mask_in_chans)


def encode_prompts(encoder: PromptEncoder, *, points: Optional[torch.Tensor] = None,
                   point_labels: Optional[torch.Tensor] = None,
                   boxes: Optional[torch.Tensor] = None,
                   masks: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """SAM's prompt encoder on N prompt sets with K points and K boxes each, through its public
    ``forward``.

    ``PromptEncoder.forward`` takes at most one box per prompt set, so the K boxes are encoded
    by K calls: the first with the points, the first box and the mask, the others with one box
    each. The sparse tokens are then SAM's own layout: the points (plus SAM's "not a point" pad
    token when there are no boxes), then the two corner tokens of every box.

    Args:
        encoder (PromptEncoder): e.g. from :func:`build_prompt_encoder`.
        points (Tensor, optional): (N, K, 2) (x, y) in the encoder's input frame.
        point_labels (Tensor, optional): (N, K) SAM labels (1: foreground).
        boxes (Tensor, optional): (N, K, 4) (x0, y0, x1, y1).
        masks (Tensor, optional): (N, 1, 4h, 4w) mask logits.

    Returns:
        tuple: sparse (N, Ns, S) and dense (N, S, h, w) prompt embeddings.
    """
    given_points = None if points is None else (points, point_labels)
    first_box = None if boxes is None else boxes[:, 0]
    sparse, dense = encoder(points=given_points, boxes=first_box, masks=masks)
    tokens = [sparse]  # (N, K(+1) + 2, S): points (+ pad), the first box's corners
    for k in range(1, 0 if boxes is None else boxes.shape[1]):
        tokens.append(encoder(points=None, boxes=boxes[:, k], masks=None)[0])  # (N, 2, S)
    return torch.cat(tokens, dim=1), dense


def unused_prompt_parameters(*, use_points: bool, use_boxes: bool,
                             use_masks: bool) -> Tuple[str, ...]:
    """Names of the :class:`PromptEncoder` parameters that pseudo prompts never reach.

    SAM's prompt encoder adds ``point_embeddings.0`` / ``.1`` to negative / positive points,
    ``point_embeddings.2`` / ``.3`` to the two box corners, ``not_a_point_embed`` to the pad
    token it appends to points when no box follows, and embeds a mask prompt with
    ``mask_downscaling`` or, without one, broadcasts ``no_mask_embed``. Pseudo points are
    always positive, so ``point_embeddings.0`` is never used; the rest depends on the prompt
    types. Parameters outside every autograd graph stall distributed training (DDP waits for
    their gradients), so the caller freezes these.

    Args:
        use_points (bool): pseudo points are given.
        use_boxes (bool): pseudo boxes are given.
        use_masks (bool): pseudo masks are given.

    Returns:
        tuple[str, ...]: parameter-name prefixes below the prompt encoder.
    """
    unused = ['point_embeddings.0']
    if not use_points:
        unused.append('point_embeddings.1')
    if not use_points or use_boxes:
        unused.append('not_a_point_embed')
    if not use_boxes:
        unused += ['point_embeddings.2', 'point_embeddings.3']
    unused.append('no_mask_embed' if use_masks else 'mask_downscaling')
    return tuple(unused)


class SAMBlock(nn.Module):
    """One ESC block's SAM part: prompt self-attention + two-way cross-attention (a SAM
    TwoWayAttentionBlock), run on all T prompt sets of all B images as one batch, then Eq. 2
    fusion.

    Per prompt set ``n = b*T + t`` (class-major within each image):
    ``queries = [output_tokens ; sparse_n ; text_proj(text[b, t])]`` ``(No+Ns+1, S)`` with
    ``query_pe = queries`` (SAM's decoder passes its initial tokens as query PE),
    ``keys = image[b] + dense_n`` ``(h*w, S)`` with ``key_pe = image_pe``; the two-way layer
    returns the refined keys ``(F'_v)^n``.  Then ``F'_v = fuse([image ; mean_t (F'_v)^t])``.

    Args:
        text_dim (int): channels C of the class text embeddings.
        embed_dim (int): SAM dim S (256).
        num_heads (int): attention heads (8 in SAM).
        mlp_dim (int): MLP hidden dim of the token MLP (2048 in SAM).
        attention_downsample_rate (int): internal-dim divisor of the cross attentions (2).
        skip_first_layer_pe (bool): SAM layer-0 semantics (self-attention without PE and
            without residual); True for blocks initialised from SAM's layer 0.
        num_output_tokens (int): learned output tokens prepended to the queries (5 = SAM's
            iou token + 4 mask tokens; 0 disables them).
    """

    def __init__(self, *, text_dim: int, embed_dim: int = 256, num_heads: int = 8,
                 mlp_dim: int = 2048, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False, num_output_tokens: int = 5) -> None:
        super().__init__()
        _check_pos_int('text_dim', text_dim)
        _check_pos_int('embed_dim', embed_dim)
        _check_pos_int('num_heads', num_heads)
        _check_pos_int('mlp_dim', mlp_dim)
        _check_pos_int('attention_downsample_rate', attention_downsample_rate)
        _check_pos_int('num_output_tokens', num_output_tokens, 0)
        if embed_dim % (num_heads * attention_downsample_rate):
            raise ValueError(f'embed_dim ({embed_dim}) must be divisible by num_heads * '
                             f'attention_downsample_rate ({num_heads} * '
                             f'{attention_downsample_rate})')
        self.text_dim = text_dim
        self.embed_dim = embed_dim
        self.num_output_tokens = num_output_tokens
        # segment_anything's layer (official names), its attention fused (same results)
        self.block = fuse_sam_attention(TwoWayAttentionBlock(
            embedding_dim=embed_dim, num_heads=num_heads, mlp_dim=mlp_dim,
            activation=nn.ReLU, attention_downsample_rate=attention_downsample_rate,
            skip_first_layer_pe=bool(skip_first_layer_pe)))
        self.output_tokens: Optional[nn.Embedding] = (
            nn.Embedding(num_output_tokens, embed_dim) if num_output_tokens > 0 else None)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.fuse = nn.Conv2d(2 * embed_dim, embed_dim, kernel_size=1)

    @property
    def skip_first_layer_pe(self) -> bool:
        """Whether the wrapped SAM layer uses layer-0 semantics."""
        return self.block.skip_first_layer_pe

    # ------------------------------------------------------------------ parts
    def build_queries(self, sparse: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Assemble the query tokens of every prompt set.

        Args:
            sparse (torch.Tensor): (N, Ns, S) sparse prompt embeddings.
            text (torch.Tensor): (N, C) one text embedding per prompt set.

        Returns:
            torch.Tensor: (N, No+Ns+1, S) = ``[output_tokens ; sparse ; text_proj(text)]``.
        """
        parts = []
        if self.output_tokens is not None:
            # (No, S) -> (N, No, S)
            parts.append(self.output_tokens.weight.unsqueeze(0).expand(sparse.shape[0], -1, -1))
        parts.append(sparse)
        parts.append(self.text_proj(text).unsqueeze(1))  # (N, C) -> (N, 1, S)
        return torch.cat([p.to(sparse.dtype) for p in parts], dim=1)

    def refine(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
               dense: torch.Tensor, text: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the two-way SAM layer on all ``B*T`` prompt sets (no chunking, no fusion).

        Args:
            image (torch.Tensor): (B, S, h, w) image feature F_v.
            image_pe (torch.Tensor): (1, S, h, w) dense PE (``prompt_encoder.get_dense_pe()``).
            sparse (torch.Tensor): (B*T, Ns, S) sparse prompts, index ``b*T + t``.
            dense (torch.Tensor): (B*T, S, h, w) dense prompts, index ``b*T + t``.
            text (torch.Tensor): (B, T, C) class text embeddings.

        Returns:
            tuple: refined queries (B*T, No+Ns+1, S) and refined keys ``(F'_v)^n``
            (B*T, h*w, S).
        """
        b, s, h, w = image.shape
        t = text.shape[1]
        assert sparse.shape[0] == dense.shape[0] == b * t and dense.shape[1:] == (s, h, w)
        queries = self.build_queries(sparse, text.reshape(b * t, -1))  # (B*T, Nq, S)
        # (B, S, h, w) + (B, T, S, h, w) -> (B, T, S, h, w)
        keys = image.unsqueeze(1) + dense.view(b, t, s, h, w)
        keys = keys.flatten(3).flatten(0, 1).transpose(1, 2)  # -> (B*T, h*w, S)
        key_pe = image_pe.flatten(2).transpose(1, 2)  # (1, S, h, w) -> (1, h*w, S)
        return self.block(queries=queries, keys=keys, query_pe=queries, key_pe=key_pe)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor, text: torch.Tensor,
                class_chunk_size: Optional[int] = None, with_cp: bool = False) -> torch.Tensor:
        """Refine F_v with every class's prompt set and fuse (Eq. 2).

        Args:
            image (torch.Tensor): (B, S, h, w) image feature F_v (already in SAM's S dims).
            image_pe (torch.Tensor): (1, S, h, w) = ``prompt_encoder.get_dense_pe()``.
            sparse (torch.Tensor): (B*T, Ns, S) sparse prompt embeddings, index ``b*T + t``.
            dense (torch.Tensor): (B*T, S, h, w) dense prompt embeddings, index ``b*T + t``.
            text (torch.Tensor): (B, T, C) class text embeddings F_l.
            class_chunk_size (int, optional): process this many classes at a time (summing the
                refined keys for the mean) to bound memory; None = all at once.  The result
                equals the unchunked one up to float summation order.
            with_cp (bool): checkpoint every chunk (training memory of one chunk).

        Returns:
            torch.Tensor: F'_v, (B, S, h, w).

        """
        b, s, h, w = image.shape
        t = text.shape[1]
        # per class, the two-way transformer's widest activations are a few (B, h*w, S) keys
        chunk = inference_chunk_size(class_chunk_size, 4 * image.numel() * image.element_size(),
                                     image) or t
        ns = sparse.shape[1]
        sparse_bt = sparse.view(b, t, ns, s)  # (B*T, Ns, S) -> (B, T, Ns, S)
        dense_bt = dense.view(b, t, s, h, w)  # (B*T, S, h, w) -> (B, T, S, h, w)
        total = None
        for start in range(0, t, chunk):
            stop = min(start + chunk, t)
            tc = stop - start
            _, keys = maybe_checkpoint(
                self.refine, image, image_pe,
                sparse_bt[:, start:stop].reshape(b * tc, ns, s),
                dense_bt[:, start:stop].reshape(b * tc, s, h, w),
                text[:, start:stop], with_cp=with_cp)  # keys: (B*Tc, h*w, S)
            part = keys.view(b, tc, h * w, s).sum(dim=1)  # -> (B, h*w, S)
            total = part if total is None else total + part
        mean = (total / t).transpose(1, 2).reshape(b, s, h, w)  # (B, h*w, S) -> (B, S, h, w)
        fused_in = torch.cat([image, mean.to(image.dtype)], dim=1)  # (B, 2S, h, w)
        return self.fuse(fused_in)  # (B, 2S, h, w) -> (B, S, h, w)
