"""Pictures of part maps: one fixed palette, overlays, grids, PNG writing and an HTML contact sheet.

A leaf package: arrays or tensors in, (H, W, 3) uint8 images or HTML out. It imports only NumPy,
Pillow and the standard library (torch tensors are accepted without importing torch).
Label convention: 0 = background, 1..K = parts, coloured ``PALETTE[k]`` everywhere.
"""

from partdisco.visualise.overlay import (
    draw_points,
    overlay,
    part_boundaries,
    resize_labels,
    soft_overlay,
    to_uint8_image,
)
from partdisco.visualise.palette import (
    BACKGROUND_COLOR,
    NUM_COLORS,
    PALETTE,
    colorize,
    legend,
    palette_for_png,
)
from partdisco.visualise.sheet import (
    image_grid,
    part_grid,
    save_label_png,
    save_png,
    write_contact_sheet,
)

__all__ = [
    "BACKGROUND_COLOR",
    "NUM_COLORS",
    "PALETTE",
    "colorize",
    "draw_points",
    "image_grid",
    "legend",
    "overlay",
    "palette_for_png",
    "part_boundaries",
    "part_grid",
    "resize_labels",
    "save_label_png",
    "save_png",
    "soft_overlay",
    "to_uint8_image",
    "write_contact_sheet",
]
