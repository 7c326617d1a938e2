"""Panels of ESC-Net's pseudo prompts (paper Fig. 3 and Fig. 6) and their tiling with labels.

Everything here works on plain arrays: grid maps are ``(h, w)`` arrays on the CLIP grid, images
are **RGB** ``uint8`` ``(H, W, 3)`` and a panel is an image of the display size ``(H, W)``.
Grid cell (row i, col j) is the point (x, y) = (j, i) in grid units and covers the display pixels
``[i * H / h, (i + 1) * H / h)`` (likewise for columns), so its centre is at
``((j + 0.5) * W / w, (i + 0.5) * H / h)``.

Upsampling for display: continuous maps (scores, probabilities, mask prompts) are interpolated
bilinearly, discrete ones (the binary foreground, the k-means regions) by nearest neighbour with
the cell-centre rule of :func:`nearest_indices` (each display pixel shows the cell it lies in).
"""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .overlay import _BLACK, _FONT, make_palette

__all__ = [
    'BOX_COLOR', 'FRAME_COLOR', 'MASK_COLOR', 'POINT_COLOR', 'binary_panel', 'cell_to_pixel',
    'draw_prompts', 'heatmap_panel', 'image_panel', 'nearest_indices', 'regions_panel',
    'tile_panels'
]

#: RGB colour of the pseudo points (filled discs with a black rim).
POINT_COLOR = (255, 236, 0)
#: RGB colour of the pseudo boxes.
BOX_COLOR = (0, 255, 255)
#: RGB colour of the dense mask prompt, blended with the image by its probability.
MASK_COLOR = (255, 0, 160)
#: Largest weight of :data:`MASK_COLOR` in the blend (where the mask probability is 1).
MASK_OPACITY = 0.5
#: RGB colour of the one-pixel frame drawn around every tiled panel.
FRAME_COLOR = (160, 160, 160)


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of every target index for a nearest-neighbour resize of ``src`` -> ``dst``.

    Target pixel ``d`` takes the source cell its centre falls in:
    ``floor((d + 0.5) * src / dst)``.

    Args:
        src (int): Source length (e.g. the grid's h).
        dst (int): Target length (e.g. the display height).

    Returns:
        np.ndarray: ``(dst,)`` int64 indices in ``[0, src)``.
    """
    index = np.floor((np.arange(dst) + 0.5) * src / dst).astype(np.int64)
    return np.minimum(index, src - 1)


def cell_to_pixel(x: float, y: float, grid: Tuple[int, int],
                  size: Tuple[int, int]) -> Tuple[int, int]:
    """Display pixel of the centre of grid point (x, y).

    Args:
        x (float): Column in grid units (cell j is x = j).
        y (float): Row in grid units.
        grid (Tuple[int, int]): (h, w) of the grid.
        size (Tuple[int, int]): (H, W) of the display.

    Returns:
        Tuple[int, int]: (column, row) of the pixel, ``floor((x + 0.5) * W / w)`` and
        ``floor((y + 0.5) * H / h)``.
    """
    (h, w), (height, width) = grid, size
    return int(np.floor((x + 0.5) * width / w)), int(np.floor((y + 0.5) * height / h))


def _upsample_nearest(grid_map: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) by :func:`nearest_indices` on both axes."""
    rows = nearest_indices(grid_map.shape[0], size[0])
    cols = nearest_indices(grid_map.shape[1], size[1])
    return grid_map[np.ix_(rows, cols)]


def _upsample_bilinear(grid_map: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """(h, w) float -> (H, W) float32, bilinear with half-pixel centres."""
    return cv2.resize(np.asarray(grid_map, np.float32), (size[1], size[0]),
                      interpolation=cv2.INTER_LINEAR)


def image_panel(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """An RGB image resized (area when shrinking, bilinear when enlarging) to the display size.

    Args:
        image (np.ndarray): ``(H0, W0, 3)`` ``uint8`` RGB.
        size (Tuple[int, int]): (H, W).

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8`` RGB.
    """
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def heatmap_panel(grid_map: np.ndarray, size: Tuple[int, int], vmin: Optional[float] = None,
                  vmax: Optional[float] = None) -> np.ndarray:
    """A continuous grid map as a colour map (OpenCV's turbo: blue low, red high).

    Args:
        grid_map (np.ndarray): ``(h, w)`` floats.
        size (Tuple[int, int]): (H, W) of the display.
        vmin (float, optional): Value shown as the lowest colour (default: the map's minimum).
        vmax (float, optional): Value shown as the highest colour (default: the map's maximum).

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8`` RGB; bilinear upsampling. A flat map is shown at the
        lowest colour.
    """
    values = _upsample_bilinear(grid_map, size)
    low = float(np.min(grid_map)) if vmin is None else float(vmin)
    high = float(np.max(grid_map)) if vmax is None else float(vmax)
    scaled = (values - low) / max(high - low, 1e-12)
    levels = np.rint(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[:, :, ::-1].copy()  # BGR -> RGB


def binary_panel(mask: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A binary grid mask: white foreground on black (nearest upsampling).

    Args:
        mask (np.ndarray): ``(h, w)`` bool.
        size (Tuple[int, int]): (H, W).

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8`` RGB, 255 on the foreground, 0 elsewhere.
    """
    up = _upsample_nearest(np.asarray(mask, bool), size)
    return np.repeat(up[:, :, None] * np.uint8(255), 3, axis=2)


def regions_panel(regions: np.ndarray, size: Tuple[int, int], num_regions: int) -> np.ndarray:
    """The k-means regions: region k in colour k of :func:`make_palette`, background black.

    Args:
        regions (np.ndarray): ``(h, w)`` int region ids in ``[0, K)``, -1 on the background.
        size (Tuple[int, int]): (H, W).
        num_regions (int): K.

    Returns:
        np.ndarray: ``(H, W, 3)`` ``uint8`` RGB (nearest upsampling).
    """
    colors = np.concatenate([np.zeros((1, 3), np.uint8), make_palette(max(1, num_regions))])
    up = _upsample_nearest(np.asarray(regions, np.int64), size)
    return colors[up + 1]


def draw_prompts(image: np.ndarray, grid: Tuple[int, int], points: Optional[np.ndarray] = None,
                 boxes: Optional[np.ndarray] = None,
                 mask_probability: Optional[np.ndarray] = None) -> np.ndarray:
    """Draw SAM prompts given in grid units over a display image (Fig. 3 (e)).

    The mask is blended first (colour :data:`MASK_COLOR`, weight ``MASK_OPACITY * p``), then the
    boxes (outlines in :data:`BOX_COLOR` on the region's outer edges: box (x0, y0, x1, y1) spans
    the grid from x0 + 0.5 to x1 + 0.5), then the points (discs in :data:`POINT_COLOR` with a
    black rim, centred on :func:`cell_to_pixel`; the centre pixel is exactly the point colour).

    Args:
        image (np.ndarray): ``(H, W, 3)`` ``uint8`` RGB display image.
        grid (Tuple[int, int]): (h, w) of the grid the prompts are given on.
        points (np.ndarray, optional): ``(K, 2)`` (x, y) in grid cells.
        boxes (np.ndarray, optional): ``(K, 4)`` (x0, y0, x1, y1) in grid units.
        mask_probability (np.ndarray, optional): ``(m_h, m_w)`` probabilities in [0, 1] (the
            sigmoid of the mask-prompt logits), covering the same area as the grid.

    Returns:
        np.ndarray: a new ``(H, W, 3)`` ``uint8`` RGB image.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    size = out.shape[:2]
    if mask_probability is not None:
        alpha = MASK_OPACITY * np.clip(_upsample_bilinear(mask_probability, size), 0, 1)
        blended = out * (1.0 - alpha[..., None]) + np.float32(MASK_COLOR) * alpha[..., None]
        out = np.rint(blended).astype(np.uint8)
    thickness = max(1, min(size) // 160)
    if boxes is not None:
        (h, w), (height, width) = grid, size
        for x0, y0, x1, y1 in np.asarray(boxes, np.float64):
            left, top = round((x0 + 0.5) * width / w), round((y0 + 0.5) * height / h)
            right, bottom = round((x1 + 0.5) * width / w) - 1, round((y1 + 0.5) * height / h) - 1
            cv2.rectangle(out, (left, top), (right, bottom), BOX_COLOR, thickness)
    if points is not None:
        radius = max(2, min(size) // 40)
        centres = [cell_to_pixel(x, y, grid, size) for x, y in np.asarray(points, np.float64)]
        for centre in centres:  # every rim first, so no rim covers another point's disc
            cv2.circle(out, centre, radius + 1, _BLACK, -1, cv2.LINE_8)
        for centre in centres:
            cv2.circle(out, centre, radius, POINT_COLOR, -1, cv2.LINE_8)
    return out


def _ascii(text: str) -> str:
    """Hershey fonts have ASCII glyphs only (like the legend of :mod:`.overlay`)."""
    return text.encode('ascii', 'replace').decode('ascii')


def _font_scale(line_height: int) -> float:
    return cv2.getFontScaleFromHeight(_FONT, max(1, int(line_height * 0.55)), 1)


def _wrap(lines: Sequence[str], width: int, line_height: int) -> List[str]:
    """The lines broken at spaces so that each fits ``width`` pixels (a longer word is cut)."""
    scale, out = _font_scale(line_height), []
    for line in lines:
        current = ''
        for word in _ascii(line).split(' '):
            candidate = f'{current} {word}' if current else word
            if current and cv2.getTextSize(candidate, _FONT, scale, 1)[0][0] > width - 8:
                out.append(current)
                candidate = word
            current = candidate
        out.append(current)
    return out


def _text_strip(lines: Sequence[str], width: int, line_height: int,
                align: str = 'center') -> np.ndarray:
    """White strip of ``len(lines)`` rows of black text; text wider than ``width`` is cut."""
    strip = np.full((line_height * len(lines), width, 3), 255, np.uint8)
    scale = _font_scale(line_height)
    for row, text in enumerate(lines):
        text = _ascii(text)
        (text_w, text_h), _ = cv2.getTextSize(text, _FONT, scale, 1)
        x = max(2, (width - text_w) // 2) if align == 'center' else 4
        y = row * line_height + (line_height + text_h) // 2
        cv2.putText(strip, text, (x, y), _FONT, scale, _BLACK, 1, cv2.LINE_AA)
    return strip


def _rotated_label(text: str, height: int, line_height: int) -> np.ndarray:
    """A row label: the text written bottom-to-top in a ``(height, line_height)`` strip."""
    return np.ascontiguousarray(np.rot90(_text_strip([text], height, line_height)))


def tile_panels(panels: Sequence[Sequence[Optional[np.ndarray]]],
                column_labels: Optional[Sequence[Sequence[str]]] = None,
                row_labels: Optional[Sequence[str]] = None, title: Optional[str] = None,
                footer: Sequence[str] = (), gap: int = 4,
                line_height: int = 16) -> Tuple[np.ndarray, List[List[Tuple[int, int]]]]:
    """Tile equally sized panels in a grid with captions, row labels, a title and a footer.

    Args:
        panels: rows of ``(H, W, 3)`` ``uint8`` RGB panels, all of the same size; None leaves a
            cell empty (white).
        column_labels: per row, one caption per panel (drawn above it; '' for none); None: no
            captions.
        row_labels: one label per row, written vertically at the left; None: none.
        title (str, optional): a line above everything.
        footer (Sequence[str]): lines below everything (e.g. how the maps were upsampled),
            wrapped at spaces to the canvas width.
        gap (int): white pixels between panels (>= 2: each panel gets a one-pixel grey frame
            in it, :data:`FRAME_COLOR`).
        line_height (int): height of a text line in pixels (>= 8).

    Returns:
        tuple: the ``(height, width, 3)`` ``uint8`` RGB canvas (white background), and the
        (top, left) pixel of every panel, ``offsets[row][col]``.
    """
    present = [p for row in panels for p in row if p is not None]
    if not present:
        raise ValueError('tile_panels needs at least one panel')
    if line_height < 8:
        raise ValueError(f'line_height must be >= 8, got {line_height}')
    if gap < 2:
        raise ValueError(f'gap must be >= 2 (the frame is drawn in it), got {gap}')
    height, width = present[0].shape[:2]
    if any(p.shape != present[0].shape for p in present):
        raise ValueError(f'all panels must have one size, got {sorted({p.shape for p in present})}')
    columns = max(len(row) for row in panels)
    caption = line_height if column_labels is not None else 0
    left0 = gap + (line_height + gap if row_labels is not None else 0)
    top0 = gap + (line_height + gap if title else 0)
    row_step, col_step = caption + height + gap, width + gap
    canvas_w = left0 + columns * col_step
    footer = _wrap(footer, canvas_w, line_height)
    canvas_h = top0 + len(panels) * row_step + len(footer) * line_height + gap
    canvas = np.full((canvas_h, canvas_w, 3), 255, np.uint8)
    if title:
        canvas[gap:gap + line_height] = _text_strip([title], canvas_w, line_height)
    offsets: List[List[Tuple[int, int]]] = []
    for r, row in enumerate(panels):
        top = top0 + r * row_step
        if row_labels is not None:
            canvas[top + caption:top + caption + height, gap:gap + line_height] = \
                _rotated_label(row_labels[r], height, line_height)
        offsets.append([])
        for c, panel in enumerate(row):
            left = left0 + c * col_step
            if column_labels is not None and column_labels[r][c]:
                canvas[top:top + caption, left:left + width] = _text_strip(
                    [column_labels[r][c]], width, line_height)
            if panel is not None:
                y0 = top + caption
                cv2.rectangle(canvas, (left - 1, y0 - 1), (left + width, y0 + height),
                              FRAME_COLOR, 1)
                canvas[y0:y0 + height, left:left + width] = panel
            offsets[-1].append((top + caption, left))
    if footer:
        start = top0 + len(panels) * row_step
        canvas[start:start + len(footer) * line_height] = _text_strip(
            list(footer), canvas_w, line_height, align='left')
    return canvas, offsets
