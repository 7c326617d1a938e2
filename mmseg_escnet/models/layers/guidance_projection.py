"""The projections a guidance goes through before it enters an attention or a fusion.

Every model of the family projects its guidances the way CAT-Seg does: a map (CLIP or SAM image
features, a decoder's skip features) through a 3 x 3 conv and an activation, the class text
embeddings through a linear layer and an activation (ReLU; ERR-Seg: ReLU6 for maps, GELU for
text). Both are ``nn.Sequential`` with the layer at index 0, the parameter names of the official
checkpoints (``<name>.0.weight``, ``<name>.0.bias``).
"""
from functools import partial
from typing import Callable, Optional, Sequence

import torch.nn as nn
from torch import Tensor

__all__ = ['map_guidance_projection', 'map_guidance_projections', 'text_guidance_projection',
           'GUIDANCE_CLAMP', 'clamp_guidance']

#: ERR-Seg clamps the CLIP stage outputs to [-GUIDANCE_CLAMP, GUIDANCE_CLAMP] before projecting
#: them (official ``Decoder.forward``, in place there; out of place here).
GUIDANCE_CLAMP = 16.0

#: Builds the parameter-free activation after a projection, e.g. ``nn.ReLU``.
Activation = Callable[[], nn.Module]


def _projection(layer: Callable[[int, int], nn.Module], in_width: int,
                out_width: int, activation: Activation = nn.ReLU) -> Optional[nn.Sequential]:
    """``layer(in_width, out_width)`` + ``activation()``; None for ``out_width == 0``."""
    if out_width == 0:
        return None
    if in_width < 1 or out_width < 0:
        raise ValueError(f'a guidance projection needs an input width >= 1 and an output width '
                         f'>= 0, got {in_width} -> {out_width}')
    return nn.Sequential(layer(in_width, out_width), activation())


def map_guidance_projection(in_channels: int, out_channels: int,
                            activation: Activation = nn.ReLU) -> Optional[nn.Sequential]:
    """3 x 3 conv + activation of a guidance map: (B, in_channels, h, w) ->
    (B, out_channels, h, w); None for ``out_channels == 0`` (no such guidance)."""
    return _projection(partial(nn.Conv2d, kernel_size=3, stride=1, padding=1), in_channels,
                       out_channels, activation)


def map_guidance_projections(in_channels: Sequence[int], out_channels: Sequence[int],
                             activation: Activation = nn.ReLU) -> nn.ModuleList:
    """One :func:`map_guidance_projection` per decoder stage (skip features of stage i:
    (B, in_channels[i], h_i, w_i) -> (B, out_channels[i], h_i, w_i)); every width positive."""
    if any(c < 1 for c in out_channels):
        raise ValueError(f'the projected skip widths must be positive, got {tuple(out_channels)}')
    if len(in_channels) != len(out_channels):
        raise ValueError(f'one projected width per guidance map: {tuple(in_channels)} -> '
                         f'{tuple(out_channels)}')
    return nn.ModuleList([map_guidance_projection(cin, cout, activation)
                          for cin, cout in zip(in_channels, out_channels)])


def text_guidance_projection(in_features: int, out_features: int,
                             activation: Activation = nn.ReLU) -> Optional[nn.Sequential]:
    """Linear + activation of the class text embeddings: (B, T, in_features) ->
    (B, T, out_features) (``in_features``: the CLIP width C); None for ``out_features == 0``
    (no text guidance)."""
    return _projection(nn.Linear, in_features, out_features, activation)


def clamp_guidance(x: Tensor) -> Tensor:
    """``x`` clamped to [-GUIDANCE_CLAMP, GUIDANCE_CLAMP] (a new tensor; any shape)."""
    return x.clamp(-GUIDANCE_CLAMP, GUIDANCE_CLAMP)
