"""Run a per-class operation on chunks of the class axis to bound peak memory.

Cost-volume models process every class slice with the same spatial network (Swin blocks,
U-Net decoder) by folding the class axis into the batch, so activations grow linearly with
the number of classes T.  When the operation treats classes independently, running it on
chunks of classes and concatenating the results gives the same output with the peak
activation memory of one chunk at inference. In training, autograd keeps every chunk's
activations for the backward pass unless ``with_cp`` checkpoints each chunk (its activations
are recomputed during the backward pass): then training too needs the memory of one chunk.

The tensors are in the cost-volume layout (B, C, T, h, w) of
:mod:`mmseg_escnet.models.structures`; :func:`on_class_maps` runs a 2-D operation on every class
map by folding the class axis into the batch, images major.

**Inference on CPU works in chunks by default.** Given the bytes of the widest activation of
one item (``item_bytes``: one class of a Swin block or of the decoder, one pixel of the class
attention), :func:`map_class_chunks` cuts the work into chunks whose widest activation stays under
``INFERENCE_CHUNK_BYTES`` when autograd is off and the tensors are on the CPU. Every activation of a
whole-vocabulary pass is tens to hundreds of MB; glibc serves each with a fresh ``mmap`` whose pages
the kernel faults in and zeroes one by one (a third of the CPU time of CAT-Seg B at 150 classes),
while chunks under its 32 MB ``mmap`` ceiling reuse the heap. The result equals the unchunked one up
to float rounding, with a lower peak memory (docs/efficiency.md, "Inference in chunks"). Training,
GPUs and traced (ONNX) graphs keep whole passes unless ``class_chunk_size`` asks otherwise.
"""
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ['check_class_chunk_size', 'map_class_chunks', 'maybe_checkpoint', 'fold_classes',
           'unfold_classes', 'on_class_maps', 'inference_chunk_size', 'class_bytes',
           'INFERENCE_CHUNK_BYTES']

#: Widest activation of one chunk at inference on CPU, in bytes (0: no automatic chunking).
#: Chosen on CAT-Seg B (docs/efficiency.md, "Inference in chunks").
INFERENCE_CHUNK_BYTES = 8 * 2**20


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


def inference_chunk_size(chunk_size: Optional[int], item_bytes: Optional[int],
                         x: Tensor) -> Optional[int]:
    """Items per chunk: ``chunk_size``, or fewer at inference on CPU (module docstring).

    Args:
        chunk_size (int, optional): the configured chunk size (None: no limit).
        item_bytes (int, optional): bytes of the widest activation of one item; None: only
            ``chunk_size`` applies.
        x (Tensor): an input of the work (its device decides).

    Returns:
        int | None: the chunk size to use.
    """
    if (item_bytes is None or INFERENCE_CHUNK_BYTES <= 0 or torch.is_grad_enabled()
            or x.device.type != 'cpu' or torch.jit.is_tracing()):  # an exported graph stays whole
        return chunk_size
    auto = max(1, INFERENCE_CHUNK_BYTES // max(1, item_bytes))
    return auto if chunk_size is None else min(chunk_size, auto)


def class_bytes(x: Tensor, factor: float = 1) -> int:
    """``factor`` times the bytes of one class of a (B, C, T, h, w) tensor (all B images)."""
    b, c, _, h, w = x.shape
    return int(factor * b * c * h * w * x.element_size())


def maybe_checkpoint(fn: Callable, *args, with_cp: bool = False):
    """``fn(*args)``, through activation checkpointing when ``with_cp`` and gradients are on."""
    if with_cp and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def fold_classes(x: Tensor) -> Tensor:
    """Fold the class axis into the batch: (B, C, T, h, w) -> (B*T, C, h, w), images major."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def unfold_classes(x: Tensor, batch: int) -> Tensor:
    """Undo :func:`fold_classes`: (B*T, C, h, w) -> (B, C, T, h, w) for ``batch`` = B."""
    return x.view(batch, -1, *x.shape[1:]).transpose(1, 2)


def on_class_maps(fn: Callable[..., Tensor], *xs: Tensor) -> Tensor:
    """Run a 2-D operation on every class map of cost-layout tensors.

    Args:
        fn (callable): maps (B*T, C_i, h_i, w_i) tensors, images major, to one
            (B*T, C', h', w') tensor, e.g. a convolution.
        *xs (Tensor): (B, C_i, T, h_i, w_i) each, the same B and T.

    Returns:
        Tensor: (B, C', T, h', w').
    """
    # (B, C_i, T, h_i, w_i) -> (B*T, C_i, h_i, w_i) -> fn -> (B*T, C', h', w') -> (B, C', T, h', w')
    return unfold_classes(fn(*[fold_classes(x) for x in xs]), xs[0].shape[0])


def map_class_chunks(fn: Callable[..., Tensor], x: Union[Tensor, Sequence[Tensor]],
                     chunk_size: Optional[int], dim: int = 2,
                     out_dim: Optional[int] = None, with_cp: bool = False,
                     item_bytes: Optional[int] = None) -> Tensor:
    """Apply ``fn`` to chunks of ``x`` along the class axis and concatenate the results.

    ``fn`` must map tensors with t classes on axis ``dim`` to a tensor with t classes on axis
    ``out_dim`` and act on every class independently; then the result equals ``fn(x)``. The axis
    may hold any independent items (the class attention chunks pixels).

    Args:
        fn (callable): per-class operation, e.g. (B, C, t, H, W) -> (B, C', t, H', W'); given a
            sequence ``x``, it takes one chunk of each of its tensors.
        x (Tensor | Sequence[Tensor]): input(s) with the T classes on axis ``dim``, e.g.
            (B, C, T, H, W) (the same T in all).
        chunk_size (int, optional): classes per chunk (the last chunk may be smaller);
            None, or a value >= T, calls ``fn`` once. Validated where it is configured
            (:func:`check_class_chunk_size`).
        dim (int): class axis of the input(s).
        out_dim (int, optional): class axis of the output (default ``dim``).
        with_cp (bool): checkpoint every chunk (recompute its activations in backward).
        item_bytes (int, optional): bytes of ``fn``'s widest activation per class; at inference
            on CPU the chunks stay under ``INFERENCE_CHUNK_BYTES`` (:func:`inference_chunk_size`).

    Returns:
        Tensor: ``fn`` output for all T classes, concatenated along ``out_dim``.
    """
    xs = (x, ) if isinstance(x, Tensor) else tuple(x)
    chunk_size = inference_chunk_size(chunk_size, item_bytes, xs[0])
    if chunk_size is None or chunk_size >= xs[0].shape[dim]:
        return maybe_checkpoint(fn, *xs, with_cp=with_cp)
    out_dim = dim if out_dim is None else out_dim
    # (..., T, ...) -> chunks (..., <=chunk_size, ...) -> fn -> concatenated (..., T, ...)
    chunks = zip(*[t.split(chunk_size, dim=dim) for t in xs])
    return torch.cat([maybe_checkpoint(fn, *chunk, with_cp=with_cp) for chunk in chunks],
                     dim=out_dim)
