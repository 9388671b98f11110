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
import torch.nn.functional as F
from torch import Tensor


def box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean of ``x`` over the (2r + 1) x (2r + 1) window around every pixel, clipped at the image border.

    Computed with cumulative sums (centred; float32, float64 for float64 input): the cost does not depend
    on ``radius``.

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
    out = x if x.dtype == torch.float64 else x.float()
    for dim in (-2, -1):
        n = out.shape[dim]
        r = min(radius, n - 1)
        # float32 cumulative sums of centred values: centring keeps the running sums small, so the window
        # means stay within ~1e-7 of a float64 computation at 256-1024 px (3.6e-6 at 2048 px, radius 3)
        # for a quarter of the memory traffic (issue #24: the float64 filter was the slowest step of segment)
        centre = out.mean(dim=dim, keepdim=True)
        c = (out - centre).cumsum(dim)  # c[i] = sum of the centred x[0..i]
        # window sum at i = c[min(i + r, n - 1)] - c[i - r - 1] (0 for i - r - 1 < 0): shifted copies of c
        # (slices and cats: index_select cost as much as everything else together)
        hi = torch.cat([c.narrow(dim, r, n - r), c.narrow(dim, n - 1, 1).expand_as(c.narrow(dim, 0, r))], dim)
        lo = torch.cat([torch.zeros_like(c.narrow(dim, 0, r + 1)), c.narrow(dim, 0, n - r - 1)], dim)
        idx = torch.arange(n, device=x.device)
        count = (idx + r).clamp(max=n - 1) - (idx - r).clamp(min=0) + 1
        out = (hi - lo) / count.to(out).view(*([n] + [1] * (-dim - 1))) + centre
    return out.to(x.dtype)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float, subsample: int = 1) -> Tensor:
    """Colour guided filter (He et al. 2010): ``src`` filtered along the edges of ``guide``.

    Args:
        guide: (B, 3, H, W) guide image, RGB in [0, 1].
        src: (B, 1, H, W) signal to filter (e.g. a soft foreground).
        radius: window radius in pixels, >= 1.
        eps: ridge of the per-window linear fit, in squared guide units (> 0); small = follow edges closely.
        subsample: > 1 = the fast guided filter (He and Sun, arXiv:1505.00996, 2015): the per-window linear
            fits are computed on the guide and source shrunk ``subsample`` times (radius likewise) and
            upsampled, then applied to the full-resolution guide, so the output still follows its edges;
            ``subsample ** 2`` times less work. 1 = the exact filter.

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
    if radius < 1 or not eps > 0 or subsample < 1:
        raise ValueError(
            f"guided_filter: need radius >= 1, eps > 0 and subsample >= 1, got {radius}, {eps}, {subsample}"
        )
    with torch.autocast(device_type=guide.device.type, enabled=False):
        g, p = guide.float(), src.float()  # (B, 3, H, W), (B, 1, H, W)
        H, W = g.shape[-2:]
        subsample = min(subsample, H, W)
        if subsample > 1:  # fit on the shrunk images, apply the (upsampled) fit to the full-resolution guide
            small = (-(-H // subsample), -(-W // subsample))  # ceil: no row or column is dropped
            g_small, p_small = (F.interpolate(t, size=small, mode="area") for t in (g, p))
            mean_ab = _window_fits(g_small, p_small, max(1, round(radius / subsample)), eps)  # (B, 4, h, w)
            mean_ab = F.interpolate(mean_ab, size=(H, W), mode="bilinear", align_corners=False)
        else:
            mean_ab = _window_fits(g, p, radius, eps)  # (B, 4, H, W)
        return (mean_ab[:, :3] * g).sum(1, keepdim=True) + mean_ab[:, 3:]


def _window_fits(g: Tensor, p: Tensor, radius: int, eps: float) -> Tensor:
    """(B, 4, H, W): the guided filter's per-pixel linear fits ``a`` (3 channels) and ``b``, box-averaged."""
    rows, cols = torch.triu_indices(3, 3)
    prod = g[:, rows] * g[:, cols]  # (B, 6, H, W): the upper triangle of g g^T
    # all window means in one box filter (13 channels): one pass over memory instead of four
    means = box_mean(torch.cat([g, p, g * p, prod], dim=1), radius)  # (B, 13, H, W)
    mean_i, mean_p = means[:, :3], means[:, 3:4]  # (B, 3, H, W), (B, 1, H, W)
    cov_ip = means[:, 4:7] - mean_i * mean_p  # (B, 3, H, W)
    var6 = means[:, 7:] - mean_i[:, rows] * mean_i[:, cols]  # (B, 6, H, W): Sigma's upper triangle
    a = _solve_sym3(var6, cov_ip, eps)  # (B, 3, H, W): (Sigma + eps I)^-1 cov_ip per pixel
    b = mean_p - (a * mean_i).sum(1, keepdim=True)  # (B, 1, H, W)
    return box_mean(torch.cat([a, b], dim=1), radius)  # (B, 4, H, W)


def _solve_sym3(upper: Tensor, rhs: Tensor, eps: float) -> Tensor:
    """Per pixel, ``(S + eps I)^-1 rhs`` for the symmetric 3 x 3 ``S`` given by its upper triangle.

    Closed form (the adjugate over the determinant), elementwise over (B, H, W): several times faster on the
    CPU than a batched ``torch.linalg.solve`` of (B, H, W, 3, 3) systems, and equal to it within float
    rounding for the positive definite ``S + eps I`` of the guided filter.

    Args:
        upper: (B, 6, H, W) entries s00, s01, s02, s11, s12, s22.
        rhs: (B, 3, H, W).
        eps: added to the diagonal (> 0).
    """
    s00, s01, s02, s11, s12, s22 = upper.unbind(1)
    s00, s11, s22 = s00 + eps, s11 + eps, s22 + eps
    c00, c01, c02 = s11 * s22 - s12 * s12, s02 * s12 - s01 * s22, s01 * s12 - s02 * s11
    c11, c12, c22 = s00 * s22 - s02 * s02, s01 * s02 - s00 * s12, s00 * s11 - s01 * s01
    det = s00 * c00 + s01 * c01 + s02 * c02
    x, y, z = rhs.unbind(1)
    return torch.stack(
        [c00 * x + c01 * y + c02 * z, c01 * x + c11 * y + c12 * z, c02 * x + c12 * y + c22 * z], dim=1
    ) / det.unsqueeze(1)


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
