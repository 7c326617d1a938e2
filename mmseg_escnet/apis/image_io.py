"""Robust image input and label-map output for inference.

Every image that reaches the model is a ``uint8`` array of shape ``(H, W, 3)`` in **BGR** order, the
OpenMMLab convention (what :func:`mmcv.imread` and ``cv2.imread`` return, and what mmseg's test
pipeline and ``SegDataPreProcessor(bgr_to_rgb=True)`` expect). The conversions applied on the way:

==========================  =====================================================================
input                       conversion
==========================  =====================================================================
``(H, W)``, ``(H, W, 1)``   grayscale: the channel is repeated three times
``(H, W, 4)``               the fourth (alpha) channel is **dropped**; transparency is not
                            composited on any background, the colour channels are kept as stored
``uint16``                  scaled over its full range to 8 bits: ``round(x / 257)``
                            (65535 -> 255, and ``v * 257 -> v`` exactly); a warning is emitted
                            when the maximum is below 4096 (e.g. 12-bit data stored in 16 bits),
                            which comes out dark (see :data:`DARK_UINT16_MAX`)
``float16/32/64``           must lie in ``[0, 1]``: ``round(x * 255)``
anything else               ``ValueError`` naming the dtype (bool, int32, complex, ...)
==========================  =====================================================================

Arrays keep their channel order: an array given by a user is taken to be BGR, like the output of
``cv2.imread``. An RGB array (PIL, matplotlib, imageio) must be flipped first
(``rgb[..., ::-1]``), or the file read through :func:`read_image`. Files are decoded with OpenCV,
so EXIF orientation is applied and 16-bit PNG/TIFF keep their depth until the conversion above.
OpenCV refuses images of more than ``OPENCV_IO_MAX_IMAGE_PIXELS`` pixels (2**30 by default, read
once when OpenCV is loaded); :func:`read_image` reports this as a ``ValueError`` naming the file.
Before that, :func:`read_image` refuses files above :data:`MAX_IMAGE_PIXELS` (40 Mpixels by
default, its ``max_pixels`` argument) from their header, without decoding them; formats whose size
is unknown before decoding (Radiance HDR, OpenEXR...) are refused under a limit
(:mod:`.image_limits`).
"""
import os
import os.path as osp
import warnings
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np

from .image_limits import MAX_IMAGE_PIXELS, check_image_file, header_size, too_large

PathLike = Union[str, 'os.PathLike[str]']

#: File suffixes (lower case) treated as images when a folder is given.
IMAGE_SUFFIXES = ('.bmp', '.jpeg', '.jpg', '.jp2', '.pbm', '.pgm', '.png', '.ppm', '.tif', '.tiff',
                  '.webp')

#: A ``uint16`` image whose maximum is below this value (12-bit data or less) is dark after the
#: documented ``x / 257`` scaling; :func:`to_bgr_uint8` warns about it.
DARK_UINT16_MAX = 4096

#: OpenCV's environment variable limiting the pixels of a decoded image, and its default.
OPENCV_PIXEL_LIMIT_ENV = 'OPENCV_IO_MAX_IMAGE_PIXELS'
OPENCV_DEFAULT_PIXEL_LIMIT = 1 << 30

_CHANNELS = (1, 3, 4)


def to_bgr_uint8(image: np.ndarray, name: str = 'image array') -> np.ndarray:
    """Convert an image array to the ``(H, W, 3)`` ``uint8`` layout the model expects.

    The channel order is not changed (see the module docstring: arrays are BGR).

    Args:
        image (np.ndarray): ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; ``uint8``,
            ``uint16`` or float in ``[0, 1]``.
        name (str): What the array is (a file name, ``'input 3'``), for error messages.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``, C-contiguous (a new array unless ``image`` already
        had this layout).

    Raises:
        TypeError: ``image`` is not a NumPy array.
        ValueError: Unsupported shape or dtype, an empty image, or float values outside ``[0, 1]``.

    Warns:
        UserWarning: A ``uint16`` image whose maximum is below :data:`DARK_UINT16_MAX`: it is still
        scaled by ``1 / 257`` (the result is dark); rescale it yourself and pass ``uint8``.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f'{name}: expected a numpy array, got {type(image).__name__}')
    shape, dtype = tuple(image.shape), image.dtype
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _CHANNELS:
        raise ValueError(f'{name}: expected an image of shape (H, W), (H, W, 1), (H, W, 3) or '
                         f'(H, W, 4), got shape {shape} (dtype {dtype})')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'{name}: the image is empty, shape {shape}')

    if dtype == np.uint8:
        pass
    elif dtype == np.uint16:
        _warn_if_dark_uint16(image, name)
        # Full-range scaling; integer arithmetic rounds half up: (x + 128) // 257.
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif dtype in (np.float16, np.float32, np.float64):
        finite = np.isfinite(image)
        low, high = (float(image.min()), float(image.max())) if finite.all() else (None, None)
        if low is None or low < 0.0 or high > 1.0:
            found = 'non-finite values' if low is None else f'values in [{low:g}, {high:g}]'
            raise ValueError(f'{name}: float images must hold values in [0, 1], found {found} '
                             f'(shape {shape}, dtype {dtype}); scale it or convert it to uint8')
        image = np.rint(image.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        raise ValueError(f'{name}: unsupported dtype {dtype} (shape {shape}); expected uint8, '
                         'uint16 or float in [0, 1]')

    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]  # alpha dropped
    return np.ascontiguousarray(image)


def _warn_if_dark_uint16(image: np.ndarray, name: str) -> None:
    """Warn when a ``uint16`` image uses less than 12 bits: ``x / 257`` makes it nearly black."""
    peak = int(image.max())
    if peak < DARK_UINT16_MAX:
        warnings.warn(
            f'{name}: 16-bit image with maximum value {peak} < {DARK_UINT16_MAX} (12-bit or '
            f'lower-depth data stored in uint16?); it is scaled by 1/257 over the full 16-bit '
            f'range as documented, so it is dark after scaling (maximum {round(peak / 257)} of '
            f'255) and predictions may suffer. To use its actual range, pass an 8-bit array '
            f'rescaled yourself instead, e.g. '
            f'np.round(image * (255 / image.max())).astype(np.uint8)',
            UserWarning, stacklevel=3)


def opencv_pixel_limit() -> int:
    """OpenCV's limit on the pixels of a decoded image.

    Returns:
        int: ``$OPENCV_IO_MAX_IMAGE_PIXELS`` if set to an integer, else 2**30. OpenCV reads the
        variable once, when it is loaded: this is the value in force if it was set before that.
    """
    try:
        return int(os.environ.get(OPENCV_PIXEL_LIMIT_ENV, OPENCV_DEFAULT_PIXEL_LIMIT))
    except ValueError:
        return OPENCV_DEFAULT_PIXEL_LIMIT


def _header_size(path: str) -> Optional[str]:
    """The size of an image file from its header (e.g. ``'40000 x 30000 = ... pixels'``), or None
    when it cannot be read; only used to enrich an error message."""
    try:
        return header_size(path)[0]
    except Exception:  # noqa: BLE001 - best effort
        return None


def _decode_error(path: str, err: Exception) -> ValueError:
    """A ``ValueError`` naming the file for an OpenCV decoding failure."""
    text = ' '.join(str(err).split())
    if 'MAX_IMAGE_PIXELS' in text or 'validateInputImageSize' in text:
        size = _header_size(path)
        return ValueError(
            f'cannot decode image file {path}: it is larger ({size or "size unknown"}) than '
            f'OpenCV\'s limit of {opencv_pixel_limit()} pixels; raise the limit by setting the '
            f'environment variable {OPENCV_PIXEL_LIMIT_ENV} (e.g. to {1 << 40}) before OpenCV is '
            f'imported, or shrink the image first')
    return ValueError(f'cannot decode image file {path}: OpenCV failed ({text})')


def read_image(path: PathLike, max_pixels: Optional[int] = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as a ``(H, W, 3)`` ``uint8`` BGR array.

    Grayscale, RGBA/palette, 16-bit and float files are converted as described in the module
    docstring. Non-ASCII paths work (the bytes are read by Python and decoded by OpenCV).

    Args:
        path (str | os.PathLike): The image file.
        max_pixels (int, optional): Files whose header gives more pixels are refused before they
            are decoded (default :data:`MAX_IMAGE_PIXELS`); so are files whose size cannot be read
            from the header (see :mod:`.image_limits`). None: no limit but OpenCV's.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8``, BGR.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        ValueError: The file cannot be decoded as an image, holds an unsupported format, has more
            pixels than ``max_pixels`` or its size cannot be read from its header (the message
            names the file, its size and the limit), or has more pixels than OpenCV's limit (the
            message names ``OPENCV_IO_MAX_IMAGE_PIXELS``).
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        what = 'is a folder, not an image file' if osp.isdir(path) else 'not found'
        raise FileNotFoundError(f'image file {path} {what}')
    if osp.getsize(path) == 0:
        raise ValueError(f'cannot decode image file {path}: it is empty')
    check_image_file(path, max_pixels)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ValueError(f'cannot read image file {path}: {err}') from err
    # ANYDEPTH keeps 16-bit and float data; ANYCOLOR keeps grayscale as one channel; OpenCV drops
    # alpha here (it would be dropped below anyway); EXIF orientation is applied.
    try:
        image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if data.size else None
    except cv2.error as err:
        raise _decode_error(path, err) from err
    if image is None:
        raise ValueError(f'cannot decode image file {path}: it is empty, truncated or not an image '
                         'in a format OpenCV reads')
    height, width = image.shape[:2]
    if max_pixels is not None and height * width > max_pixels:  # a header that did not tell
        raise too_large(path, f'{width} x {height} = {width * height:,} pixels', max_pixels)
    return to_bgr_uint8(image, name=f'image file {path}')


def list_images(folder: PathLike) -> List[str]:
    """The image files of a folder (not recursive), sorted by name.

    Args:
        folder (str | os.PathLike): A folder.

    Returns:
        List[str]: Paths ``folder/<name>`` whose suffix is in :data:`IMAGE_SUFFIXES` (any case).

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or holds no image file.
    """
    folder = os.fspath(folder)
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder {folder} not found')
    names = sorted(n for n in os.listdir(folder)
                   if osp.splitext(n)[1].lower() in IMAGE_SUFFIXES
                   and osp.isfile(osp.join(folder, n)))
    if not names:
        raise FileNotFoundError(f'image folder {folder} holds no image file (suffixes '
                                f'{", ".join(IMAGE_SUFFIXES)})')
    return [osp.join(folder, n) for n in names]


def shrink_to_max_side(image: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """Shrink an image (area interpolation) so that its longer side is at most ``max_side``.

    Args:
        image (np.ndarray): ``(H, W, C)`` or ``(H, W)``.
        max_side (int, optional): Limit of ``max(H, W)``; None returns ``image`` unchanged.

    Returns:
        np.ndarray: ``image`` itself if small enough, else ``(h, w[, C])`` with
        ``max(h, w) == max_side`` and the aspect ratio kept (each side at least 1).
    """
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 takes (W, H)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def resize_label_map(label_map: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map (OpenCV's rule: ``src = floor(dst * src_size /
    dst_size)``), for any integer dtype.

    When enlarging, every source pixel keeps at least one target pixel, so the set of classes
    present is unchanged.

    Args:
        label_map (np.ndarray): ``(h, w)`` class ids.
        shape (Tuple[int, int]): Target ``(H, W)``.

    Returns:
        np.ndarray: ``(H, W)``, same dtype (``label_map`` itself when the size already matches).
    """
    height, width = label_map.shape
    if (height, width) == tuple(shape):
        return label_map
    rows = np.arange(shape[0]) * height // shape[0]
    cols = np.arange(shape[1]) * width // shape[1]
    return label_map[np.ix_(rows, cols)]


def label_map_dtype(num_classes: int) -> type:
    """The PNG dtype able to hold class ids ``0 .. num_classes - 1``.

    Args:
        num_classes (int): Size of the vocabulary T.

    Returns:
        type: ``np.uint8`` for T <= 256, ``np.uint16`` for T <= 65536.

    Raises:
        ValueError: T < 1 or T > 65536.
    """
    if num_classes < 1 or num_classes > 65536:
        raise ValueError(f'a PNG label map holds 1 to 65536 classes, got {num_classes}')
    return np.uint8 if num_classes <= 256 else np.uint16


def encode_to_file(path: str, image: np.ndarray, what: str) -> str:
    """Write ``image`` in the format of ``path``'s suffix; the one image writer of the package.

    Parent folders are created; non-ASCII paths work (OpenCV encodes, NumPy writes the bytes).

    Args:
        path (str): Output file (``.png``, ``.jpg``, ...).
        image (np.ndarray): What OpenCV's ``imencode`` takes (BGR channel order).
        what (str): What is written, for the messages.

    Returns:
        str: ``path``.

    Raises:
        ValueError: OpenCV cannot encode ``image`` in that format.
        OSError: The file cannot be written.
    """
    folder = osp.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    ok, encoded = cv2.imencode(osp.splitext(path)[1], image)
    if not ok:
        raise ValueError(f'could not encode {what} for {path}')
    encoded.tofile(path)
    return path


def write_label_map(path: PathLike, label_map: np.ndarray, num_classes: int) -> str:
    """Write a label map as a lossless single-channel PNG.

    Args:
        path (str | os.PathLike): Output file; must end in ``.png``. Parent folders are created.
        label_map (np.ndarray): ``(H, W)`` integer class ids in ``[0, num_classes)``.
        num_classes (int): Size of the vocabulary; picks ``uint8`` (<= 256) or ``uint16``.

    Returns:
        str: ``path``.

    Raises:
        ValueError: Not a ``.png`` path, not a 2-D integer map, ids out of range, or writing failed.
    """
    path = os.fspath(path)
    if osp.splitext(path)[1].lower() != '.png':
        raise ValueError(f'label maps are written as PNG (lossless); {path} does not end in .png')
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f'label map for {path} must be a 2-D integer array, got shape '
                         f'{label_map.shape} and dtype {label_map.dtype}')
    dtype = label_map_dtype(num_classes)
    if label_map.size and (label_map.min() < 0 or label_map.max() >= num_classes):
        raise ValueError(f'label map for {path} holds ids in [{label_map.min()}, '
                         f'{label_map.max()}], outside [0, {num_classes})')
    return encode_to_file(path, label_map.astype(dtype), 'the label map')
