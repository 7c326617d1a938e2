"""Rendering of open-vocabulary predictions: palettes, overlays and legends."""
from .overlay import (LegendEntry, colorize, draw_legend, legend_entries, legend_row_height,
                      make_palette, overlay, render_segmentation)

__all__ = [
    'LegendEntry', 'colorize', 'draw_legend', 'legend_entries', 'legend_row_height', 'make_palette',
    'overlay', 'render_segmentation'
]
