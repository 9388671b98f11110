"""Reference baselines that need no training: k-means on bbox-normalised pixel positions.

A part segmentation that only knew *where* a pixel is inside the object box would score what this
baseline scores; a method that discovers parts by appearance and shape must beat it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans(points: Tensor, k: int, generator: torch.Generator, iterations: int = 50) -> Tensor:
    """Lloyd's k-means with k-means++ initialisation.

    Args:
        points: (M, D) float points, M >= k.
        k: number of clusters.
        generator: CPU generator (the result is a pure function of it and the points).
        iterations: Lloyd iterations (stops early when assignments stop changing).

    Returns:
        (k, D) centroids.

    Example:
        >>> pts = torch.tensor([[0.0], [0.1], [10.0], [10.1]])
        >>> kmeans(pts, 2, torch.Generator().manual_seed(0)).sort(0).values.round(decimals=2).flatten()
        tensor([ 0.0500, 10.0500])
    """
    if points.dim() != 2 or points.shape[0] < k:
        raise ValueError(f"expected points (M, D) with M >= k={k}, got {tuple(points.shape)}")
    pts = points.float().cpu()
    first = torch.randint(pts.shape[0], (1,), generator=generator)
    centers = [pts[first[0]]]
    for _ in range(1, k):
        d2 = torch.cdist(pts, torch.stack(centers)).pow(2).min(1).values  # (M,)
        total = d2.sum()
        if total <= 0:
            idx = torch.randint(pts.shape[0], (1,), generator=generator)[0]
        else:
            idx = torch.multinomial(d2 / total, 1, generator=generator)[0]
        centers.append(pts[idx])
    c = torch.stack(centers)  # (k, D)
    assign = torch.full((pts.shape[0],), -1, dtype=torch.long)
    for _ in range(iterations):
        new_assign = torch.cdist(pts, c).argmin(1)  # (M,)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        sums = torch.zeros_like(c).index_add_(0, assign, pts)
        counts = torch.bincount(assign, minlength=k).float().unsqueeze(1)
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    return c


def bbox_normalized_grid(bbox: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel-centre coordinates normalised by each image's object box.

    Args:
        bbox: (B, 4) boxes (x0, y0, x1, y1) in pixels.
        size: (H, W).

    Returns:
        (B, H, W, 2) with (x - x0) / (x1 - x0) and (y - y0) / (y1 - y0).
    """
    H, W = size
    ys = torch.arange(H, dtype=torch.float32, device=bbox.device) + 0.5
    xs = torch.arange(W, dtype=torch.float32, device=bbox.device) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    x0, y0, x1, y1 = bbox.float().unbind(1)
    nx = (gx[None] - x0.view(-1, 1, 1)) / (x1 - x0).clamp_min(1e-6).view(-1, 1, 1)  # (B, H, W)
    ny = (gy[None] - y0.view(-1, 1, 1)) / (y1 - y0).clamp_min(1e-6).view(-1, 1, 1)
    return torch.stack([nx, ny], dim=-1)


def assign_to_centers(points: Tensor, centers: Tensor) -> Tensor:
    """Index of the nearest centre for every point; (..., D) -> (...) int64."""
    flat = points.reshape(-1, points.shape[-1]).float()
    return torch.cdist(flat, centers.to(flat.device).float()).argmin(1).view(points.shape[:-1])
