"""Colours for any vocabulary size, label-map overlays and a legend of the classes present.

All images here are **RGB** ``uint8`` arrays (``(H, W, 3)``); label maps are ``(H, W)`` integer
class ids in ``[0, T)`` for a vocabulary of T classes. The palette depends only on T (class ``i``
always gets colour ``i``), so a label map can be re-coloured without the vocabulary.

Legend text is drawn with OpenCV's Hershey font when it is ASCII; a class name with other
characters (any script) is drawn with a TrueType font through Pillow (:mod:`.legend_text`: the
fonts tried, and the visible fallback with a warning when none covers a character).

Large images: colouring, blending and counting go through bands of rows (about
:data:`BAND_PIXELS` pixels each), so beyond the inputs and the output only band-sized temporaries
are allocated; :func:`render_segmentation` blends straight into its canvas.
"""
import colorsys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import legend_text

_GOLDEN = 0.618033988749895
# (saturation, value) levels, cycled every few classes so that classes with close hues differ in
# brightness; none is grey (s >= 0.45), so colours never collide with legend text and borders.
_LEVELS = ((0.85, 0.95), (0.60, 0.70), (1.00, 0.55), (0.45, 0.90), (0.95, 0.80), (0.70, 0.45))
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)

#: Pixels per band of rows processed at once (bounds the temporaries of large images).
BAND_PIXELS = 1 << 18


@dataclass(frozen=True)
class LegendEntry:
    """One row of the legend: a class present in a label map.

    Attributes:
        index (int): Class id (channel of the logits).
        name (str): Display name.
        color (Tuple[int, int, int]): RGB colour in the palette.
        fraction (float): Share of the label map's pixels, in ``(0, 1]``.
    """

    index: int
    name: str
    color: Tuple[int, int, int]
    fraction: float


def make_palette(num_classes: int) -> np.ndarray:
    """A deterministic palette of pairwise distinct colours.

    Hues follow the golden-ratio sequence (consecutive classes are far apart on the colour wheel);
    saturation and brightness cycle through a few levels. Any collision after rounding to 8 bits is
    resolved deterministically, so the colours are distinct for every ``num_classes <= 2**24``.

    Args:
        num_classes (int): T >= 1.

    Returns:
        np.ndarray: ``(T, 3)`` ``uint8`` RGB colours; row ``i`` is the colour of class ``i`` and
        does not depend on T.

    Raises:
        ValueError: T < 1 or T > 2**24.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or not 1 <= num_classes <= 2**24:
        raise ValueError(f'num_classes must be an int in [1, 2**24], got {num_classes!r}')
    palette = np.empty((num_classes, 3), dtype=np.uint8)
    used = set()
    fallback = 0  # next candidate of the exhaustive search, used only after many collisions
    for i in range(num_classes):
        sat, val = _LEVELS[(i // 5) % len(_LEVELS)]
        rgb = colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, sat, val)
        color = tuple(int(round(c * 255)) for c in rgb)
        step = 0
        while color in used:
            step += 1
            if step <= 256:  # deterministic walk through nearby-looking colours
                color = ((color[0] + 37) % 256, (color[1] + 91) % 256, (color[2] + 53) % 256)
            else:
                while (fallback >> 16, (fallback >> 8) & 255, fallback & 255) in used:
                    fallback += 1
                color = (fallback >> 16, (fallback >> 8) & 255, fallback & 255)
        used.add(color)
        palette[i] = color
    return palette


def _check_label_map(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Validate a label map against a palette size; returns it as an integer array."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f'label map must be a 2-D integer array (H, W), got shape '
                         f'{label_map.shape} and dtype {label_map.dtype}')
    if label_map.size and (label_map.min() < 0 or label_map.max() >= num_classes):
        raise ValueError(f'label map holds ids in [{label_map.min()}, {label_map.max()}], but the '
                         f'palette has {num_classes} colours')
    return label_map


def _check_palette(palette: np.ndarray) -> np.ndarray:
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) == 0:
        raise ValueError(f'palette must have shape (T, 3) with T >= 1, got {palette.shape}')
    return palette.astype(np.uint8)


def _row_bands(height: int, width: int) -> List[slice]:
    """Row slices of bands of about :data:`BAND_PIXELS` pixels (at least one row each)."""
    step = max(1, BAND_PIXELS // max(1, width))
    return [slice(top, top + step) for top in range(0, height, step)]


def class_pixel_counts(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class in a label map, counted band by band (no full-size temporary).

    Args:
        label_map (np.ndarray): ``(H, W)`` integer class ids in ``[0, T)``.
        num_classes (int): T.

    Returns:
        np.ndarray: ``(T,)`` ``int64`` counts.

    Raises:
        ValueError: An id is negative or not below T.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for rows in _row_bands(*label_map.shape):
        band_counts = np.bincount(label_map[rows].ravel(), minlength=num_classes)
        if len(band_counts) > num_classes:
            raise ValueError(f'label map holds class id {len(band_counts) - 1}, expected ids in '
                             f'[0, {num_classes})')
        counts += band_counts
    return counts


def colorize(label_map: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Paint every pixel with its class colour.

    Args:
        label_map (np.ndarray): ``(H, W)`` class ids in ``[0, T)``.
        palette (np.ndarray): ``(T, 3)`` RGB colours.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8`` RGB.

    Raises:
        ValueError: Bad shapes or ids outside the palette.
    """
    palette = _check_palette(palette)
    label_map = _check_label_map(label_map, len(palette))
    colors = np.empty((*label_map.shape, 3), dtype=np.uint8)
    for rows in _row_bands(*label_map.shape):
        colors[rows] = palette[label_map[rows]]
    return colors


def _check_overlay_args(image: np.ndarray, label_map: np.ndarray, palette: np.ndarray,
                        opacity: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the arguments of :func:`overlay`; returns image, label map and palette arrays."""
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f'opacity must be in [0, 1], got {opacity}')
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'image must be (H, W, 3) uint8 RGB, got shape {image.shape} and dtype '
                         f'{image.dtype}')
    palette = _check_palette(palette)
    label_map = _check_label_map(label_map, len(palette))
    if label_map.shape != image.shape[:2]:
        raise ValueError(f'label map shape {label_map.shape} does not match image shape '
                         f'{image.shape[:2]}')
    return image, label_map, palette


def _blend_into(out: np.ndarray, image: np.ndarray, label_map: np.ndarray, palette: np.ndarray,
                opacity: float) -> None:
    """Write the blend of :func:`overlay` into ``out`` (``(H, W, 3)`` uint8), band by band.

    Each band computes ``rint((1 - opacity) * image + opacity * colour)`` in float32 (the same
    arithmetic on every pixel, whatever the band size); opacity 0 and 1 only copy.
    """
    for rows in _row_bands(*label_map.shape):
        if opacity == 0.0:
            out[rows] = image[rows]
            continue
        colors = palette[label_map[rows]]                                   # (b, W, 3) uint8
        if opacity == 1.0:
            out[rows] = colors
            continue
        blended = (1.0 - opacity) * image[rows].astype(np.float32)
        blended += opacity * colors.astype(np.float32)
        np.rint(blended, out=blended)
        out[rows] = np.clip(blended, 0, 255)


def overlay(image: np.ndarray, label_map: np.ndarray, palette: np.ndarray,
            opacity: float = 0.5) -> np.ndarray:
    """Blend the coloured label map over an image.

    Args:
        image (np.ndarray): ``(H, W, 3)`` ``uint8`` RGB.
        label_map (np.ndarray): ``(H, W)`` class ids in ``[0, T)`` (any integer dtype; int32
            keeps large maps small).
        palette (np.ndarray): ``(T, 3)`` RGB colours.
        opacity (float): Weight of the colours in ``[0, 1]``; 1 shows the colours only.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8`` RGB,
        ``round((1 - opacity) * image + opacity * colour)`` (float32 arithmetic, half to even).
        Temporaries are limited to bands of :data:`BAND_PIXELS` pixels.

    Raises:
        ValueError: Bad opacity, shapes or dtype.
    """
    image, label_map, palette = _check_overlay_args(image, label_map, palette, opacity)
    out = np.empty(image.shape, dtype=np.uint8)
    _blend_into(out, image, label_map, palette, float(opacity))
    return out


def legend_entries(label_map: np.ndarray, class_names: Sequence[str],
                   palette: np.ndarray) -> List[LegendEntry]:
    """The classes present in a label map, largest area first (ties: lower class id first).

    Args:
        label_map (np.ndarray): ``(H, W)`` class ids in ``[0, T)``.
        class_names (Sequence[str]): T display names.
        palette (np.ndarray): ``(T, 3)`` RGB colours.

    Returns:
        List[LegendEntry]: One entry per class present.

    Raises:
        ValueError: ``class_names`` and ``palette`` differ in length, or bad label map.
    """
    palette = _check_palette(palette)
    if len(class_names) != len(palette):
        raise ValueError(f'{len(class_names)} class names but {len(palette)} palette colours')
    label_map = _check_label_map(label_map, len(palette))
    counts = class_pixel_counts(label_map, len(palette))
    present = np.flatnonzero(counts)
    order = present[np.lexsort((present, -counts[present]))]
    total = float(label_map.size)
    return [LegendEntry(index=int(i), name=str(class_names[i]),
                        color=tuple(int(c) for c in palette[i]), fraction=counts[i] / total)
            for i in order]


def legend_row_height(image_height: int) -> int:
    """Legend row height for an image: readable on small images, not tiny on large ones.

    Args:
        image_height (int): H of the image the legend goes with.

    Returns:
        int: Row height in pixels, in ``[20, 64]``.
    """
    return int(np.clip(image_height // 24, 20, 64))


def _row_font(text: str) -> Tuple[Optional[str], str]:
    """The TrueType font of a legend row and the text to draw: ``(None, text)`` for ASCII text
    (OpenCV's Hershey font), and ``'?'`` for what is not ASCII when no TrueType font exists."""
    if text.isascii():
        return None, text
    font, text = legend_text.font_for(text)
    return (font, text) if font else (None, text.encode('ascii', 'replace').decode('ascii'))


def draw_legend(entries: Sequence[LegendEntry], row_height: int = 20,
                show_fraction: bool = True) -> np.ndarray:
    """Draw a legend panel: one row per entry, a colour swatch then the name.

    Args:
        entries (Sequence[LegendEntry]): Rows, top to bottom.
        row_height (int): Height of a row in pixels (>= 8).
        show_fraction (bool): Append the pixel share, e.g. ``'sky 42.0%'``.

    Returns:
        np.ndarray: ``(len(entries) * row_height + 2 * pad, width, 3)`` ``uint8`` RGB on white;
        swatches are filled with the entry colour and outlined in black, text is black (ASCII
        rows in OpenCV's Hershey font, others in a TrueType font, see :mod:`.legend_text`).
    """
    if row_height < 8:
        raise ValueError(f'row_height must be >= 8, got {row_height}')
    pad = max(2, row_height // 5)
    swatch = row_height - pad
    cap_height = max(1, int(row_height * 0.5))
    scale = cv2.getFontScaleFromHeight(_FONT, cap_height, 1)
    thickness = max(1, row_height // 24)
    texts = [f'{entry.name} {entry.fraction:.1%}' if show_fraction else entry.name
             for entry in entries]
    fonts, texts = zip(*[_row_font(t) for t in texts]) if texts else ((), ())
    widths = [cv2.getTextSize(t, _FONT, scale, thickness)[0][0] if f is None
              else legend_text.text_width(f, t, cap_height) for t, f in zip(texts, fonts)]
    text_width = max(widths or [0])
    height = len(entries) * row_height + 2 * pad
    width = pad + swatch + pad + text_width + 2 * pad
    panel = np.full((height, width, 3), 255, dtype=np.uint8)
    unicode_rows = []
    for row, (entry, text, font) in enumerate(zip(entries, texts, fonts)):
        top = pad + row * row_height + pad // 2
        x0, y0, x1, y1 = pad, top, pad + swatch - 1, top + swatch - 1
        cv2.rectangle(panel, (x0, y0), (x1, y1), entry.color, thickness=-1)
        cv2.rectangle(panel, (x0, y0), (x1, y1), _BLACK, thickness=1)
        (_, text_h), _ = cv2.getTextSize('A' if font else text, _FONT, scale, thickness)
        baseline_y = top + (swatch + text_h) // 2
        if font is None:
            cv2.putText(panel, text, (x1 + 1 + pad, baseline_y), _FONT, scale, _BLACK, thickness,
                        cv2.LINE_AA)
        else:
            unicode_rows.append((font, text, x1 + 1 + pad, baseline_y))
    if unicode_rows:
        panel = legend_text.draw_texts(panel, unicode_rows, cap_height, _BLACK)
    return panel


def render_segmentation(image: np.ndarray,
                        label_map: np.ndarray,
                        class_names: Sequence[str],
                        palette: Optional[np.ndarray] = None,
                        opacity: float = 0.5,
                        with_legend: bool = True) -> Tuple[np.ndarray, List[LegendEntry]]:
    """The overlay with a legend of the classes present placed to its right.

    The overlay occupies ``canvas[:H, :W]`` unchanged; the legend panel is pasted at
    ``canvas[:h, W:]`` and the rest is white, so nothing covers the image however small it is.

    Args:
        image (np.ndarray): ``(H, W, 3)`` ``uint8`` RGB.
        label_map (np.ndarray): ``(H, W)`` class ids in ``[0, T)``.
        class_names (Sequence[str]): T display names.
        palette (np.ndarray, optional): ``(T, 3)`` RGB; defaults to :func:`make_palette` (T).
        opacity (float): See :func:`overlay`.
        with_legend (bool): False returns the bare overlay.

    Returns:
        Tuple[np.ndarray, List[LegendEntry]]: The ``(max(H, h), W + w, 3)`` RGB canvas
        (``(H, W, 3)`` without legend) and the legend entries (classes present, largest first).
        The overlay is blended straight into the canvas: besides the inputs and the canvas, memory
        use is bounded by bands of :data:`BAND_PIXELS` pixels.
    """
    if palette is None:
        palette = make_palette(len(class_names))
    entries = legend_entries(label_map, class_names, palette)
    image, label_map, palette = _check_overlay_args(image, label_map, palette, opacity)
    if not with_legend:
        return overlay(image, label_map, palette, opacity), entries
    height, width = label_map.shape
    panel = draw_legend(entries, row_height=legend_row_height(height))
    canvas = np.empty((max(height, panel.shape[0]), width + panel.shape[1], 3), dtype=np.uint8)
    canvas[height:, :width] = 255
    canvas[panel.shape[0]:, width:] = 255
    canvas[:panel.shape[0], width:] = panel
    _blend_into(canvas[:height, :width], image, label_map, palette, float(opacity))
    return canvas, entries
