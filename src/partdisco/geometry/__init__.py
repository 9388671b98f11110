"""Pure geometry on tensors: random warps, thin-plate splines, nearest resizing, logits on warped grids.

Colour spaces, colour jitter and the uint8 image rule are :mod:`partdisco.imaging` (the same floor).
"""

from partdisco.geometry.nearest import nearest_indices, resize_nearest
from partdisco.geometry.warps import WarpParams, map_points, sample_warp_params, warp_grid, warp_image

__all__ = [
    "WarpParams",
    "map_points",
    "nearest_indices",
    "resize_nearest",
    "sample_warp_params",
    "warp_grid",
    "warp_image",
]
