"""Work that every rank of a distributed run needs but only one should do: rank 0 first.

A download into a shared cache, or the conversion of downloaded weights, is done by rank 0 while
the other ranks wait; then by the local rank 0 of every other node (whose cache may not be
shared); then the remaining ranks find the result (:func:`rank_zero_first`). Errors are exchanged
after every turn, so that a failure is one clear error on every rank rather than a hang or the
same download by every rank. Without ``torch.distributed`` it is a plain call.
"""
import os
import pickle
from typing import Any, Callable, Dict, Optional, TypeVar

from mmengine.dist import all_gather_object, get_dist_info

__all__ = ['rank_zero_first']

T = TypeVar('T')


def _local_rank(rank: int) -> int:
    try:
        from mmengine.dist import get_local_rank
        return get_local_rank()
    except RuntimeError:  # no local process group (e.g. a gloo group created by the tools)
        return int(os.environ.get('LOCAL_RANK', rank))


def _shareable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (to send it to other ranks), else a RuntimeError."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # e.g. an exception class whose __init__ needs other arguments
        return RuntimeError(f'{type(error).__name__}: {error}')
    return error


def rank_zero_first(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` once on every rank, rank 0 first.

    Without ``torch.distributed`` this is a plain call. In a distributed run every rank must call
    it: rank 0 runs ``fn`` while the others wait; then the local rank 0 of every other node
    (whose cache may not be shared), then the remaining ranks, which find rank 0's result in the
    cache. After each turn the ranks exchange their errors (``all_gather_object``). If rank 0
    failed, or the local rank 0 of a rank's node, the rank does not call ``fn`` itself but raises
    that error (with a note naming the rank it came from), so that a failure is one clear error on
    every rank rather than a download by every rank. No rank waits forever for another.

    Args:
        fn (Callable): The work, e.g. a download into the cache.
        *args: Positional arguments of ``fn``.
        **kwargs: Keyword arguments of ``fn``; a ``progress`` argument is turned off except on
            rank 0.

    Returns:
        The value ``fn`` returned on this rank.
    """
    rank, world_size = get_dist_info()
    if world_size == 1:
        return fn(*args, **kwargs)
    if 'progress' in kwargs:
        kwargs['progress'] = kwargs['progress'] and rank == 0
    local_rank = _local_rank(rank)
    leaders = (0, rank - local_rank)  # ranks of a node are consecutive (as torchrun numbers them)
    result: Any = None
    error: Optional[BaseException] = None
    failed: Dict[int, BaseException] = {}
    for turn in (rank == 0, rank != 0 and local_rank == 0, rank != 0 and local_rank != 0):
        report = None
        if turn and error is None:
            try:
                result = fn(*args, **kwargs)
            except Exception as err:  # shared with the other ranks, raised below
                error = err
                report = _shareable(err)
        for other, reported in enumerate(all_gather_object(report)):
            if reported is not None:
                failed.setdefault(other, reported)
        leader = next((r for r in leaders if r in failed and r != rank), None)
        if error is None and leader is not None:
            error = failed[leader]
            if hasattr(error, 'add_note'):  # Python >= 3.11
                error.add_note(f'(raised on rank {leader}, which did this for rank {rank}; rank '
                               f'{rank} did not try again)')
    if error is not None:
        raise error
    return result
