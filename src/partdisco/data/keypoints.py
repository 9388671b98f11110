"""Keypoints and flips of numpy samples: shift, scale, mirror, drop outside, zero the invisible rows.

Keypoints are ``float (N, 3)`` rows ``(x, y, visible)``; these functions move visible rows only and
:func:`clean_keypoints` zeroes the invisible ones. A horizontal flip maps ``x -> W - 1 - x`` as the
reference does (an integer ``x`` = pixel index goes to the mirrored pixel index); :func:`hflip` mirrors the
image, mask or label array with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def shift_keypoints(keypoints: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Subtract ``(dx, dy)`` from the visible keypoints (crop origin); returns a new float64 (N, 3) array.

    Example:
        >>> shift_keypoints(np.array([[5.0, 6.0, 1.0], [0.0, 0.0, 0.0]]), 2, 1).tolist()
        [[3.0, 5.0, 1.0], [0.0, 0.0, 0.0]]
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    visible = out[:, 2] > 0
    out[visible, 0] -= dx
    out[visible, 1] -= dy
    return out


def scale_keypoints(keypoints: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Multiply the visible keypoints' x by ``sx`` and y by ``sy``; returns a new float64 (N, 3) array.

    Example:
        >>> scale_keypoints(np.array([[5.0, 6.0, 1.0]]), 2, 0.5).tolist()
        [[10.0, 3.0, 1.0]]
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    visible = out[:, 2] > 0
    out[visible, 0] *= sx
    out[visible, 1] *= sy
    return out


def flip_keypoints(keypoints: np.ndarray, width: int, permutation: Sequence[int] | None) -> np.ndarray:
    """Mirror keypoints horizontally (``x -> width - 1 - x``) and reorder rows (left <-> right names).

    Row ``i`` of the result is the mirrored row ``permutation[i]`` of the input (ref: CMR
    ``mirror_image``: ``kp_flip[kp_perm]``).

    Args:
        keypoints: (N, 3) rows ``(x, y, visible)``.
        width: image width.
        permutation: int (N,) or None (identity).

    Returns:
        float64 (N, 3).

    Example:
        >>> flip_keypoints(np.array([[1.0, 2.0, 1.0], [7.0, 3.0, 1.0]]), 10, np.array([1, 0])).tolist()
        [[2.0, 3.0, 1.0], [8.0, 2.0, 1.0]]
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    visible = out[:, 2] > 0
    out[visible, 0] = width - 1 - out[visible, 0]
    if permutation is not None:
        out = out[np.asarray(permutation, dtype=np.int64)]
    return out


def drop_keypoints_outside(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mark keypoints outside ``[0, W) x [0, H)`` invisible (ref: CUB eval ``cut_borders``).

    Example:
        >>> drop_keypoints_outside(np.array([[3.0, 1.0, 1.0], [4.0, 1.0, 1.0]]), 4, 4)[:, 2].tolist()
        [1.0, 0.0]
    """
    out = np.array(keypoints, dtype=np.float64, copy=True)
    inside = (out[:, 0] >= 0) & (out[:, 0] < width) & (out[:, 1] >= 0) & (out[:, 1] < height)
    out[~inside, 2] = 0.0
    return out


def clean_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """Binarise visibility (``> 0``) and zero invisible rows; returns float32 (N, 3).

    Example:
        >>> clean_keypoints(np.array([[3.0, 1.0, 0.0], [4.0, 1.0, 2.0]])).tolist()
        [[0.0, 0.0, 0.0], [4.0, 1.0, 1.0]]
    """
    out = np.array(keypoints, dtype=np.float32, copy=True)
    visible = out[:, 2] > 0
    out[:, 2] = visible.astype(np.float32)
    out[~visible] = 0.0
    return out


def hflip(array: np.ndarray) -> np.ndarray:
    """Horizontal flip of (H, W[, C]) as a contiguous copy.

    Example:
        >>> hflip(np.array([[1, 2, 3]])).tolist()
        [[3, 2, 1]]
    """
    return np.ascontiguousarray(array[:, ::-1])
