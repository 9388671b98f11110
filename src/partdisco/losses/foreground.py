"""Unsupervised priors that teach a background channel without masks (mask-free training).

With ``model.background_channel`` the segmenter predicts K + 1 channels, channel 0 = background (the SCOPS
layout). When the data set has no masks (or ``data.masks=ignore``), nothing tells that channel what the
background is; these priors do, from facts that hold for object photos (PDiscoNet / SCOPS style, see
``shared/reference/field-survey.md``):

- **border**: pixels in a thin band along the image border are background (objects are framed);
- **area**: the soft foreground covers between ``low`` and ``high`` of every image (no collapse to all
  background or all foreground);
- **presence**: the background is present in every image, and every part is present somewhere in the
  batch (PDiscoNet's presence priors, on max-pooled probabilities).

The four reference losses then run on the predicted soft foreground ``1 - p_bg`` instead of a given mask
(:class:`partdisco.losses.Objective` with ``mask_free=True``). All functions are pure and batched.
"""

from __future__ import annotations

import torch
from torch import Tensor

LOG_EPS = 1e-6


def _check_prob_map(name: str, x: Tensor, channels: int | None = None) -> None:
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(f"expected {name} of shape {want}, got {tuple(x.shape)}")


def border_band(height: int, width: int, frac: float, device: torch.device | str = "cpu") -> Tensor:
    """Boolean (H, W) band of width ``max(1, round(frac * min(H, W)))`` pixels along the image border.

    Example:
        >>> border_band(4, 4, 0.25).int().tolist()
        [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    """
    if not 0.0 < frac < 0.5:
        raise ValueError(f"border band fraction must be in (0, 0.5), got {frac}")
    width_px = max(1, round(frac * min(height, width)))
    band = torch.ones(height, width, dtype=torch.bool, device=device)
    band[width_px : height - width_px, width_px : width - width_px] = False
    return band


def border_background_loss(
    background_prob: Tensor, frac: float = 0.05, valid: Tensor | None = None
) -> Tensor:
    """Cross-entropy pushing the border band towards background: mean of ``-log p_bg`` on the band.

    Args:
        background_prob: (B, 1, H, W) background probability in [0, 1].
        frac: band width as a fraction of the shorter side, in (0, 0.5).
        valid: optional (B, 1, H, W) weights (e.g. the in-image part of a warped view); default all ones.

    Returns:
        Scalar loss (0 when the band is all background).

    Example:
        >>> border_background_loss(torch.ones(2, 1, 8, 8)).abs().item() < 1e-5
        True
    """
    _check_prob_map("background_prob", background_prob, 1)
    B, _, H, W = background_prob.shape
    with torch.autocast(device_type=background_prob.device.type, enabled=False):
        band = border_band(H, W, frac, background_prob.device).float()[None, None]  # (1, 1, H, W)
        weights = band if valid is None else band * valid.float()  # (B or 1, 1, H, W)
        nll = -background_prob.float().clamp_min(LOG_EPS).log()  # (B, 1, H, W)
        weights = weights.expand_as(nll)
        return (nll * weights).sum() / weights.sum().clamp_min(1.0)


def foreground_area_loss(fg_prob: Tensor, low: float = 0.1, high: float = 0.6) -> Tensor:
    """Keep each image's foreground fraction ``a`` in ``[low, high]`` (hinge on both sides).

    Args:
        fg_prob: (B, 1, H, W) soft foreground in [0, 1].
        low: smallest plausible foreground fraction, in [0, 1).
        high: largest plausible fraction, in (low, 1].

    Returns:
        Scalar loss, 0 when every image's mean foreground lies in the range.

    Example:
        >>> f = torch.zeros(2, 1, 4, 4); f[0] = 1.0  # image 0 all foreground, image 1 all background
        >>> round(foreground_area_loss(f, 0.25, 0.75).item(), 4)
        0.25
    """
    _check_prob_map("fg_prob", fg_prob, 1)
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"foreground area range must satisfy 0 <= low < high <= 1, got {low}, {high}")
    with torch.autocast(device_type=fg_prob.device.type, enabled=False):
        area = fg_prob.float().mean(dim=(1, 2, 3))  # (B,)
        return (torch.relu(low - area) + torch.relu(area - high)).mean()


def presence_loss(probs: Tensor, pool: int = 3) -> Tensor:
    """PDiscoNet-style presence: background in every image, every part somewhere in the batch.

    Presence of a channel in an image is the maximum of its (``pool`` x ``pool`` average-pooled, so one
    noisy pixel is not enough) probability. The background term is ``mean_b (1 - presence_bg[b])``; the part
    term is ``mean_k (1 - max_b presence_k[b])``. The loss is their sum.

    Args:
        probs: (B, K + 1, H, W) softmax over background (channel 0) and the K parts.
        pool: average-pooling window (odd, >= 1).

    Returns:
        Scalar loss in [0, 2].

    Example:
        >>> p = torch.zeros(2, 3, 4, 4); p[:, 0, :2] = 1; p[0, 1, 2:] = 1; p[1, 2, 2:] = 1
        >>> presence_loss(p, pool=1).item()
        0.0
    """
    _check_prob_map("probs", probs)
    if probs.shape[1] < 2:
        raise ValueError(f"presence_loss needs background + parts channels, got {probs.shape[1]}")
    with torch.autocast(device_type=probs.device.type, enabled=False):
        p = probs.float()
        if pool > 1:
            p = torch.nn.functional.avg_pool2d(p, pool, stride=1, padding=pool // 2, count_include_pad=False)
        presence = p.amax(dim=(2, 3))  # (B, K + 1)
        background = (1.0 - presence[:, 0]).mean()
        parts = (1.0 - presence[:, 1:].amax(dim=0)).mean()
        return background + parts


def boundary_saliency(colour: Tensor, frac: float = 0.05, pool: int = 4) -> Tensor:
    """Boundary-prior saliency: distance of each pixel's colour to the nearest colour on the image border.

    Background is what looks like the border (classic boundary-prior saliency); an object's colours are
    far from every border colour. Computed on ``pool`` x ``pool`` average-pooled colours (cheap: one
    ``cdist`` of (h w) pixels against the border band), upsampled bilinearly, without gradient.

    Args:
        colour: (B, C, H, W) per-pixel colour (CIE-Lab in the training step).
        frac: border band width as a fraction of the shorter side.
        pool: pooling window.

    Returns:
        (B, 1, H, W) non-negative distances, divided by each image's mean distance.

    Example:
        >>> x = torch.zeros(1, 3, 16, 16); x[:, :, 6:10, 6:10] = 50.0
        >>> s = boundary_saliency(x, 0.1, pool=2)
        >>> bool(s[0, 0, 8, 8] > s[0, 0, 0, 0])
        True
    """
    _check_prob_map("colour", colour)
    B, C, H, W = colour.shape
    with torch.no_grad(), torch.autocast(device_type=colour.device.type, enabled=False):
        g = torch.nn.functional.avg_pool2d(colour.float(), pool) if pool > 1 else colour.float()
        h, w = g.shape[-2:]
        band = border_band(h, w, max(frac, 0.5 / min(h, w) + 1e-6), g.device).flatten()  # (h w,)
        flat = g.flatten(2).transpose(1, 2)  # (B, h w, C)
        dist = torch.cdist(flat, flat[:, band]).amin(dim=2).view(B, 1, h, w)  # (B, 1, h, w)
        dist = dist / dist.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        return torch.nn.functional.interpolate(dist, size=(H, W), mode="bilinear", align_corners=False)


def saliency_loss(fg_prob: Tensor, saliency: Tensor, fg_fraction: float, sharpness: float = 10.0) -> Tensor:
    """Cross-entropy of the predicted foreground against a soft target from :func:`boundary_saliency`.

    The target is ``sigmoid(sharpness (s / q - 1))`` with ``q`` each image's ``1 - fg_fraction`` quantile
    of the saliency ``s``: about ``fg_fraction`` of each image's most salient pixels are foreground.

    Args:
        fg_prob: (B, 1, H, W) predicted foreground probability.
        saliency: (B, 1, H, W) from :func:`boundary_saliency` (no gradient).
        fg_fraction: expected foreground share, in (0, 1).
        sharpness: slope of the soft threshold.

    Returns:
        Scalar loss.
    """
    _check_prob_map("fg_prob", fg_prob, 1)
    if not 0.0 < fg_fraction < 1.0:
        raise ValueError(f"fg_fraction must be in (0, 1), got {fg_fraction}")
    with torch.autocast(device_type=fg_prob.device.type, enabled=False):
        s = saliency.float().flatten(1)  # (B, H W)
        q = torch.quantile(s, 1.0 - fg_fraction, dim=1, keepdim=True).clamp_min(1e-6)  # (B, 1)
        target = torch.sigmoid(sharpness * (s / q - 1.0)).view_as(fg_prob)
        p = fg_prob.float().clamp(LOG_EPS, 1 - LOG_EPS)
        return -(target * p.log() + (1 - target) * (1 - p).log()).mean()


__all__ = [
    "border_background_loss",
    "border_band",
    "boundary_saliency",
    "foreground_area_loss",
    "presence_loss",
    "saliency_loss",
]
