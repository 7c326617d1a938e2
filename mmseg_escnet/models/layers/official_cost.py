"""Work shared across classes, or repeated for every class as the official code does.

The per-class stages of CAT-Seg-like models repeat work that is the same for many classes:

* a guidance that is the same for every class of an image (appearance or skip features) or of
  a pixel (text guidance) is concatenated to the input of a linear layer or a convolution. As
  these are linear, the guidance's share of the output is computed once and added to every
  class (:func:`guidance_for_classes`);
* the class attention pads the class axis to ``pad_len`` tokens with one learnt token: the
  padding tokens all have the same keys and values, and their outputs are dropped, so their
  share of the linear attention is computed once and weighted by their number.

Both give the official results up to float rounding. The modules that share such work have an
``official_cost`` attribute (False); :func:`official_cost` sets it on every such module of a model
for the duration of a block, to compute as the official code does (the guidance repeated per class,
the padding processed like classes): ``tools/analysis/get_flops.py`` uses it to count what the
papers count, tests as a reference. Nothing global changes: another model computing at the same
time (another thread, another test) is not affected.
"""
from contextlib import contextmanager
from typing import Iterator, List

from torch import Tensor, nn

__all__ = ['official_cost', 'guidance_for_classes']


@contextmanager
def official_cost(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model``'s modules compute the per-class work as the official code does.

    Args:
        model (nn.Module): any module; its submodules with an ``official_cost`` attribute are
            switched (and switched back on exit).
    """
    switched: List[nn.Module] = [m for m in model.modules() if hasattr(m, 'official_cost')]
    previous = [m.official_cost for m in switched]
    for module in switched:
        module.official_cost = True
    try:
        yield
    finally:
        for module, value in zip(switched, previous):
            module.official_cost = value


def guidance_for_classes(guidance: Tensor, classes: int, official: bool = False) -> Tensor:
    """``guidance`` (B, ...) of B images (or pixels) for their ``classes`` sequences each.

    Returns the guidance unchanged (it is added per image), or, with ``official`` (the calling
    module's ``official_cost``), repeated to (B*classes, ...); the layers broadcast either over
    the classes.
    """
    return guidance.repeat_interleave(classes, dim=0) if official else guidance
