"""The one rule for turning image values into uint8 RGB: used for files, API arrays and pictures.

The rule, for an (H, W, C) array with C = 1 (grey), 3 (RGB) or 4 (RGBA):

- ``uint8`` is kept; ``bool`` is 0 / 255; ``uint16`` is 16-bit: ``round(v / 257)``; other integers are
  clipped to 0..255.
- Floats are **[0, 1]** (the package's image tensors, ``sample["image"]``): NaN reads 0, values are
  clipped to [0, 1] and scaled by 255. ``value_range=(low, high)`` maps another range onto [0, 1] first
  (e.g. ``(0, 255)`` for float images in 8-bit units, as PIL's float mode ``F``).
- Alpha is **composited on black**, ``rgb * alpha / 255``: transparent regions become black instead of
  whatever colour the file stored under them. Grey is repeated into three channels.
- Rounding is half-to-even in float32.

Example:
    >>> import numpy as np
    >>> to_rgb_uint8(np.full((1, 1, 3), 0.5, np.float32)).tolist()
    [[[128, 128, 128]]]
    >>> to_rgb_uint8(np.array([[[200, 100, 0, 51]]], np.uint8)).tolist()
    [[[40, 20, 0]]]
"""

from __future__ import annotations

import numpy as np


def composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """Composite colour on black by its alpha: the one rule for alpha in files and in arrays.

    Args:
        rgba: float32 (H, W, 4), colour and alpha both in 0..255.

    Returns:
        float32 (H, W, 3) ``rgb * alpha / 255`` in 0..255, not rounded.

    Example:
        >>> composite_on_black(np.array([[[200, 100, 0, 51]]], np.float32)).tolist()
        [[[40.0, 20.0, 0.0]]]
    """
    return rgba[:, :, :3] * (rgba[:, :, 3:4] / 255.0)


def sixteen_to_eight(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit values (0..65535) to 8 bit (0..255), rounding; values outside are clipped.

    Example:
        >>> sixteen_to_eight(np.array([0, 257, 65535, 70000])).tolist()
        [0, 1, 255, 255]
    """
    array = np.clip(array.astype(np.float64), 0.0, 65535.0)
    return np.round(array / 257.0).astype(np.uint8)


def to_rgb_uint8(array: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Apply the image value rule (module docstring) to an (H, W, C) array.

    Args:
        array: (H, W, C), C in {1, 3, 4}; uint8, bool, uint16, other integers or floats.
        value_range: for float (or integer) input, the (low, high) that maps to black .. white; None = the
            dtype's rule above.

    Returns:
        uint8 (H, W, 3) RGB.

    Raises:
        ValueError: not (H, W, C) with C in {1, 3, 4}, or an empty ``value_range``.

    Example:
        >>> to_rgb_uint8(np.full((1, 2, 1), 65535, np.uint16))[0, 0].tolist()
        [255, 255, 255]
        >>> to_rgb_uint8(np.full((1, 1, 3), 127.5), value_range=(0, 255))[0, 0].tolist()
        [128, 128, 128]
    """
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, C) image with C in 1, 3, 4; got shape {array.shape}")
    if array.dtype == np.uint8 and value_range is None:
        if array.shape[2] == 3:
            return np.ascontiguousarray(array)
        values = array.astype(np.float32)
    elif value_range is not None:
        low, high = float(value_range[0]), float(value_range[1])
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        scaled = (np.nan_to_num(array.astype(np.float64), nan=0.0) - low) * (255.0 / (high - low))
        values = np.clip(scaled, 0.0, 255.0).astype(np.float32)  # (0, 255) keeps the values exactly
    elif array.dtype == np.bool_ or np.issubdtype(array.dtype, np.floating):
        values = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * 255.0  # floats are [0, 1]
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 257.0  # 16 bit -> 8 bit, as sixteen_to_eight
    else:
        values = np.clip(array.astype(np.float32), 0.0, 255.0)
    if values.shape[2] == 4:
        values = composite_on_black(values)  # (H, W, 3)
    elif values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)  # (H, W, 3)
    return np.round(values).astype(np.uint8)


__all__ = ["composite_on_black", "sixteen_to_eight", "to_rgb_uint8"]
