"""Work shared across classes, or repeated for every class as the official code does.

The per-class stages of CAT-Seg-like models repeat work that is the same for many classes:

* a guidance that is the same for every class of an image (appearance or skip features) or of
  a pixel (text guidance) is concatenated to the input of a linear layer or a convolution. As
  these are linear, the guidance's share of the output is computed once and added to every
  class (:func:`guidance_for_classes`);
* the class attention pads the class axis to ``pad_len`` tokens with one learnt token: the
  padding tokens all have the same keys and values, and their outputs are dropped, so their
  share of the linear attention is computed once and weighted by their number.

Both give the official results up to float rounding. :func:`official_cost` switches back to the
official computation (the guidance repeated per class, the padding processed like classes):
``tools/analysis/get_flops.py`` uses it to count what the papers count, tests as a reference.
"""
from contextlib import contextmanager
from typing import Iterator

from torch import Tensor

__all__ = ['official_cost', 'computing_official_cost', 'guidance_for_classes']

_OFFICIAL = False


@contextmanager
def official_cost() -> Iterator[None]:
    """Within the block, compute the redundant per-class work as the official code does."""
    global _OFFICIAL
    previous, _OFFICIAL = _OFFICIAL, True
    try:
        yield
    finally:
        _OFFICIAL = previous


def computing_official_cost() -> bool:
    """Whether :func:`official_cost` is active."""
    return _OFFICIAL


def guidance_for_classes(guidance: Tensor, classes: int) -> Tensor:
    """``guidance`` (B, ...) of B images (or pixels) for their ``classes`` sequences each.

    Returns the guidance unchanged (it is added per image), or repeated to (B*classes, ...)
    inside :func:`official_cost`; the layers broadcast either over the classes.
    """
    return guidance.repeat_interleave(classes, dim=0) if _OFFICIAL else guidance
