"""Run a per-class operation on chunks of the class axis to bound peak memory.

Cost-volume models process every class slice with the same spatial network (Swin blocks,
U-Net decoder) by folding the class axis into the batch, so activations grow linearly with
the number of classes T.  When the operation treats classes independently, running it on
chunks of classes and concatenating the results gives the same output with the peak
activation memory of one chunk at inference. In training, autograd keeps every chunk's
activations for the backward pass unless ``with_cp`` checkpoints each chunk (its activations
are recomputed during the backward pass): then training too needs the memory of one chunk.
"""
from typing import Callable, Optional

import torch

__all__ = ['check_class_chunk_size', 'map_class_chunks', 'maybe_checkpoint']


def check_class_chunk_size(chunk_size: Optional[int]) -> Optional[int]:
    """Validate a class chunk size.

    Args:
        chunk_size (int, optional): classes per chunk; None for no chunking.

    Returns:
        int | None: ``chunk_size`` unchanged.

    Raises:
        ValueError: if ``chunk_size`` is not None and not a positive int.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f'class_chunk_size must be a positive int or None, got {chunk_size!r}')
    return chunk_size


def maybe_checkpoint(fn: Callable, *args, with_cp: bool = False):
    """``fn(*args)``, through activation checkpointing when ``with_cp`` and gradients are on."""
    if with_cp and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def map_class_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     chunk_size: Optional[int], dim: int = 2,
                     out_dim: Optional[int] = None, with_cp: bool = False) -> torch.Tensor:
    """Apply ``fn`` to chunks of ``x`` along the class axis and concatenate the results.

    ``fn`` must map a tensor with t classes on axis ``dim`` to a tensor with t classes on axis
    ``out_dim`` and act on every class independently; then the result equals ``fn(x)``.

    Args:
        fn (callable): per-class operation, e.g. (B, C, t, H, W) -> (B, C', t, H', W').
        x (torch.Tensor): input with the T classes on axis ``dim``, e.g. (B, C, T, H, W).
        chunk_size (int, optional): classes per chunk (the last chunk may be smaller);
            None, or a value >= T, calls ``fn(x)`` once. Validated where it is configured
            (:func:`check_class_chunk_size`).
        dim (int): class axis of the input.
        out_dim (int, optional): class axis of the output (default ``dim``).
        with_cp (bool): checkpoint every chunk (recompute its activations in backward).

    Returns:
        torch.Tensor: ``fn`` output for all T classes, concatenated along ``out_dim``.
    """
    if chunk_size is None or chunk_size >= x.shape[dim]:
        return maybe_checkpoint(fn, x, with_cp=with_cp)
    out_dim = dim if out_dim is None else out_dim
    # (..., T, ...) -> chunks (..., <=chunk_size, ...) -> fn -> concatenated (..., T, ...)
    return torch.cat([maybe_checkpoint(fn, chunk, with_cp=with_cp)
                      for chunk in x.split(chunk_size, dim=dim)], dim=out_dim)
