"""Nearest-neighbour resizing by exact integer index arithmetic: the one formula for labels and masks.

Two conventions, both exact (no floating point, so no size pair rounds differently from another):

- ``half_pixel=True``, centre sampling: pixel i covers [i, i + 1), so output pixel ``d`` samples its
  centre ``(d + 0.5) * in / out`` and reads input pixel ``floor((2 d + 1) * in / (2 out))``. This is
  PIL's ``NEAREST`` (and torch's ``nearest-exact``): equal wherever the centre is not exactly on a pixel
  edge; on an edge (a tie) this formula takes the right/lower pixel, as PIL does whenever its floating-point
  step is exact (e.g. power-of-two ratios), while PIL's accumulated float step decides other ties either way.
  Labels, masks and part maps use it (``visualise.resize_labels``, ``data.transforms.resize_nearest``).
- ``half_pixel=False``, corner sampling: ``floor(d * in / out)``, OpenCV's ``INTER_NEAREST``, which the
  reference's data pipeline uses for its crops (``data.transforms.crop_resize_labels``).

Example:
    >>> nearest_indices(4, 2, half_pixel=True).tolist(), nearest_indices(4, 2, half_pixel=False).tolist()
    ([1, 3], [0, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nearest_indices(in_size: int, out_size: int, half_pixel: bool) -> np.ndarray:
    """Input index read by each output pixel along one axis.

    Args:
        in_size: input length, >= 1.
        out_size: output length, >= 1.
        half_pixel: True = centre sampling (PIL ``NEAREST``), False = corner sampling (cv2 ``INTER_NEAREST``).

    Returns:
        int64 (out_size,) indices in ``0 .. in_size - 1``, non-decreasing.

    Raises:
        ValueError: a size below 1.

    Example:
        >>> nearest_indices(2, 7, half_pixel=True).tolist()
        [0, 0, 0, 1, 1, 1, 1]
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got in_size={in_size}, out_size={out_size}")
    d = np.arange(out_size, dtype=np.int64)
    if half_pixel:
        return ((2 * d + 1) * in_size) // (2 * out_size)  # < in_size since 2d + 1 < 2 out
    return (d * in_size) // out_size


def resize_nearest(array: np.ndarray, size: Sequence[int], half_pixel: bool) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes of any array (labels, masks, images).

    Args:
        array: (H, W) or (H, W, C), any dtype.
        size: output ``(h, w)``, both >= 1.
        half_pixel: the convention (module docstring): True = PIL ``NEAREST``, False = cv2 ``INTER_NEAREST``.

    Returns:
        Array of the input dtype with shape (h, w[, C]).

    Example:
        >>> resize_nearest(np.arange(4)[None], (1, 2), half_pixel=False).tolist()
        [[0, 2]]
        >>> resize_nearest(np.arange(4)[None], (1, 2), half_pixel=True).tolist()
        [[1, 3]]
    """
    height, width = array.shape[:2]
    rows = nearest_indices(height, int(size[0]), half_pixel)  # (h,)
    cols = nearest_indices(width, int(size[1]), half_pixel)  # (w,)
    return array[rows[:, None], cols[None, :]]  # (h, w[, C])


__all__ = ["nearest_indices", "resize_nearest"]
