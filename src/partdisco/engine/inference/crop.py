"""Object-centric inference: crop around the object as training did, segment, paste back.

Models trained on object crops (CUB, PASCAL-Part, folders with masks: the box of the mask, padded by
``data.padding_frac`` per side, squared, resized to ``data.image_size``) see objects at one scale. Fed a
whole photo, the object is at a scale the model never saw. These helpers reproduce the training crop of
the data pipeline (:func:`partdisco.data.transforms.object_crop_box` and ``crop_resize_image``, without
jitter) for a given or predicted foreground, and map the crop's probabilities back onto the image grid.

Coordinates: the crop box is inclusive pixel indices ``(x0, y0, x1, y1)`` of a square of side
``s = x1 - x0 + 1`` (it may extend past the image). Image pixel j covers ``[j, j + 1)``; its centre lies at
``(j + 0.5 - x0) / s`` of the crop, i.e. at normalised ``2 (j + 0.5 - x0) / s - 1`` for ``grid_sample``
with ``align_corners=False`` (pixel-area convention, as the crop's resize uses).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from partdisco.data import transforms as T

PASTE_ALIGN = False  # crop grid <-> image grid: pixel-area convention (see the module docstring)


def object_crop(fg: np.ndarray, padding: float) -> np.ndarray | None:
    """The training crop box around the foreground of an (H, W) mask, or None when it is empty.

    Args:
        fg: (H, W) foreground, any value > 0.5 (bool True) is foreground.
        padding: per-side padding fraction of the object's box (``data.padding_frac``, ref 0.05).

    Returns:
        int64 (4,) inclusive square box ``(x0, y0, x1, y1)``, or None.

    Example:
        >>> m = np.zeros((40, 40)); m[10:30, 15:25] = 1
        >>> object_crop(m, 0.05).tolist()
        [8, 9, 29, 30]
    """
    tight = T.mask_box(np.asarray(fg) > 0.5)
    if tight is None:
        return None
    return T.object_crop_box(tight, padding, 0.0, None)


def crop_input(
    image: np.ndarray, box: np.ndarray, size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The network input for a crop: exactly what the data pipeline gives for the same box and size.

    Args:
        image: uint8 (H, W, 3) RGB.
        box: inclusive square crop box (:func:`object_crop`).
        size: output side S.
        device: where the tensor goes.

    Returns:
        float32 (3, S, S) in [0, 1].
    """
    crop, _ = T.crop_resize_image(image.astype(np.float32) / 255.0, box, size)  # (S, S, 3)
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).to(device)


def paste_probs(
    probs: torch.Tensor, box: np.ndarray, size: tuple[int, int], outside: torch.Tensor | None = None
) -> torch.Tensor:
    """Map (C, S, S) crop probabilities onto the (H, W) image grid.

    Args:
        probs: float (C, S, S) probabilities on the crop.
        box: the inclusive square crop box in image pixels.
        size: image (H, W).
        outside: (C,) probabilities for image pixels outside the crop (default: the crop's nearest
            border value).

    Returns:
        float32 (C, H, W), bilinear (``align_corners=PASTE_ALIGN``), renormalised over channels.

    Example:
        >>> p = torch.zeros(2, 4, 4); p[1] = 1.0
        >>> out = paste_probs(p, np.array([0, 0, 7, 7]), (8, 8), outside=torch.tensor([1.0, 0.0]))
        >>> out[:, 0, 0].tolist(), tuple(out.shape)
        ([0.0, 1.0], (2, 8, 8))
    """
    C = probs.shape[0]
    H, W = size
    x0, y0, x1, _ = (int(v) for v in box)
    side = x1 - x0 + 1
    device = probs.device
    xs = (torch.arange(W, device=device, dtype=torch.float32) + 0.5 - x0) * (2.0 / side) - 1.0  # (W,)
    ys = (torch.arange(H, device=device, dtype=torch.float32) + 0.5 - y0) * (2.0 / side) - 1.0  # (H,)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # (1, H, W, 2)
    out = F.grid_sample(
        probs[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=PASTE_ALIGN
    )[0]  # (C, H, W)
    if outside is not None:
        inside = (grid.abs() <= 1.0).all(dim=-1)[0]  # (H, W)
        out = torch.where(inside[None], out, outside.to(out).view(C, 1, 1))
    return out / out.sum(0, keepdim=True).clamp_min(1e-12)


__all__ = ["PASTE_ALIGN", "crop_input", "object_crop", "paste_probs"]
