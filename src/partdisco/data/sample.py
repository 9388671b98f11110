"""Samples as tensors: numpy images, masks and labels -> the sample dict the data sets return.

:func:`make_sample` assembles the sample of ``docs/ARCHITECTURE.md`` (``image`` float (3, H, W) in [0, 1],
``fg_mask`` (1, H, W), ``bbox``, ``class_id``, ``index``, ``name``, optional ``parts`` and ``keypoints``).
"""

from __future__ import annotations

import numpy as np
import torch

from partdisco.data.keypoints import clean_keypoints


def float_hwc_to_tensor(image: np.ndarray) -> torch.Tensor:
    """Convert a float (H, W, 3) image in [0, 1] to a float32 tensor (3, H, W), clipped to [0, 1].

    Example:
        >>> float_hwc_to_tensor(np.zeros((2, 5, 3))).shape
        torch.Size([3, 2, 5])
    """
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """(H, W) -> float32 tensor (1, H, W), clipped to [0, 1].

    Example:
        >>> mask_to_tensor(np.ones((2, 5))).shape
        torch.Size([1, 2, 5])
    """
    array = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(array))[None]


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """(H, W) integer labels -> int64 tensor (H, W).

    Example:
        >>> labels_to_tensor(np.zeros((2, 5), np.uint8)).dtype
        torch.int64
    """
    return torch.from_numpy(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)))


def make_sample(
    image: np.ndarray,
    fg_mask: np.ndarray,
    bbox: np.ndarray,
    class_id: int,
    index: int,
    name: str,
    parts: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
) -> dict[str, object]:
    """Assemble the sample dict of ``docs/ARCHITECTURE.md`` from numpy arrays.

    Args:
        image: float (H, W, 3) in [0, 1].
        fg_mask: (H, W) in [0, 1].
        bbox: continuous (x0, y0, x1, y1) in output pixels.
        class_id: class index (0 when the data set has none).
        index: sample index.
        name: path relative to the data root.
        parts: optional (H, W) integer labels.
        keypoints: optional (N, 3); invisible rows are zeroed here.

    Returns:
        Dict with keys image, fg_mask, bbox, class_id, index, name (+ parts, keypoints).
    """
    sample: dict[str, object] = {
        "image": float_hwc_to_tensor(image),
        "fg_mask": mask_to_tensor(fg_mask),
        "bbox": torch.as_tensor(np.asarray(bbox, dtype=np.float32)),
        "class_id": torch.tensor(int(class_id), dtype=torch.int64),
        "index": torch.tensor(int(index), dtype=torch.int64),
        "name": str(name),
    }
    if parts is not None:
        sample["parts"] = labels_to_tensor(parts)
    if keypoints is not None:
        sample["keypoints"] = torch.from_numpy(clean_keypoints(keypoints))
    return sample
