"""segment_anything's two-way ``Attention`` with the attention step fused.

:class:`segment_anything.modeling.transformer.Attention` computes
``softmax(q k^T / sqrt(d)) v`` as explicit matmuls; :class:`FusedSAMAttention` computes the same
with :func:`torch.nn.functional.scaled_dot_product_attention` (equal within float rounding,
without the (N_q, N_k) attention map in memory). It keeps segment_anything's module, parameters
and their names: :func:`fuse_sam_attention` only swaps the class of the ``Attention`` modules of
a SAM block, so official SAM checkpoints load as before.
"""
import torch.nn.functional as F
from segment_anything.modeling.transformer import Attention
from torch import Tensor, nn

__all__ = ['FusedSAMAttention', 'fuse_sam_attention']


class FusedSAMAttention(Attention):
    """segment_anything's ``Attention`` (same arguments and parameters), fused forward."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attend.

        Args:
            q (Tensor): (B, N_q, C) queries.
            k (Tensor): (B, N_k, C) keys.
            v (Tensor): (B, N_k, C) values.

        Returns:
            Tensor: (B, N_q, C).
        """
        # (B, N, C) -> (B, heads, N, C_internal/heads)
        q, k, v = (self._separate_heads(proj(t), self.num_heads)
                   for proj, t in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v)))
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C_internal/heads), as SAM
        return self.out_proj(self._recombine_heads(out))  # (B, heads, N_q, c) -> (B, N_q, C)


def fuse_sam_attention(module: nn.Module) -> nn.Module:
    """Make every segment_anything ``Attention`` inside ``module`` a :class:`FusedSAMAttention`.

    Args:
        module (nn.Module): e.g. a ``TwoWayAttentionBlock``.

    Returns:
        nn.Module: ``module`` itself (changed in place; parameters untouched).
    """
    for child in module.modules():
        if type(child) is Attention:
            child.__class__ = FusedSAMAttention
    return module
