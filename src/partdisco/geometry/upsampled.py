"""Bilinearly upsampled maps kept at their own resolution: weighted sums without the full-size tensor.

The perceptual features phi of the feature loss are small maps (VGG19's relu3_2 at stride 4 and relu5_4 at
stride 16, EfficientNet stages, ViT patch tokens) bilinearly upsampled to the image and concatenated: at
128 px and batch 6 that is a (6, 768, 128, 128) tensor (300 MB in float32) that the loss reads several
times. Everything the loss needs from it is a weighted sum over pixels, of the features or of their
squares, and bilinear upsampling is a fixed linear map ``f = U g`` with ``U = U_h (x) U_w`` separable:

- ``sum_x w(x) f(x) = sum_y (U^T w)(y) g(y)``: the weights are brought down to the map's size instead.
- ``sum_x w(x) f(x)^2``: every output pixel mixes at most 2 x 2 neighbouring map pixels, so
  ``f(x)^2`` is a sum of products ``g(p, q) g(p + dp, q + dq)`` with ``|dp|, |dq| <= 1``, each weighted by a
  "down-projected" weight map built from ``U_h`` and ``U_w`` (five distinct offsets by symmetry).

:class:`Upsampled` holds the maps and the output size; :func:`weighted_moments` gives both sums. Equal to
the dense computation up to float rounding (tested in float64), at a small fraction of its memory traffic
(issue #24: the reference configuration's training step spent more time on its features than on its
segmenter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Upsampled:
    """Maps that stand for their bilinear upsampling to ``size``, concatenated along channels.

    Attributes:
        maps: (B, c_i, h_i, w_i) tensors (each already multiplied by its weight).
        size: the (H, W) they stand for.
        align_corners: the upsampling's ``align_corners``.
    """

    maps: tuple[Tensor, ...]
    size: tuple[int, int]
    align_corners: bool

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, C, H, W) of the dense tensor (C = the maps' channels together)."""
        B = int(self.maps[0].shape[0])
        return (B, sum(int(m.shape[1]) for m in self.maps), self.size[0], self.size[1])

    def dense(self) -> Tensor:
        """The full-size tensor: each map upsampled bilinearly to ``size``, concatenated (B, C, H, W)."""
        ac = self.align_corners
        maps = [F.interpolate(m, size=self.size, mode="bilinear", align_corners=ac) for m in self.maps]
        return torch.cat(maps, dim=1)


def interpolation_matrix(
    out_size: int, in_size: int, align_corners: bool, dtype: torch.dtype, device: torch.device | str
) -> Tensor:
    """(out_size, in_size) matrix of 1-D linear resampling, as ``F.interpolate`` does it.

    Example:
        >>> interpolation_matrix(4, 2, True, torch.float64, "cpu").mul(3).round().tolist()
        [[3.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 3.0]]
    """
    eye = torch.eye(in_size, dtype=dtype, device=device)[None]  # (1, in, in): channel c = unit vector c
    return F.interpolate(eye, size=out_size, mode="linear", align_corners=align_corners)[0].T  # (out, in)


def _down(weights: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``rows^T w cols`` for every (B, K) weight map: (B, K, H, W) -> (B, K, h, w)."""
    return torch.matmul(torch.matmul(rows.T, weights), cols)


def weighted_moments(
    weights: Tensor, features: Upsampled, centre: Tensor | None = None, second: bool = True
) -> tuple[Tensor, Tensor | None]:
    """``sum_x w_k(x) (f_c(x) - centre_c)`` and ``sum_x w_k(x) (f_c(x) - centre_c)^2`` of upsampled features.

    Args:
        weights: (B, K, H, W) pixel weights at the features' ``size`` (float32 or float64; gradients flow).
        features: the upsampled maps (their dtype is promoted to the weights').
        centre: optional (B, C) value subtracted from every channel (bilinear weights sum to 1, so it is
            subtracted from the small maps); None = 0.
        second: also the second moments (False: None in their place).

    Returns:
        (B, K, C) first and second moments, in the weights' dtype.
    """
    B, K, H, W = weights.shape
    if (H, W) != tuple(features.size):
        raise ValueError(f"weights {tuple(weights.shape)} are not at the features' size {features.size}")
    dtype, device = weights.dtype, weights.device
    first: list[Tensor] = []
    seconds: list[Tensor] = []
    start = 0
    for m in features.maps:
        g = m.to(dtype)  # (B, c, h, w)
        c, h, w = g.shape[1:]
        if centre is not None:
            g = g - centre[:, start : start + c, None, None].to(dtype)
        start += c
        uh = interpolation_matrix(H, h, features.align_corners, dtype, device)  # (H, h)
        uw = interpolation_matrix(W, w, features.align_corners, dtype, device)  # (W, w)
        flat = g.flatten(2)  # (B, c, h * w)
        first.append(torch.einsum("bkn,bcn->bkc", _down(weights, uh, uw).flatten(2), flat))
        if not second:
            continue
        # f(x)^2 = sum over pairs of neighbouring map pixels; offsets (dp, dq) and (-dp, -dq) give the same
        # sum, so (0, 0) once and (0, 1), (1, 0), (1, 1), (1, -1) twice
        uh2, uw2 = uh * uh, uw * uw
        terms = [(_down(weights, uh2, uw2), g * g, 1.0)]
        if w > 1:
            uw_pair = uw[:, :-1] * uw[:, 1:]  # (W, w - 1): U_w[j, q] U_w[j, q + 1]
            terms.append((_down(weights, uh2, uw_pair), g[..., :, :-1] * g[..., :, 1:], 2.0))
        if h > 1:
            uh_pair = uh[:, :-1] * uh[:, 1:]  # (H, h - 1)
            terms.append((_down(weights, uh_pair, uw2), g[..., :-1, :] * g[..., 1:, :], 2.0))
        if h > 1 and w > 1:
            diagonal = _down(weights, uh_pair, uw_pair)  # (B, K, h - 1, w - 1): serves (1, 1) and (1, -1)
            terms.append((diagonal, g[..., :-1, :-1] * g[..., 1:, 1:], 2.0))
            terms.append((diagonal, g[..., :-1, 1:] * g[..., 1:, :-1], 2.0))
        seconds.append(sum(k * torch.einsum("bkn,bcn->bkc", a.flatten(2), p.flatten(2)) for a, p, k in terms))
    return torch.cat(first, dim=-1), torch.cat(seconds, dim=-1) if second else None  # (B, K, C) each


__all__ = ["Upsampled", "interpolation_matrix", "weighted_moments"]
