"""The pixel limit of image files, checked from their header before anything is decoded.

A few kilobytes of PNG or Radiance HDR can decode to gigabytes (a 32000 x 32000 grayscale PNG of
1 MB needs 3 GB as the BGR array the model takes, and more while decoding). So
:func:`~.image_io.read_image` reads the width and height from the file's header with Pillow's lazy
``Image.open`` (which parses the header only) and refuses a file above the limit before OpenCV
decodes it.

Formats: the ones OpenCV decodes and Pillow can size from the header, :data:`HEADER_FORMATS`
(PNG, JPEG, BMP, TIFF, WebP, JPEG 2000, Sun raster, PBM/PGM/PPM). Files in other formats OpenCV
would decode (Radiance ``.hdr``, OpenEXR, PAM, PFM...) are **refused** under a limit, since
their size is only known after decoding; convert them, or disable the limit for files you trust.
After decoding, the array's size is checked again (a header that lies cannot get past).

:data:`MAX_IMAGE_PIXELS` is the one default: ``read_image``, ``OpenVocabInferencer``
(``max_pixels``), ``demo/image_demo.py`` and ``tools/deployment/pytorch2onnx.py``
(``--max-pixels``) use it.
"""
import os
import re
from typing import Optional, Tuple

#: Default limit on the pixels (width x height) of an image file: larger files are not decoded.
MAX_IMAGE_PIXELS = 40_000_000

#: Pillow formats whose header gives the size and which OpenCV decodes.
HEADER_FORMATS = ('PNG', 'JPEG', 'BMP', 'DIB', 'TIFF', 'WEBP', 'JPEG2000', 'SUN', 'PPM')

# Formats OpenCV decodes but whose size is not read here, by their first bytes (for the message).
_HEADERLESS = ((b'#?RADIANCE', 'a Radiance HDR image'), (b'#?RGBE', 'a Radiance HDR image'),
               (b'v/1\x01', 'an OpenEXR image'), (b'PF', 'a PFM image'), (b'Pf', 'a PFM image'),
               (b'P7', 'a PAM image'))


def check_max_pixels(max_pixels: Optional[int], what: str = 'max_pixels') -> Optional[int]:
    """Validate a pixel limit.

    Args:
        max_pixels (int, optional): A positive int, or None for no limit.
        what (str): The argument's name, for the message.

    Returns:
        int | None: ``max_pixels``.

    Raises:
        ValueError: Not None and not a positive int.
    """
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                   or max_pixels < 1):
        raise ValueError(f'{what} must be a positive int or None (no limit), got {max_pixels!r}')
    return max_pixels


def header_size(path: str) -> Tuple[str, int]:
    """The size of an image file, read from its header only.

    Args:
        path (str): The file.

    Returns:
        Tuple[str, int]: A description such as ``'32000 x 32000 = 1,024,000,000 pixels'`` and the
        pixel count.

    Raises:
        ValueError: The size cannot be read from the header (not one of :data:`HEADER_FORMATS`);
            the message says what the file seems to be.
    """
    from PIL import Image
    try:
        with Image.open(path, formats=HEADER_FORMATS) as image:  # parses the header only
            width, height = image.size
        return f'{width} x {height} = {width * height:,} pixels', width * height
    except Image.DecompressionBombError as err:  # Pillow's own limit: it names the pixel count
        found = re.search(r'\((\d+) pixels\)', str(err))
        if found:
            pixels = int(found.group(1))
            return f'{pixels:,} pixels', pixels
        raise ValueError(f'cannot read the size of image file {path}: {err}') from None
    except Exception:  # noqa: BLE001 - Pillow raises several types for unknown files
        pass
    with open(path, 'rb') as f:
        head = f.read(16)
    kind = next((k for magic, k in _HEADERLESS if head.startswith(magic)), None)
    formats = 'PNG, JPEG, BMP, TIFF, WebP, JPEG 2000, Sun raster, PBM/PGM/PPM'
    if kind is None:
        raise ValueError(f'cannot decode image file {path}: it is not an image in a format whose '
                         f'size can be read from its header ({formats}), or it is truncated')
    raise ValueError(
        f'cannot decode image file {path}: it is {kind}, whose size is only known after decoding '
        f'it, so it is refused under the pixel limit (a small file can decode to gigabytes); '
        f'convert it to one of {formats}, or disable the limit for files you trust '
        f'(max_pixels=None, --max-pixels 0)')


def too_large(path: str, size: str, max_pixels: int) -> ValueError:
    """The error for an image file above the pixel limit."""
    return ValueError(f'image file {path} is {size}, more than the limit of {max_pixels:,} '
                      f'pixels; shrink it first, or raise the limit (max_pixels=, --max-pixels)')


def check_image_file(path: 'os.PathLike[str] | str', max_pixels: Optional[int]) -> Optional[int]:
    """Refuse an image file whose header says it has more than ``max_pixels`` pixels.

    Args:
        path (str | os.PathLike): An existing, non-empty file.
        max_pixels (int, optional): The limit; None checks nothing.

    Returns:
        int | None: The pixel count from the header (None when not checked).

    Raises:
        ValueError: The size cannot be read from the header (see :func:`header_size`), or it is
            above the limit; the message names the file, its size and the limit.
    """
    if check_max_pixels(max_pixels) is None:
        return None
    path = os.fspath(path)
    size, pixels = header_size(path)
    if pixels > max_pixels:
        raise too_large(path, size, max_pixels)
    return pixels
