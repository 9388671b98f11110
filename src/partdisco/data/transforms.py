"""Geometric sample transforms (numpy / torch, no I/O): boxes, object crops, resizes, padding.

Keypoints and flips are :mod:`partdisco.data.keypoints`; the tensors of a sample :mod:`partdisco.data.sample`.

Arithmetic follows the reference (``subhc/unsup-parts`` ``utils/image.py``, ``datasets/*.py``, itself from
CMR). Conventions:

- Boxes handed to :func:`perturb_bbox` / :func:`square_bbox` / :func:`crop_with_fill` are the reference's
  **0-based inclusive pixel boxes** ``(x0, y0, x1, y1)``: the box covers pixels ``x0..x1``.
- Boxes returned in samples are **continuous** ``(x0, y0, x1, y1)`` with pixel ``i`` covering
  ``[i, i + 1)`` (``docs/ARCHITECTURE.md``); :func:`inclusive_to_continuous` converts.
- Keypoints are ``float (N, 3)`` rows ``(x, y, visible)`` (:mod:`partdisco.data.keypoints`).
- Resizes: "cv2" style = bilinear without antialiasing and nearest ``src = floor(dst * in / out)``
  (reference CUB / PASCAL training, DeepFashion test); "PIL" style = antialiased bilinear and nearest
  ``src = floor((dst + 0.5) * in / out)`` (reference torchvision-on-PIL paths: CUB evaluation, DeepFashion
  RandomResizedCrop). Float images stay float (the reference rounds to uint8 in between; differences are
  below one gray level).
- Out-of-image crop regions are filled with :data:`IMAGE_FILL` for images (the reference's ``bgval=1`` on
  0-255 images: near black) and 0 for masks and labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from partdisco.config import DataConfig
from partdisco.data.keypoints import drop_keypoints_outside, scale_keypoints, shift_keypoints
from partdisco.geometry.nearest import resize_nearest  # the one nearest formula (re-exported here)

IMAGE_FILL = 1.0 / 255.0  # ref: utils/image.py crop(img, bbox, bgval=1) on 0-255 images
RESIZE_ALIGN_CORNERS = False  # cv2 INTER_LINEAR and PIL BILINEAR both sample at half-pixel centres


# --------------------------------------------------------------------------------------------------
# Boxes


@dataclass(frozen=True)
class ObjectCrop:
    """The crop parameters of the object-centred pipelines (CUB training, PASCAL-Part, folders with masks).

    Attributes:
        size: output side S.
        padding_frac: box padding per side, as a fraction of the box (ref: cub.py padding_frac).
        jitter_frac: box jitter, augmented samples only (ref: cub.py jitter_frac).
        flip: random horizontal flip for augmented samples.

    Example:
        >>> ObjectCrop.from_config(DataConfig(image_size=64))
        ObjectCrop(size=64, padding_frac=0.05, jitter_frac=0.05, flip=True)
    """

    size: int
    padding_frac: float
    jitter_frac: float
    flip: bool

    @classmethod
    def from_config(cls, cfg: DataConfig) -> ObjectCrop:
        """The crop of ``data.image_size``, ``data.padding_frac``, ``data.jitter_frac`` and ``data.flip``."""
        return cls(int(cfg.image_size), float(cfg.padding_frac), float(cfg.jitter_frac), bool(cfg.flip))


def perturb_bbox(
    bbox: Sequence[float],
    padding_frac: float,
    jitter_frac: float,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Pad a box by ``padding_frac`` of its size per side, plus a uniform jitter of ``±jitter_frac``.

    Each side moves outwards by ``pf * size + (1 - 2u) * jf * size`` with an independent ``u ~ U[0, 1)``
    per side, drawn in the order x0, y0, x1, y1 (ref: ``utils/image.py peturb_bbox``).

    Args:
        bbox: 0-based inclusive ``(x0, y0, x1, y1)``; size = ``x1 - x0 + 1``.
        padding_frac: padding per side as a fraction of the box width / height.
        jitter_frac: jitter amplitude as a fraction of the width / height (0 = no jitter).
        rng: drives the jitter; None means no jitter.

    Returns:
        float64 (4,) box, possibly outside the image.

    Example:
        >>> perturb_bbox([10, 20, 29, 59], 0.05, 0.0, None).tolist()
        [9.0, 18.0, 30.0, 61.0]
    """
    x0, y0, x1, y1 = (float(v) for v in bbox)
    width = x1 - x0 + 1.0
    height = y1 - y0 + 1.0
    if rng is None or jitter_frac == 0:
        u = np.full(4, 0.5)
    else:
        u = rng.random(4)
    jitter = (1.0 - 2.0 * u) * jitter_frac
    return np.array(
        [
            x0 - (padding_frac * width + jitter[0] * width),
            y0 - (padding_frac * height + jitter[1] * height),
            x1 + (padding_frac * width + jitter[2] * width),
            y1 + (padding_frac * height + jitter[3] * height),
        ]
    )


def square_bbox(bbox: Sequence[float]) -> np.ndarray:
    """Grow the shorter side of a box symmetrically to the longer one (ref: ``utils/image.py square_bbox``).

    Coordinates are first rounded half-to-even (Python/numpy ``round``), the growth ``(max - size) / 2`` is
    rounded the same way and taken off x0 / y0, and x1 / y1 are set to ``x0 + max - 1``.

    Args:
        bbox: 0-based inclusive ``(x0, y0, x1, y1)`` (floats allowed).

    Returns:
        int64 (4,) square inclusive box.

    Example:
        >>> square_bbox([10, 20, 29, 59]).tolist()
        [0, 20, 39, 59]
    """
    x0, y0, x1, y1 = (int(np.round(v)) for v in bbox)
    width = x1 - x0 + 1
    height = y1 - y0 + 1
    side = max(width, height)
    x0 -= int(np.round((side - width) / 2.0))
    y0 -= int(np.round((side - height) / 2.0))
    return np.array([x0, y0, x0 + side - 1, y0 + side - 1], dtype=np.int64)


def crop_with_fill(array: np.ndarray, bbox: Sequence[float], fill: float) -> np.ndarray:
    """Crop an inclusive box out of an array, filling the parts outside the array with ``fill``.

    Args:
        array: (H, W) or (H, W, C), any dtype.
        bbox: 0-based inclusive ``(x0, y0, x1, y1)``; rounded half-to-even; may exceed the array.
        fill: value for pixels outside the array.

    Returns:
        (y1 - y0 + 1, x1 - x0 + 1[, C]) array of the input dtype.

    Example:
        >>> crop_with_fill(np.arange(6).reshape(2, 3), [-1, 0, 1, 1], fill=-9).tolist()
        [[-9, 0, 1], [-9, 3, 4]]
    """
    x0, y0, x1, y1 = (int(np.round(v)) for v in bbox)
    out_h, out_w = y1 - y0 + 1, x1 - x0 + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"crop_with_fill: empty box {tuple(bbox)}")
    height, width = array.shape[:2]
    out = np.full((out_h, out_w) + array.shape[2:], fill, dtype=array.dtype)
    src_x0, src_x1 = max(0, x0), min(width, x1 + 1)
    src_y0, src_y1 = max(0, y0), min(height, y1 + 1)
    if src_x1 > src_x0 and src_y1 > src_y0:
        out[src_y0 - y0 : src_y1 - y0, src_x0 - x0 : src_x1 - x0] = array[src_y0:src_y1, src_x0:src_x1]
    return out


def inclusive_to_continuous(bbox: Sequence[float]) -> np.ndarray:
    """Convert an inclusive pixel box ``(x0, y0, x1, y1)`` to continuous edges ``(x0, y0, x1 + 1, y1 + 1)``.

    Example:
        >>> inclusive_to_continuous([2, 3, 5, 7]).tolist()
        [2.0, 3.0, 6.0, 8.0]
    """
    x0, y0, x1, y1 = (float(v) for v in bbox)
    return np.array([x0, y0, x1 + 1.0, y1 + 1.0])


def transform_box(
    box: np.ndarray, offset: tuple[float, float], scale: tuple[float, float], size: tuple[int, int]
) -> np.ndarray:
    """Shift a continuous box by ``-offset``, scale it, and clip it to ``[0, W] x [0, H]``.

    Args:
        box: continuous ``(x0, y0, x1, y1)``.
        offset: ``(dx, dy)`` subtracted before scaling (crop origin).
        scale: ``(sx, sy)``.
        size: output ``(H, W)`` used for clipping.

    Returns:
        float32 (4,) continuous box.

    Example:
        >>> transform_box(np.array([2.0, 2.0, 12.0, 6.0]), (1, 1), (2, 2), (10, 10)).tolist()
        [2.0, 2.0, 10.0, 10.0]
    """
    x0 = (box[0] - offset[0]) * scale[0]
    y0 = (box[1] - offset[1]) * scale[1]
    x1 = (box[2] - offset[0]) * scale[0]
    y1 = (box[3] - offset[1]) * scale[1]
    height, width = size
    out = np.array(
        [np.clip(x0, 0, width), np.clip(y0, 0, height), np.clip(x1, 0, width), np.clip(y1, 0, height)]
    )
    return out.astype(np.float32)


def flip_box(box: np.ndarray, width: int) -> np.ndarray:
    """Mirror a continuous box horizontally in an image of width ``width``.

    Example:
        >>> flip_box(np.array([1.0, 0.0, 3.0, 2.0]), 10).tolist()
        [7.0, 0.0, 9.0, 2.0]
    """
    return np.array([width - box[2], box[1], width - box[0], box[3]], dtype=np.float32)


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight inclusive box ``(x0, y0, x1, y1)`` of the non-zero pixels of a 2-D array, or None if empty.

    Example:
        >>> mask_box(np.array([[0, 0, 0], [0, 1, 1]])).tolist()
        [1, 1, 2, 1]
    """
    rows = np.flatnonzero(np.any(mask, axis=1))
    cols = np.flatnonzero(np.any(mask, axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.int64)


# --------------------------------------------------------------------------------------------------
# Resizing and padding


def size_for_longest_side(height: int, width: int, target: int) -> tuple[int, int, float]:
    """Output size and factor for "longest side = target" (ref: ``utils/image.py resize_img``).

    Returns:
        ``(new_h, new_w, scale)`` with ``scale = target / max(H, W)`` and sizes ``round(size * scale)``
        (half-to-even, as ``np.round``).

    Example:
        >>> size_for_longest_side(1100, 750, 275)
        (275, 188, 0.25)
    """
    scale = target / float(max(height, width))
    return int(np.round(height * scale)), int(np.round(width * scale)), scale


def size_for_shorter_side(height: int, width: int, target: int) -> tuple[int, int]:
    """Output size for "shorter side = target", the longer side truncated (torchvision ``Resize(int)``).

    Example:
        >>> size_for_shorter_side(375, 500, 256)
        (256, 341)
    """
    if width <= height:
        return int(target * height / width), target
    return target, int(target * width / height)


def resize_image(image: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    """Bilinear resize of a float image.

    Args:
        image: float (H, W, C) or (H, W).
        size: output ``(h, w)``.
        antialias: True = PIL ``BILINEAR`` (area-aware when shrinking); False = cv2 ``INTER_LINEAR``.

    Returns:
        float32 array of shape (h, w, C) or (h, w).

    Example:
        >>> resize_image(np.array([[0.0, 1.0]]), (1, 4), antialias=False).round(3).tolist()
        [[0.0, 0.25, 0.75, 1.0]]
    """
    squeeze = image.ndim == 2
    array = image[:, :, None] if squeeze else image
    if tuple(array.shape[:2]) == tuple(size):
        out = array.astype(np.float32)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)[
            None
        ]  # (1, C, H, W)
        tensor = F.interpolate(
            tensor, size=tuple(size), mode="bilinear", align_corners=RESIZE_ALIGN_CORNERS, antialias=antialias
        )  # (1, C, h, w)
        out = tensor[0].permute(1, 2, 0).numpy()
    return out[:, :, 0] if squeeze else out


def pad_to_size(array: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, int, int]:
    """Pad an array up to ``size x size``, centred (ref: ``utils/utils.py pad_if_smaller``).

    The smaller half goes before: ``before = pad // 2``. Sides already ``>= size`` are left alone.

    Args:
        array: (H, W) or (H, W, C).
        size: target side.
        mode: ``"edge"`` (repeat border pixels; reference images) or ``"zero"`` (masks, labels).

    Returns:
        ``(padded, top, left)``: the padded array and the offsets of the original content.

    Example:
        >>> padded, top, left = pad_to_size(np.ones((2, 4)), 4, "zero")
        >>> padded.sum(axis=1).tolist(), top, left
        ([0.0, 4.0, 4.0, 0.0], 1, 0)
    """
    if mode not in ("edge", "zero"):
        raise ValueError(f"pad_to_size: mode must be 'edge' or 'zero', got {mode!r}")
    height, width = array.shape[:2]
    pad_h = max(size - height, 0)
    pad_w = max(size - width, 0)
    top, left = pad_h // 2, pad_w // 2
    if pad_h == 0 and pad_w == 0:
        return array, 0, 0
    pads = [(top, pad_h - top), (left, pad_w - left)] + [(0, 0)] * (array.ndim - 2)
    if mode == "edge":
        return np.pad(array, pads, mode="edge"), top, left
    return np.pad(array, pads, mode="constant", constant_values=0), top, left


def center_crop_offsets(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """Crop that trims H and W down to multiples of ``multiple``, centred (ref: CUB eval ``cut_borders``).

    Returns:
        ``(top, left, new_h, new_w)`` with ``top = (H % multiple) // 2``.

    Example:
        >>> center_crop_offsets(256, 341, 16)
        (0, 2, 256, 336)
    """
    border_h, border_w = height % multiple, width % multiple
    return border_h // 2, border_w // 2, height - border_h, width - border_w


# --------------------------------------------------------------------------------------------------
# DeepFashion RandomResizedCrop


def sample_resized_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """Sample a RandomResizedCrop window (the torchvision algorithm, driven by a numpy generator).

    Up to 10 tries: area fraction ``~ U(scale)``, log aspect ratio ``~ U(log ratio)``, ``w, h`` rounded; the
    first window that fits is placed uniformly. Otherwise the centred largest window with the ratio clamped
    into ``ratio``.

    Args:
        height: image height.
        width: image width.
        scale: range of the window area as a fraction of the image area (reference: (0.5, 1.0)).
        ratio: range of the window's width / height (reference: (3/4, 4/3)).
        rng: numpy generator.

    Returns:
        ``(top, left, h, w)`` of the window.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> top, left, h, w = sample_resized_crop(100, 80, (0.5, 1.0), (3 / 4, 4 / 3), rng)
        >>> 0 <= top <= 100 - h and 0 <= left <= 80 - w
        True
    """
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# --------------------------------------------------------------------------------------------------
# Object-centric crop pipeline (CUB / PASCAL-Part / folder with masks)


def object_crop_box(
    bbox: Sequence[float],
    padding_frac: float,
    jitter_frac: float,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Pad (+ jitter) and square an object's inclusive box: the crop window of the reference pipeline.

    Args:
        bbox: 0-based inclusive tight object box.
        padding_frac: per-side padding fraction (reference 0.05).
        jitter_frac: jitter fraction, used only when ``rng`` is given (reference 0.05, training).
        rng: generator for the jitter, or None.

    Returns:
        int64 (4,) inclusive square box.

    Example:
        >>> object_crop_box([10, 20, 29, 59], 0.05, 0.05, None).tolist()
        [-2, 18, 41, 61]
    """
    return square_bbox(perturb_bbox(bbox, padding_frac, jitter_frac if rng is not None else 0.0, rng))


def crop_resize_image(image: np.ndarray, crop_box: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Crop a float image to a square inclusive box (fill :data:`IMAGE_FILL`) and resize it to ``size``.

    Args:
        image: float32 (H, W, 3) in [0, 1].
        crop_box: int inclusive square box.
        size: output side S.

    Returns:
        ``(float32 (S, S, 3), scale)`` with ``scale = S / side`` (the keypoint factor).
    """
    crop = crop_with_fill(image, crop_box, IMAGE_FILL)
    new_h, new_w, scale = size_for_longest_side(crop.shape[0], crop.shape[1], size)
    return resize_image(crop, (new_h, new_w), antialias=False), scale


def crop_resize_labels(labels: np.ndarray, crop_box: np.ndarray, size: int) -> np.ndarray:
    """Crop a mask / label map to a square inclusive box (fill 0) and nearest-resize it (cv2 style).

    Args:
        labels: (H, W) any dtype.
        crop_box: int inclusive square box.
        size: output side S.

    Returns:
        (S', S') array of the input dtype (S' = S for square boxes).
    """
    crop = crop_with_fill(labels, crop_box, 0)
    new_h, new_w, _ = size_for_longest_side(crop.shape[0], crop.shape[1], size)
    return resize_nearest(crop, (new_h, new_w), half_pixel=False)


def centre_square(
    image: np.ndarray,
    size: int,
    labels: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """The whole-image training view without masks or boxes: shorter side resized to ``size``, centre square.

    What folder images without ``masks/`` get, and CUB / PASCAL-Part training images with
    ``data.masks=ignore`` (no annotation is used to place the crop; docs/DATA.md).

    Args:
        image: float32 (H, W, 3) in [0, 1].
        size: output side S.
        labels: optional (H, W) label map, resized nearest (half-pixel) with the image.
        keypoints: optional (N, 3) ``(x, y, visible)`` in image pixels.

    Returns:
        ``(image (S, S, 3), labels (S, S) or None, keypoints or None, box)``; keypoints that leave the
        square become invisible; ``box`` is the continuous ``(0, 0, S, S)`` (the whole view).

    Example:
        >>> kps = np.array([[20.0, 10.0, 1.0]])  # the centre of a 40 x 20 image
        >>> img, _, kps, box = centre_square(np.zeros((20, 40, 3), np.float32), 10, None, kps)
        >>> img.shape, kps.tolist(), box.tolist()
        ((10, 10, 3), [[5.0, 5.0, 1.0]], [0.0, 0.0, 10.0, 10.0])
    """
    height, width = image.shape[:2]
    new_h, new_w = size_for_shorter_side(height, width, size)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = resize_image(image, (new_h, new_w), antialias=True)[top : top + size, left : left + size]
    if labels is not None:
        labels = resize_nearest(labels, (new_h, new_w), half_pixel=True)[top : top + size, left : left + size]
    if keypoints is not None:
        keypoints = scale_keypoints(keypoints, new_w / width, new_h / height)
        keypoints = drop_keypoints_outside(shift_keypoints(keypoints, left, top), size, size)
    return out, labels, keypoints, np.array([0.0, 0.0, size, size], dtype=np.float32)
