"""Pure geometry and colour maths: warps, thin-plate splines, Lab, colour jitter, nearest resizing."""

from partdisco.geometry.color import apply_color_jitter, rgb_to_lab, sample_jitter_params
from partdisco.geometry.nearest import nearest_indices, resize_nearest
from partdisco.geometry.warps import WarpParams, map_points, sample_warp_params, warp_grid, warp_image

__all__ = [
    "WarpParams",
    "apply_color_jitter",
    "map_points",
    "nearest_indices",
    "resize_nearest",
    "rgb_to_lab",
    "sample_jitter_params",
    "sample_warp_params",
    "warp_grid",
    "warp_image",
]
