"""Batched thin-plate splines in normalised 2-D coordinates (an fp32 island).

A TPS ``f: R^2 -> R^2`` through control points ``c_i`` is
``f(p) = A [1, x, y]^T + sum_i w_i U(|p - c_i|)`` with ``U(r) = r^2 log r^2``. When every sample of a batch
shares the same *source-side* control points (the equivariance warp's fixed 5x5 grid), the system matrix
and the kernel matrix of a dense grid are shared too, so a whole batch is solved with one matrix product.
"""

from __future__ import annotations

import torch
from torch import Tensor


def tps_kernel(points: Tensor, centers: Tensor) -> Tensor:
    """Radial basis ``U(r) = r^2 log(r^2)`` between points and control centres.

    Args:
        points: (..., M, 2) coordinates.
        centers: (..., N, 2) control points.

    Returns:
        (..., M, N) kernel values, 0 where r = 0.

    Example:
        >>> tps_kernel(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
        tensor([[0.]])
    """
    d2 = (points.unsqueeze(-2) - centers.unsqueeze(-3)).pow(2).sum(-1)  # (..., M, N)
    return torch.special.xlogy(d2, d2)


def tps_system_inverse(centers: Tensor) -> Tensor:
    """Inverse of the TPS interpolation system for fixed control points.

    Args:
        centers: (N, 2) control points (float).

    Returns:
        (N + 3, N + 3) matrix ``L^-1`` in the dtype of ``centers``; coefficients for targets
        ``V (B, N, 2)`` are ``L^-1 @ [V; 0]``.
    """
    n = centers.shape[0]
    c = centers.double()
    kernel = tps_kernel(c, c)  # (N, N)
    ones = torch.ones(n, 1, dtype=c.dtype, device=c.device)
    p = torch.cat([ones, c], dim=1)  # (N, 3)
    top = torch.cat([kernel, p], dim=1)
    bottom = torch.cat([p.t(), torch.zeros(3, 3, dtype=c.dtype, device=c.device)], dim=1)
    system = torch.cat([top, bottom], dim=0)  # (N + 3, N + 3)
    return torch.linalg.inv(system).to(centers.dtype)


def tps_solve(centers: Tensor, targets: Tensor, inverse: Tensor | None = None) -> Tensor:
    """Fit TPS coefficients mapping ``centers`` to ``targets`` for a batch.

    Args:
        centers: (N, 2) shared control points, or (B, N, 2) per-sample control points.
        targets: (B, N, 2) where each control point must land.
        inverse: optional precomputed float64 :func:`tps_system_inverse` of shared ``centers``.

    Returns:
        (B, N + 3, 2) coefficients: N kernel weights then the affine rows for [1, x, y].
    """
    B, N, _ = targets.shape
    rhs = torch.cat(
        [targets.double(), targets.new_zeros(B, 3, 2, dtype=torch.float64)], dim=1
    )  # (B, N + 3, 2)
    if inverse is not None:
        inv = inverse.to(device=targets.device, dtype=torch.float64)
    elif centers.dim() == 2:
        inv = tps_system_inverse(centers.double())  # (N + 3, N + 3) float64
    else:
        inv = torch.stack([tps_system_inverse(c.double()) for c in centers])  # rare path: per-sample centres
    return (inv @ rhs).float()  # solved in float64: the grid is then accurate to ~1e-7


def tps_design(points: Tensor, centers: Tensor) -> Tensor:
    """Design matrix ``[U(|p - c|), 1, x, y]`` for evaluating a TPS at points.

    Args:
        points: (M, 2) or (B, M, 2) evaluation points.
        centers: (N, 2) or (B, N, 2) control points.

    Returns:
        (..., M, N + 3) design matrix.
    """
    kernel = tps_kernel(points, centers)  # (..., M, N)
    ones = torch.ones_like(points[..., :1])
    return torch.cat([kernel, ones, points], dim=-1)


def tps_apply(coefficients: Tensor, points: Tensor, centers: Tensor) -> Tensor:
    """Evaluate a batch of TPS at points.

    Args:
        coefficients: (B, N + 3, 2) from :func:`tps_solve`.
        points: (M, 2) shared or (B, M, 2) per-sample points.
        centers: (N, 2) or (B, N, 2) control points the TPS was fitted on.

    Returns:
        (B, M, 2) mapped points.
    """
    design = tps_design(points.float(), centers.float())  # (M, N + 3) or (B, M, N + 3)
    return design @ coefficients  # (B, M, 2)
