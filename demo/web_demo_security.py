"""What the web demo trusts, and how long and how many requests it runs (see docs/web_demo.md).

- :func:`upload_path`: the image a request names is read only if it lies in Gradio's upload
  folder (real path, after symlinks and ``..``); anything else gets :data:`NOT_AN_UPLOAD`, one
  message whatever the path is (an existing file, a missing one, a folder, an unreadable file), so
  the page is no oracle of the server's files.
- :class:`RequestGate`: one segmentation at a time, at most ``queue_size`` requests waiting (more
  get :class:`Busy`), each run stopped after ``timeout`` seconds (:class:`RequestTimeout`),
  checked at every module call of the model.
- :func:`release_memory`: after a run, what it held goes back to the system.
- :func:`blocked_out_dir`: ``--out-dir`` for Gradio's ``blocked_paths``.
"""
import ctypes
import ctypes.util
import gc
import os
import os.path as osp
import stat
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple

#: The one answer for an image path that is not an upload of the page (never says why).
NOT_AN_UPLOAD = 'the image is not a file uploaded to this page: upload it again'


class InputError(ValueError):
    """Bad input from the page; its message is shown there."""


class Refused(ValueError):
    """A request the page does not serve; its message is shown in the page."""


class Busy(Refused):
    """Too many requests are waiting for the model."""


class RequestTimeout(Refused):
    """A run took longer than the request time limit."""


def upload_path(image: Any, upload_dir: str) -> Tuple[Optional[str], Optional[str]]:
    """The real path and display name of the uploaded image a request names.

    Args:
        image: The request's image value, unprocessed: Gradio's file data (a dict with ``path``
            and optionally ``orig_name``), or None for no image.
        upload_dir (str): Gradio's upload folder (``gradio.utils.get_upload_folder()``).

    Returns:
        tuple: ``(path, name)``, both None when no image was given. ``path`` is a regular file
        inside the real ``upload_dir``, reached without a symlink; ``name`` is the client's file
        name (for messages only, never opened).

    Raises:
        Refused: With :data:`NOT_AN_UPLOAD` for anything else: a value that is not file data, a
            path outside the folder (absolute, ``..``, URL-encoded or through a symlink), a
            symlink, a folder, a missing or unreadable file. The message is the same in every
            case.
    """
    if image is None:
        return None, None
    if not isinstance(image, dict) or not isinstance(image.get('path'), str):
        raise Refused(NOT_AN_UPLOAD)
    path, name = image['path'], image.get('orig_name')
    if not path or '\x00' in path:
        raise Refused(NOT_AN_UPLOAD)
    root = osp.realpath(upload_dir)
    real = osp.realpath(osp.join(root, path))  # an absolute path replaces the root
    if osp.commonpath([root, real]) != root or real == root:
        raise Refused(NOT_AN_UPLOAD)
    try:  # the path as given must not be a symlink, even one into the folder
        given, found = os.lstat(osp.join(root, path)), os.stat(real)
    except (OSError, ValueError):
        raise Refused(NOT_AN_UPLOAD) from None
    if stat.S_ISLNK(given.st_mode) or not stat.S_ISREG(found.st_mode) \
            or not os.access(real, os.R_OK):
        raise Refused(NOT_AN_UPLOAD)
    name = name if isinstance(name, str) and name.strip() else osp.basename(real)
    return real, osp.basename(name)[:200]


class RequestGate:
    """One run at a time, a bounded number waiting, and a time limit for each run.

    Args:
        model (torch.nn.Module): The model; a forward pre-hook on each of its modules stops a run
            that is over its time limit.
        timeout (float): Seconds a run may use the model, from when it leaves the queue.
        queue_size (int): Requests that may wait while one runs; more are refused with
            :class:`Busy`.
    """

    def __init__(self, model, timeout: float = 120.0, queue_size: int = 8) -> None:
        if timeout <= 0 or queue_size < 0:
            raise ValueError(f'timeout must be > 0 and queue_size >= 0, got {timeout} and '
                             f'{queue_size}')
        self.timeout = timeout
        self.queue_size = queue_size
        self._model_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._inside = 0  # running + waiting
        self._deadline: Optional[float] = None
        for module in model.modules():
            module.register_forward_pre_hook(self._check_time)

    @property
    def waiting(self) -> int:
        """Requests admitted but not yet running (or just finishing)."""
        return max(self._inside - 1, 0)

    def _check_time(self, module, args) -> None:
        deadline = self._deadline
        if deadline is not None and time.monotonic() > deadline:
            raise RequestTimeout(self.timeout_message())

    def timeout_message(self) -> str:
        """The message of a run over the limit."""
        return (f'the segmentation took longer than the {self.timeout:g} s limit of this page '
                'and was stopped: try a smaller image, fewer classes or the whole mode')

    def check_time(self) -> None:
        """Raise :class:`RequestTimeout` if the current run is over its limit."""
        self._check_time(None, None)

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place in the queue (:class:`Busy` if there is none) until the block ends."""
        with self._count_lock:
            if self._inside > self.queue_size:
                raise Busy(f'the server is busy ({self._inside} requests are running or waiting):'
                           ' try again in a moment')
            self._inside += 1
        try:
            yield
        finally:
            with self._count_lock:
                self._inside -= 1

    @contextmanager
    def run(self) -> Iterator[None]:
        """Wait for the model, then time the block (only inside :meth:`admit`)."""
        with self._model_lock:
            self._deadline = time.monotonic() + self.timeout
            try:
                yield
            finally:
                self._deadline = None


def blocked_out_dir(out_dir: Optional[str], label_dir: str) -> List[str]:
    """``[out_dir]`` for Gradio's ``blocked_paths``, unless it holds the folders the page needs.

    Raises:
        ValueError: ``out_dir`` is inside Gradio's upload folder (its files could be served).
    """
    from gradio.utils import get_upload_folder, is_in_or_equal
    if not out_dir:
        return []
    uploads = get_upload_folder()
    if is_in_or_equal(label_dir, out_dir) or is_in_or_equal(uploads, out_dir):
        return []  # e.g. --out-dir /tmp: Gradio serves none of it outside its own folder
    if is_in_or_equal(out_dir, uploads):
        raise ValueError(f'--out-dir {out_dir} is inside Gradio\'s upload folder {uploads}, '
                         'whose files are served: choose another folder')
    return [osp.realpath(out_dir)]


def release_memory() -> None:
    """Collect garbage and give freed heap pages back to the system (glibc's ``malloc_trim``)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, 'malloc_trim') else None
    except OSError:
        return None


_LIBC = _load_libc()
