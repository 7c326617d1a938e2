"""Rendering of open-vocabulary predictions: palettes, overlays and legends; ESC-Net's prompt
panels."""
from .overlay import (LegendEntry, colorize, draw_legend, legend_entries, legend_row_height,
                      make_palette, overlay, render_segmentation)
from .prompt_panels import (BOX_COLOR, MASK_COLOR, POINT_COLOR, binary_panel, cell_to_pixel,
                            draw_prompts, heatmap_panel, image_panel, nearest_indices,
                            regions_panel, tile_panels)

__all__ = [
    'BOX_COLOR', 'LegendEntry', 'MASK_COLOR', 'POINT_COLOR', 'binary_panel', 'cell_to_pixel',
    'colorize', 'draw_legend', 'draw_prompts', 'heatmap_panel', 'image_panel', 'legend_entries',
    'legend_row_height', 'make_palette', 'nearest_indices', 'overlay', 'regions_panel',
    'render_segmentation', 'tile_panels'
]
