"""Pure tensor geometry and colour maths: warps, thin-plate splines, Lab conversion, colour jitter."""

from partdisco.geometry.color import apply_color_jitter, rgb_to_lab, sample_jitter_params
from partdisco.geometry.warps import WarpParams, map_points, sample_warp_params, warp_grid, warp_image

__all__ = [
    "WarpParams",
    "apply_color_jitter",
    "map_points",
    "rgb_to_lab",
    "sample_jitter_params",
    "sample_warp_params",
    "warp_grid",
    "warp_image",
]
