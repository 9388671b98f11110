"""User images and masks of any type (paths, PIL, numpy, torch; uint8, uint16, float) -> inference arrays.

:func:`image_to_rgb_uint8` (uint8 (H, W, 3) RGB, by the one value rule of
:func:`partdisco.imaging.convert.to_rgb_uint8`), :func:`mask_to_float` (float32 (H, W) in [0, 1]),
:func:`as_image_lists` (what :func:`partdisco.segment` was given, as lists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from partdisco.data.io import _to_rgb_uint8 as pil_to_rgb_uint8
from partdisco.data.io import read_image, read_mask
from partdisco.imaging.convert import to_rgb_uint8

FLOAT_SLACK = 0.01  # float images may overshoot 0..1 this much (resampling); they are clipped


def image_to_rgb_uint8(image: Any, index: int) -> Any:
    """One image of :func:`partdisco.segment` -> uint8 (H, W, 3) RGB (its docstring says what is accepted)."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image: its mode, as files are read
        return pil_to_rgb_uint8(image, Path(f"image {index}"))
    if hasattr(image, "detach"):  # torch tensor (C, H, W) or (H, W)
        t = image.detach().cpu()
        array = t.float().numpy() if t.is_floating_point() else t.numpy()
        if array.ndim == 3:
            array = np.moveaxis(array, 0, -1)  # (H, W, C)
    else:
        array = np.asarray(image)  # numpy (H, W[, C]) or a PIL image
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image {index}: expected (H, W), (H, W, 1|3|4) arrays or (C, H, W) tensors, got {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating) and array.size:
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        if low < -FLOAT_SLACK or high > 1 + FLOAT_SLACK:  # 0..255 floats would be clipped to a binary image
            raise ValueError(
                f"image {index}: float images must hold values in 0..1, got {low:.4g}..{high:.4g} "
                "(divide 0..255 values by 255, or pass uint8)"
            )
    return to_rgb_uint8(array)  # the one value rule: floats [0, 1], uint16 / 257, alpha on black


def mask_to_float(mask: Any, index: int) -> Any:
    """One mask of :func:`partdisco.segment` -> float32 (H, W) in [0, 1]."""
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        return read_mask(mask)
    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"mask {index}: expected (H, W), got shape {np.shape(mask)}")
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    return (array > 0).astype(np.float32)  # integer masks: any non-zero value, as read_mask does


def as_image_lists(images: Any, masks: Any = None) -> tuple[list[np.ndarray], list[Any] | None, str]:
    """What :func:`partdisco.segment` was given -> (uint8 RGB images, float masks or None, input shape).

    The shape is ``"batch"`` (a 4-D array or tensor), ``"list"`` (a list or tuple) or ``"single"``; the
    results are returned in the same shape.
    """
    is_batch = getattr(images, "ndim", 0) == 4
    is_list = isinstance(images, (list, tuple))
    items = list(images) if (is_batch or is_list) else [images]
    if not items:
        raise ValueError("segment: got no images")
    mask_items = None
    if masks is not None:
        mask_items = list(masks) if (is_batch or is_list) else [masks]
        if len(mask_items) != len(items):
            raise ValueError(f"segment: got {len(mask_items)} masks for {len(items)} images")
        mask_items = [mask_to_float(m, i) for i, m in enumerate(mask_items)]
    arrays = [image_to_rgb_uint8(image, i) for i, image in enumerate(items)]
    return arrays, mask_items, "batch" if is_batch else "list" if is_list else "single"
