"""Random similarity + thin-plate-spline warps for the equivariance loss.

Convention (pinned by ``tests/geometry/test_warps.py::test_convention_*``):
- Points are (x, y) in normalised coordinates, [-1, 1] from the first to the last pixel *centre*
  (``align_corners=True``, as the reference's RandTPS and training code, trainer_ours.py:79).
- A warp maps **target** (output) points to **source** (input) points, like ``grid_sample``:
  ``warp_image(x, p)[q] = x[map_points(p, q)]``. So a zoom factor ``s`` on the grid shrinks content by ``s``.
- ``align_corners`` has no default anywhere; this module passes ``WARP_ALIGN`` by keyword.

Sampling is separate from applying: ``sample_warp_params(B, generator)`` returns a :class:`WarpParams`
and every ``warp_*`` call with the same params is deterministic, so the image, its mask and the logits
are warped identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from partdisco.geometry.tps import tps_apply, tps_design, tps_solve, tps_system_inverse

WARP_ALIGN = True  # ref: rand_tps.py grid_sample(align_corners=True)


@dataclass
class WarpParams:
    """Per-sample parameters of ``source = s R (g(target)) + t`` with a TPS jitter ``g``.

    Attributes:
        angle: (B,) rotation in radians.
        scale: (B,) scale of the target->source map (content zoom is 1 / scale).
        translation: (B, 2) shift in normalised coordinates.
        control_points: (N, 2) fixed control grid in the target frame.
        control_offsets: (B, N, 2) TPS jitter of each control point.
    """

    angle: Tensor
    scale: Tensor
    translation: Tensor
    control_points: Tensor
    control_offsets: Tensor

    @property
    def batch_size(self) -> int:
        """Number of warps."""
        return int(self.angle.shape[0])

    def to(self, device: torch.device | str) -> WarpParams:
        """Move every tensor to ``device``."""
        return WarpParams(
            *(t.to(device, non_blocking=True) for t in (self.angle, self.scale, self.translation)),
            self.control_points.to(device, non_blocking=True),
            self.control_offsets.to(device, non_blocking=True),
        )

    def slice(self, start: int, end: int) -> WarpParams:
        """Warps ``start:end`` (e.g. this rank's share of a global draw)."""
        return WarpParams(
            self.angle[start:end],
            self.scale[start:end],
            self.translation[start:end],
            self.control_points,
            self.control_offsets[start:end],
        )

    def source_control_points(self) -> Tensor:
        """(B, N, 2) where each target control point is sampled from."""
        jittered = self.control_points.unsqueeze(0) + self.control_offsets  # (B, N, 2)
        cos, sin = torch.cos(self.angle), torch.sin(self.angle)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
        rot = rot * self.scale.view(-1, 1, 1)
        return jittered @ rot.transpose(1, 2) + self.translation.unsqueeze(1)  # (B, N, 2)


def control_grid(n: int = 5, device: torch.device | str = "cpu") -> Tensor:
    """(n * n, 2) regular grid on [-1, 1]^2, x varying fastest.

    Example:
        >>> control_grid(2)
        tensor([[-1., -1.],
                [ 1., -1.],
                [-1.,  1.],
                [ 1.,  1.]])
    """
    lin = torch.linspace(-1.0, 1.0, n, device=device)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def sample_warp_params(
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    rotation_deg: float = 60.0,
    scale_low: float = 0.7,
    scale_high: float = 2.0,
    translation: float = 0.1,
    tps_sigma: float = 0.01,
    grid_size: int = 5,
) -> WarpParams:
    """Draw random warps (on the generator's device, normally CPU).

    The reference (RandTPS, ``tps_mode=affine``) draws rotation U(-60, 60) degrees, a grid scale
    U(1 / scale_high, 1 / scale_low) (so content is zoomed by 0.7-2x), translation U(-0.1, 0.1) and
    perturbs a 5x5 control grid by U(-sigma, sigma).

    Args:
        batch_size: B.
        generator: torch.Generator for replayable draws; ``None`` uses a fresh unseeded one.
        rotation_deg: maximum absolute rotation.
        scale_low: smallest content zoom.
        scale_high: largest content zoom.
        translation: maximum absolute shift (normalised units).
        tps_sigma: control-point jitter amplitude.
        grid_size: control grid is grid_size x grid_size.

    Returns:
        WarpParams with B warps.

    Example:
        >>> p = sample_warp_params(3, torch.Generator().manual_seed(0))
        >>> p.angle.shape, p.control_offsets.shape
        (torch.Size([3]), torch.Size([3, 25, 2]))
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < scale_low <= scale_high:
        raise ValueError(f"need 0 < scale_low <= scale_high, got {scale_low}, {scale_high}")
    if generator is None:
        generator = torch.Generator()
    device = generator.device

    def uniform(*shape: int, low: float, high: float) -> Tensor:
        return torch.rand(*shape, generator=generator, device=device) * (high - low) + low

    max_angle = math.radians(rotation_deg)
    angle = uniform(batch_size, low=-max_angle, high=max_angle)
    scale = uniform(batch_size, low=1.0 / scale_high, high=1.0 / scale_low)
    shift = uniform(batch_size, 2, low=-translation, high=translation)
    grid = control_grid(grid_size, device=device)
    offsets = uniform(batch_size, grid.shape[0], 2, low=-tps_sigma, high=tps_sigma)
    return WarpParams(angle, scale, shift, grid, offsets)


def identity_params(batch_size: int, grid_size: int = 5, device: torch.device | str = "cpu") -> WarpParams:
    """Warps that leave every point where it is."""
    grid = control_grid(grid_size, device=device)
    return WarpParams(
        torch.zeros(batch_size, device=device),
        torch.ones(batch_size, device=device),
        torch.zeros(batch_size, 2, device=device),
        grid,
        torch.zeros(batch_size, grid.shape[0], 2, device=device),
    )


def map_points(params: WarpParams, points: Tensor) -> Tensor:
    """Map target-frame points to the source points they sample from.

    Args:
        params: B warps.
        points: (M, 2) shared or (B, M, 2) normalised (x, y) points in the target frame.

    Returns:
        (B, M, 2) source points.
    """
    inverse = _grid_inverse(params.control_points.shape[0], params.angle.device)
    coefficients = tps_solve(params.control_points, params.source_control_points(), inverse)  # (B, N + 3, 2)
    return tps_apply(coefficients, points, params.control_points)


def inverse_map_points(params: WarpParams, points: Tensor) -> Tensor:
    """Map source-frame points to where they land in the warped (target) frame.

    The similarity part is inverted exactly; the TPS jitter is inverted by fitting the TPS through the
    swapped control points, which is exact at the control points and O(sigma^2) between them.

    Args:
        params: B warps.
        points: (M, 2) or (B, M, 2) normalised source points.

    Returns:
        (B, M, 2) target points.
    """
    src = params.source_control_points()  # (B, N, 2)
    target = params.control_points.unsqueeze(0).expand_as(src)
    coefficients = tps_solve(src, target)  # per-sample centres
    return tps_apply(coefficients, points if points.dim() == 3 else points.expand(src.shape[0], -1, -1), src)


_INVERSE_CACHE: dict[tuple[int, str], Tensor] = {}


def _grid_inverse(num_points: int, device: torch.device) -> Tensor:
    """float64 TPS system inverse of the regular control grid, computed once per grid size and device.

    Control points of :class:`WarpParams` are always :func:`control_grid`, so the inverse never changes;
    computing it on the CPU once avoids a linear solve (and its host sync on CUDA) per step.
    """
    key = (num_points, str(device))
    inv = _INVERSE_CACHE.get(key)
    if inv is None:
        n = round(num_points**0.5)
        inv = tps_system_inverse(control_grid(n).double()).to(device)
        _INVERSE_CACHE[key] = inv
    return inv


_DESIGN_CACHE: dict[tuple[int, int, int, str], tuple[Tensor, Tensor]] = {}


def _grid_design(height: int, width: int, centers: Tensor) -> Tensor:
    """Cached TPS design matrix (H * W, N + 3) of the pixel grid; it depends only on size and centres."""
    key = (height, width, int(centers.shape[0]), str(centers.device))
    design = _DESIGN_CACHE.get(key)
    # the control grid is fixed per grid size; comparing by identity or (on the CPU) by value avoids a
    # device sync per step
    if design is None or not (
        design[1] is centers or (centers.device.type == "cpu" and torch.equal(design[1], centers))
    ):
        ys = torch.linspace(-1.0, 1.0, height, device=centers.device)
        xs = torch.linspace(-1.0, 1.0, width, device=centers.device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # (H * W, 2)
        if len(_DESIGN_CACHE) > 16:
            _DESIGN_CACHE.clear()
        design = (tps_design(pts, control_grid(round(centers.shape[0] ** 0.5), centers.device)), centers)
        _DESIGN_CACHE[key] = design
    return design[0]


def warp_grid(params: WarpParams, size: tuple[int, int]) -> Tensor:
    """Dense sampling grid for ``grid_sample`` (all B grids in one batched product).

    Args:
        params: B warps (on the device of the images).
        size: (H, W) of the output.

    Returns:
        (B, H, W, 2) float32 grid of normalised source (x, y).
    """
    height, width = size
    with torch.autocast(device_type=params.angle.device.type, enabled=False):
        inverse = _grid_inverse(params.control_points.shape[0], params.angle.device)
        coefficients = tps_solve(
            params.control_points, params.source_control_points(), inverse
        )  # (B, N + 3, 2)
        design = _grid_design(height, width, params.control_points)  # (H * W, N + 3)
        mapped = design @ coefficients  # (B, H * W, 2)
    return mapped.view(params.batch_size, height, width, 2)


def warp_image(
    x: Tensor, params: WarpParams, *, mode: str = "bilinear", grid: Tensor | None = None
) -> Tensor:
    """Warp images, masks or logits with zero padding (ref: eqv_border_padding false).

    Args:
        x: (B, C, H, W) tensor.
        params: B warps.
        mode: ``bilinear`` or ``nearest``.
        grid: optional precomputed :func:`warp_grid` output, to reuse across tensors of one size.

    Returns:
        (B, C, H, W) warped tensor, zeros where the source falls outside.
    """
    if x.dim() != 4:
        raise ValueError(f"expected x of shape (B, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] != params.batch_size:
        raise ValueError(f"x has batch {x.shape[0]} but params hold {params.batch_size} warps")
    if grid is None:
        grid = warp_grid(params, (x.shape[-2], x.shape[-1]))
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="zeros", align_corners=WARP_ALIGN)


def pixels_to_normalized(points: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel (x, y) (pixel i covers [i, i+1)) to normalised coordinates with align_corners=True."""
    height, width = size
    scale = points.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    return (points - 0.5) * scale - 1.0


def normalized_to_pixels(points: Tensor, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pixels_to_normalized`."""
    height, width = size
    scale = points.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    return (points + 1.0) * scale + 0.5
