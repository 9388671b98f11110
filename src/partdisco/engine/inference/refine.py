"""Colour-guided refinement of a predicted foreground (inference side of mask-free training).

The background channel of a mask-free model is predicted at stride 8 and upsampled: its edges are blurred
and wander a few pixels off the object's outline, which costs most of the foreground IoU on thin parts
(docs/EXPERIMENTS.md, "Mask-free training"). The guided filter (He, Sun and Tang, "Guided Image
Filtering", ECCV 2010 / TPAMI 2013) snaps such a soft mask onto the edges of the image it belongs to: in
every window the output is a local linear function of the guide's colour, fitted to the soft mask by
ridge regression (``eps`` = the ridge), and the fits of the overlapping windows are averaged. Where the
colour is flat the mask is smoothed; where the colour changes the mask can change with it. It adds no
parameters to learn, costs a few box filters (cumulative sums: independent of the radius) and a 3 x 3
solve per pixel, and is applied at the network's input resolution with the network's input as the guide.

:func:`refine_probs` applies it to the background channel of (B, K + 1, H, W) probabilities and keeps
them a distribution: the parts share the refined foreground in their old proportions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean of ``x`` over the (2r + 1) x (2r + 1) window around every pixel, clipped at the image border.

    Computed with cumulative sums: the cost does not depend on ``radius``.

    Args:
        x: (B, C, H, W) float tensor.
        radius: window radius r >= 0 in pixels.

    Returns:
        (B, C, H, W) window means (windows that cross the border average only their in-image pixels).

    Example:
        >>> x = torch.arange(5.0).view(1, 1, 1, 5)
        >>> box_mean(x, 1)[0, 0, 0].tolist()
        [0.5, 1.0, 2.0, 3.0, 3.5]
    """
    if radius < 0:
        raise ValueError(f"box_mean: radius must be >= 0, got {radius}")
    if radius == 0:
        return x
    out = x.double()  # cumulative sums of large images lose float32 precision
    for dim in (-2, -1):
        n = out.shape[dim]
        zero = torch.zeros_like(out.narrow(dim, 0, 1))
        c = torch.cat([zero, out.cumsum(dim)], dim=dim)  # (..., n + 1, ...)
        idx = torch.arange(n, device=x.device)
        hi = (idx + radius + 1).clamp(max=n)
        lo = (idx - radius).clamp(min=0)
        out = (c.index_select(dim, hi) - c.index_select(dim, lo)) / (hi - lo).to(out).view(
            *([n] + [1] * (-dim - 1))
        )
    return out.to(x.dtype)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float) -> Tensor:
    """Colour guided filter (He et al. 2010): ``src`` filtered along the edges of ``guide``.

    Args:
        guide: (B, 3, H, W) guide image, RGB in [0, 1].
        src: (B, 1, H, W) signal to filter (e.g. a soft foreground).
        radius: window radius in pixels, >= 1.
        eps: ridge of the per-window linear fit, in squared guide units (> 0); small = follow edges closely.

    Returns:
        (B, 1, H, W) filtered signal (may leave ``src``'s range slightly; clamp if it must be a probability).

    Example:
        >>> guide = torch.zeros(1, 3, 16, 16); guide[..., 4:12, 4:12] = 1.0  # a white square on black
        >>> src = torch.zeros(1, 1, 16, 16); src[..., 3:11, 3:11] = 1.0  # a mask one pixel off
        >>> out = guided_filter(guide, src, radius=5, eps=1e-3)
        >>> square = guide[:, :1] > 0.5
        >>> int(((src > 0.5) != square).sum()), int(((out > 0.5) != square).sum())  # wrong pixels
        (30, 0)
    """
    if guide.dim() != 4 or guide.shape[1] != 3 or src.dim() != 4 or src.shape[1] != 1:
        raise ValueError(
            f"guided_filter: expected guide (B, 3, H, W) and src (B, 1, H, W), got {tuple(guide.shape)} "
            f"and {tuple(src.shape)}"
        )
    if guide.shape[0] != src.shape[0] or guide.shape[-2:] != src.shape[-2:]:
        raise ValueError(f"guided_filter: guide {tuple(guide.shape)} and src {tuple(src.shape)} differ")
    if radius < 1 or not eps > 0:
        raise ValueError(f"guided_filter: need radius >= 1 and eps > 0, got {radius}, {eps}")
    with torch.autocast(device_type=guide.device.type, enabled=False):
        g, p = guide.float(), src.float()  # (B, 3, H, W), (B, 1, H, W)
        mean_i = box_mean(g, radius)  # (B, 3, H, W)
        mean_p = box_mean(p, radius)  # (B, 1, H, W)
        cov_ip = box_mean(g * p, radius) - mean_i * mean_p  # (B, 3, H, W)
        rows, cols = torch.triu_indices(3, 3)
        prod = g[:, rows] * g[:, cols]  # (B, 6, H, W): the upper triangle of g g^T
        var6 = box_mean(prod, radius) - mean_i[:, rows] * mean_i[:, cols]  # (B, 6, H, W)
        B, _, H, W = g.shape
        sigma = g.new_zeros(B, H, W, 3, 3)
        sigma[..., rows, cols] = var6.permute(0, 2, 3, 1)
        sigma[..., cols, rows] = var6.permute(0, 2, 3, 1)
        sigma = sigma + eps * torch.eye(3, device=g.device, dtype=g.dtype)
        a = torch.linalg.solve(sigma, cov_ip.permute(0, 2, 3, 1).unsqueeze(-1)).squeeze(-1)  # (B, H, W, 3)
        a = a.permute(0, 3, 1, 2)  # (B, 3, H, W)
        b = mean_p - (a * mean_i).sum(1, keepdim=True)  # (B, 1, H, W)
        return (box_mean(a, radius) * g).sum(1, keepdim=True) + box_mean(b, radius)


def refine_radius(side: int, radius_frac: float) -> int:
    """The guided filter's window radius in pixels for an input whose shorter side is ``side``.

    Example:
        >>> refine_radius(128, 0.0625), refine_radius(96, 0.0625), refine_radius(10, 0.0625)
        (8, 6, 1)
    """
    return max(1, round(radius_frac * side))


def refine_probs(probs: Tensor, images01: Tensor, radius_frac: float, eps: float) -> Tensor:
    """Refine the background channel of (B, K + 1, H, W) probabilities along the image's colour edges.

    The foreground ``1 - p_bg`` is guided-filtered with the image as the guide (radius
    ``radius_frac`` x the shorter side, :func:`refine_radius`) and clamped to [0, 1]; the K part channels
    are rescaled to share the refined foreground in their old proportions (equally where they had no
    mass), so every pixel still sums to 1 and the part ranking (argmax over parts) is unchanged.

    Args:
        probs: (B, K + 1, H, W) softmax, channel 0 = background.
        images01: (B, 3, H, W) the images the probabilities belong to, RGB in [0, 1].
        radius_frac: window radius as a fraction of the shorter side; 0 returns ``probs`` unchanged.
        eps: the guided filter's ridge (:func:`guided_filter`).

    Returns:
        (B, K + 1, H, W) refined probabilities.

    Example:
        >>> img = torch.zeros(1, 3, 16, 16); img[..., 4:12, 4:12] = 1.0
        >>> p = torch.zeros(1, 3, 16, 16); p[:, 0] = 1.0; p[:, 0, 3:11, 3:11] = 0.0; p[:, 1, 3:11, 3:11] = 1.0
        >>> q = refine_probs(p, img, 0.3, 1e-3)  # radius 5
        >>> bool(torch.allclose(q.sum(1), torch.ones(1, 16, 16))), bool(q[0, 0, 11, 7] < 0.5 < p[0, 0, 11, 7])
        (True, True)
    """
    if probs.dim() != 4 or probs.shape[1] < 2:
        raise ValueError(f"refine_probs: expected (B, K + 1, H, W) probabilities, got {tuple(probs.shape)}")
    if radius_frac < 0:
        raise ValueError(f"refine_probs: radius_frac must be >= 0, got {radius_frac}")
    if radius_frac == 0:
        return probs
    H, W = probs.shape[-2:]
    radius = refine_radius(min(H, W), radius_frac)
    fg = guided_filter(images01.float(), 1.0 - probs[:, :1].float(), radius, eps)
    fg = fg.clamp(0.0, 1.0)  # (B, 1, H, W)
    parts = probs[:, 1:].float()  # (B, K, H, W)
    total = parts.sum(1, keepdim=True)  # (B, 1, H, W)
    share = torch.where(total > 1e-12, parts / total.clamp_min(1e-12), 1.0 / parts.shape[1])
    return torch.cat([1.0 - fg, share * fg], dim=1).to(probs.dtype)


__all__ = ["box_mean", "guided_filter", "refine_probs", "refine_radius"]
