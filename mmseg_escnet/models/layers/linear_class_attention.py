"""Linear attention over the class axis of a cost volume (CAT-Seg's class aggregation).

Linear attention follows Katharopoulos et al., "Transformers are RNNs" (arXiv:2006.16236)
with the feature map ``elu(x) + 1``.  The class transformer layer is the class half of
CAT-Seg's aggregator (arXiv:2303.11797): for every (pooled) pixel, the T class tokens attend
to each other with the projected text embeddings concatenated into queries and keys.  There
is no positional embedding over classes, so the layer is permutation-equivariant in T.

Parameter names (``attention.{q,k,v}``, ``MLP.{0,2}``, ``norm1``, ``norm2``,
``padding_tokens``, ``padding_guidance``) follow the official code.
"""
from functools import partial
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .class_chunks import fold_classes, map_class_chunks, unfold_classes
from .official_cost import guidance_for_classes

__all__ = ['LinearAttention', 'GuidedLinearAttention', 'ClassTransformerLayer']

#: A pooling window: (h, w), a side for both, or None (no pooling).
PoolSize = Union[int, Sequence[int], None]


class LinearAttention(nn.Module):
    """Multi-head linear attention ``phi(Q) (phi(K)^T V) / (phi(Q) . sum_s phi(K_s) + eps)``.

    Values are divided by the key length S before the products and the result multiplied
    by S afterwards (the official fp16 overflow guard; mathematically a no-op).

    Args:
        eps (float): added to the normaliser.
    """

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                repeated: Optional[Tuple[torch.Tensor, torch.Tensor, int]] = None
                ) -> torch.Tensor:
        """Attend.

        Args:
            queries (torch.Tensor): (N, L, H, D).
            keys (torch.Tensor): (N, S, H, D).
            values (torch.Tensor): (N, S, H, Dv).
            repeated (tuple, optional): ``(key (H, D), value (H, Dv), m)``: m more key/value
                tokens, all equal (the class attention's padding), counted m times without
                being repeated.

        Returns:
            torch.Tensor: (N, L, H, Dv).
        """
        q = F.elu(queries) + 1
        k = F.elu(keys) + 1
        length = values.shape[1] + (repeated[2] if repeated is not None else 0)
        kv = torch.einsum('nshd,nshv->nhdv', k, values / length)  # (N, H, D, Dv)
        k_sum = k.sum(dim=1)  # (N, H, D)
        if repeated is not None:
            key, value, count = repeated
            key = F.elu(key) + 1
            kv = kv + count * torch.einsum('hd,hv->hdv', key, value / length)
            k_sum = k_sum + count * key
        z = 1 / (torch.einsum('nlhd,nhd->nlh', q, k_sum) + self.eps)  # (N, L, H)
        return torch.einsum('nlhd,nhdv,nlh->nlhv', q, kv, z) * length


class GuidedLinearAttention(nn.Module):
    """Linear attention whose queries and keys see a guidance; no output projection.

    Args:
        hidden_dim (int): token channels C (also the output channels).
        guidance_dim (int): guidance channels G concatenated into q/k (0: none).
        num_heads (int): heads; ``hidden_dim`` must be divisible by it.
        eps (float): linear-attention normaliser epsilon.
    """

    #: compute the guidance's share per class, as the official code does (:func:`.official_cost`)
    official_cost: bool = False

    def __init__(self, *, hidden_dim: int, guidance_dim: int, num_heads: int,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if hidden_dim % num_heads != 0:
            raise ValueError(f'hidden_dim ({hidden_dim}) must be divisible by num_heads '
                             f'({num_heads})')
        self.num_heads = num_heads
        self.guidance_dim = guidance_dim
        self.q = nn.Linear(hidden_dim + guidance_dim, hidden_dim)
        self.k = nn.Linear(hidden_dim + guidance_dim, hidden_dim)
        self.v = nn.Linear(hidden_dim, hidden_dim)
        self.attention = LinearAttention(eps=eps)

    def project(self, x: torch.Tensor, guidance: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of tokens ``x`` (..., C) with guidance (..., G): (..., C) each."""
        key_in = torch.cat([x, guidance], dim=-1) if guidance is not None else x
        return self.k(key_in), self.v(x)

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor],
                repeated: Optional[Tuple[torch.Tensor, torch.Tensor, int]] = None
                ) -> torch.Tensor:
        """Attend over the token axis.

        Args:
            x (torch.Tensor): (B*M, L, C) tokens: M token sequences per image (e.g. one per
                pixel), images major.
            guidance (torch.Tensor, optional): (B, L, G) guidance of the B images, the same for
                their M sequences; None if ``guidance_dim == 0``.
            repeated (tuple, optional): ``(key (C,), value (C,), m)`` from :meth:`project`:
                m more identical key/value tokens every sequence attends to.

        Returns:
            torch.Tensor: (B*M, L, C).
        """
        assert (guidance is None) == (self.guidance_dim == 0)
        n, length, c = x.shape
        q = F.linear(x, self.q.weight[:, :c], self.q.bias)  # (B*M, L, C)
        k = F.linear(x, self.k.weight[:, :c], self.k.bias)
        if guidance is not None:
            # q([x ; g]) = W_x x + W_g g + b: the W_g g terms once per image, (B, L, C), added
            # to its M sequences: (B*M, L, C) -> (B, M, L, C)
            guidance = guidance_for_classes(guidance, n // guidance.shape[0], self.official_cost)
            b = guidance.shape[0]
            q = (q.view(b, -1, length, c) + F.linear(guidance, self.q.weight[:, c:])[:, None])
            k = (k.view(b, -1, length, c) + F.linear(guidance, self.k.weight[:, c:])[:, None])
        # (B*M, L, C) -> (B*M, L, heads, C/heads)
        q = q.reshape(n, length, self.num_heads, -1)
        k = k.reshape(n, length, self.num_heads, -1)
        v = self.v(x).view(n, length, self.num_heads, -1)
        if repeated is not None:
            key, value, count = repeated
            repeated = (key.view(self.num_heads, -1), value.view(self.num_heads, -1), count)
        return self.attention(q, k, v, repeated).reshape(n, length, c)


class ClassTransformerLayer(nn.Module):
    """Class aggregation: pooled per-pixel linear self-attention across classes.

    ``xp = AvgPool(x)``; the class axis is padded to ``pad_len`` with learnable tokens
    (and guidance), then ``xp = xp + Attn(LN1(xp), g); xp = xp + MLP(LN2(xp))``; ``xp`` is
    upsampled bilinearly (align_corners=True) back to (H, W), padding is dropped and the
    layer returns ``x + xp``.  Because ``xp`` already contains the pooled input, the output
    is about ``2x + delta`` (the official "double residual"). Without pooling ((1, 1), CAT-Seg's
    evaluation) the pooling and the resize are identities and are skipped. Pixels are independent:
    at inference on CPU they run in chunks (:func:`~.class_chunks.inference_chunk_size`).

    Args:
        hidden_dim (int): cost-volume channels C.
        guidance_dim (int): text-guidance channels G (0: no guidance).
        num_heads (int): attention heads.
        pooling_size (tuple[int, int] | int | None): default average-pooling window (and
            stride) applied before the attention; None or (1, 1) for no pooling.
        pad_len (int): pad the class axis to this many tokens when T < pad_len;
            0 disables padding.
        mlp_ratio (int): MLP hidden channels = mlp_ratio * C.
    """

    #: process the class-axis padding like classes, as the official code does
    #: (:func:`.official_cost`)
    official_cost: bool = False

    def __init__(self, *, hidden_dim: int, guidance_dim: int, num_heads: int,
                 pooling_size: PoolSize = (2, 2), pad_len: int = 256,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        self.pooling_size = self._as_pair(pooling_size)
        self.pad_len = pad_len or 0
        self.attention = GuidedLinearAttention(hidden_dim=hidden_dim, guidance_dim=guidance_dim,
                                               num_heads=num_heads)
        self.MLP = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim * mlp_ratio),
            nn.ReLU(),
            nn.Linear(hidden_dim * mlp_ratio, hidden_dim),
        )
        self.norm1 = nn.LayerNorm(hidden_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        if self.pad_len > 0:
            self.padding_tokens = nn.Parameter(torch.zeros(1, 1, hidden_dim))
            self.padding_guidance = (nn.Parameter(torch.zeros(1, 1, guidance_dim))
                                     if guidance_dim > 0 else None)
        else:
            self.padding_tokens = None
            self.padding_guidance = None

    @staticmethod
    def _as_pair(size: PoolSize) -> Tuple[int, int]:
        """Normalise a pooling size to a pair of positive ints ((1, 1) for None)."""
        if size is None:
            return (1, 1)
        pair = (size, size) if isinstance(size, int) else tuple(size)
        if len(pair) != 2 or any(not isinstance(s, int) or s < 1 for s in pair):
            raise ValueError(f'pooling size must be a positive int or pair, got {size!r}')
        return pair

    def forward(self, x: torch.Tensor, guidance: Optional[torch.Tensor],
                pooling_size: PoolSize = None) -> torch.Tensor:
        """Aggregate across classes.

        Args:
            x (torch.Tensor): (B, C, T, H, W) cost volume.
            guidance (torch.Tensor, optional): (B, T, G) text guidance.
            pooling_size (tuple[int, int] | int, optional): overrides the default pooling
                for this call (e.g. the evaluation setting).

        Returns:
            torch.Tensor: (B, C, T, H, W).
        """
        b, c, t, h, w = x.shape
        assert guidance is None or guidance.shape[:2] == (b, t), guidance.shape
        pool = self.pooling_size if pooling_size is None else self._as_pair(pooling_size)

        if pool == (1, 1):  # no pooling (CAT-Seg's evaluation): pooling and resize are identities
            xp = x.permute(0, 3, 4, 2, 1)  # (B, C, T, H, W) -> (B, H, W, T, C), a view
            hp, wp = h, w
        else:
            # (B, C, T, H, W) -> (B*T, C, H, W) -> pool -> (B*T, C, h', w') -> (B, h', w', T, C)
            xp = F.avg_pool2d(fold_classes(x), kernel_size=pool, stride=pool)
            hp, wp = xp.shape[-2:]
            xp = xp.view(b, t, c, hp, wp).permute(0, 3, 4, 1, 2)

        num_pad = self.pad_len - t if self.padding_tokens is not None else 0
        repeated = None
        if num_pad > 0 and self.official_cost:  # the padding processed like classes
            xp = torch.cat([xp, self.padding_tokens.expand(b, hp, wp, num_pad, c)], dim=3)
            if guidance is not None and self.padding_guidance is not None:
                guidance = torch.cat([guidance, self.padding_guidance.expand(b, num_pad, -1)],
                                     dim=1)  # (B, T+pad, G)
        elif num_pad > 0:
            # all padding tokens have the same key and value, and their outputs are dropped:
            # one key/value counted num_pad times (the official result, less work)
            pad_guidance = None if guidance is None else self.padding_guidance[0, 0]
            key, value = self.attention.project(self.norm1(self.padding_tokens[0, 0]),
                                                pad_guidance)  # (C,) each
            repeated = (key, value, num_pad)
        length = xp.shape[3]
        # pixels are independent: (B, h'*w', T (+pad), C), in chunks of pixels at inference on CPU
        # (the widest activation of one pixel: the MLP's hidden tokens, (B, T (+pad), 4C))
        xp = map_class_chunks(partial(self._aggregate, guidance=guidance, repeated=repeated),
                              xp.reshape(b, hp * wp, length, c), None, dim=1,
                              item_bytes=b * length * self.MLP[0].out_features * x.element_size())
        xp = xp.view(b, hp, wp, length, c)[:, :, :, :t]  # (B, h', w', T, C)
        if pool == (1, 1):
            return x + xp.permute(0, 4, 3, 1, 2)  # (B, H, W, T, C) -> (B, C, T, H, W)
        # (B, h', w', T, C) -> (B, T, C, h', w') -> (B*T, C, h', w') -> resize to (H, W)
        xp = xp.permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
        xp = F.interpolate(xp, size=(h, w), mode='bilinear', align_corners=True)
        return x + unfold_classes(xp, b)  # (B*T, C, H, W) -> (B, C, T, H, W)

    def _aggregate(self, xp: torch.Tensor, guidance: Optional[torch.Tensor],
                   repeated: Optional[Tuple[torch.Tensor, torch.Tensor, int]]) -> torch.Tensor:
        """Attention and MLP on (B, m, L, C): m pixels of B images, L class tokens each."""
        b, m, length, c = xp.shape
        xp = xp.reshape(b * m, length, c)  # every pixel of an image sees its (B, L, G) guidance
        xp = xp + self.attention(self.norm1(xp), guidance, repeated)
        xp = xp + self.MLP(self.norm2(xp))
        return xp.view(b, m, length, c)
