import math

import pytest
import torch
import torch.nn.functional as F

from partdisco.geometry.tps import tps_apply, tps_solve
from partdisco.geometry.warps import (
    WARP_ALIGN,
    control_grid,
    identity_params,
    inverse_map_points,
    map_points,
    normalized_to_pixels,
    pixels_to_normalized,
    sample_warp_params,
    warp_grid,
    warp_image,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class TestConvention:
    def test_convention_align_corners_true(self):
        """The warp samples with align_corners=True (ref: rand_tps.py), and the choice matters."""
        x = torch.rand(2, 3, 7, 9, generator=gen(1))
        p = sample_warp_params(2, gen(2))
        grid = warp_grid(p, (7, 9))
        ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        other = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        assert WARP_ALIGN is True
        assert torch.equal(warp_image(x, p), ref)
        assert not torch.allclose(ref, other, atol=1e-3)

    def test_convention_identity_grid_hits_pixel_centres(self):
        # with align_corners=True, -1 and 1 are the first and last pixel centres
        p = identity_params(1)
        grid = warp_grid(p, (3, 5))
        assert torch.allclose(grid[0, 0, 0], torch.tensor([-1.0, -1.0]), atol=1e-5)
        assert torch.allclose(grid[0, -1, -1], torch.tensor([1.0, 1.0]), atol=1e-5)
        assert torch.allclose(grid[0, 1, 2], torch.tensor([0.0, 0.0]), atol=1e-5)

    def test_convention_target_to_source(self):
        # a pure translation of the grid by +t samples content from +t: content moves by -t
        p = identity_params(1)
        p.translation = torch.tensor([[0.5, 0.0]])
        x = torch.zeros(1, 1, 9, 9)
        x[0, 0, 4, 6] = 1.0  # x = +0.5 in normalised coordinates (column 6 of 0..8)
        y = warp_image(x, p)
        assert y[0, 0, 4, 4] == pytest.approx(1.0, abs=1e-4)  # now at the centre

    def test_convention_pixel_normalised_round_trip(self):
        pts = torch.tensor([[0.5, 0.5], [63.5, 31.5], [10.25, 3.0]])
        n = pixels_to_normalized(pts, (32, 64))
        assert torch.allclose(n[0], torch.tensor([-1.0, -1.0]))
        assert torch.allclose(n[1], torch.tensor([1.0, 1.0]))
        assert torch.allclose(normalized_to_pixels(n, (32, 64)), pts, atol=1e-5)


class TestSampleWarpParams:
    def test_shapes_and_ranges(self):
        p = sample_warp_params(64, gen(), rotation_deg=60, scale_low=0.7, scale_high=2.0, translation=0.1)
        assert p.angle.shape == (64,) and p.translation.shape == (64, 2)
        assert p.control_offsets.shape == (64, 25, 2)
        assert p.angle.abs().max() <= math.radians(60) + 1e-6
        assert p.scale.min() >= 0.5 - 1e-6 and p.scale.max() <= 1 / 0.7 + 1e-6
        assert p.translation.abs().max() <= 0.1
        assert p.control_offsets.abs().max() <= 0.01

    def test_replayable(self):
        a, b = sample_warp_params(4, gen(3)), sample_warp_params(4, gen(3))
        assert torch.equal(a.angle, b.angle) and torch.equal(a.control_offsets, b.control_offsets)

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="batch_size"):
            sample_warp_params(0, gen())
        with pytest.raises(ValueError, match="scale_low"):
            sample_warp_params(2, gen(), scale_low=2.0, scale_high=1.0)


class TestMapPoints:
    def test_control_points_map_exactly(self):
        p = sample_warp_params(3, gen(1), tps_sigma=0.05)
        mapped = map_points(p, p.control_points)
        assert torch.allclose(mapped, p.source_control_points(), atol=1e-4)

    def test_similarity_matches_closed_form(self):
        p = sample_warp_params(5, gen(2), tps_sigma=0.0)
        pts = torch.rand(7, 2) * 2 - 1
        mapped = map_points(p, pts)
        c, s = torch.cos(p.angle), torch.sin(p.angle)
        x, y = pts[:, 0], pts[:, 1]
        ex = p.scale[:, None] * (c[:, None] * x - s[:, None] * y) + p.translation[:, :1]
        ey = p.scale[:, None] * (s[:, None] * x + c[:, None] * y) + p.translation[:, 1:]
        assert torch.allclose(mapped, torch.stack([ex, ey], -1), atol=1e-4)

    def test_inverse_round_trip(self):
        p = sample_warp_params(4, gen(4))  # reference sigma 0.01
        pts = torch.rand(50, 2) * 1.6 - 0.8
        back = inverse_map_points(p, map_points(p, pts))
        assert (back - pts).abs().max() < 2e-3
        p0 = sample_warp_params(4, gen(5), tps_sigma=0.0)
        back0 = inverse_map_points(p0, map_points(p0, pts))
        assert (back0 - pts).abs().max() < 1e-4

    def test_tps_interpolates_and_is_affine_exact(self):
        centers = control_grid(4)
        affine = torch.tensor([[1.2, 0.3], [-0.2, 0.9]])
        targets = (centers @ affine.t() + torch.tensor([0.1, -0.2])).unsqueeze(0)
        coeffs = tps_solve(centers, targets)
        pts = torch.rand(20, 2) * 2 - 1
        out = tps_apply(coeffs, pts, centers)[0]
        assert torch.allclose(out, pts @ affine.t() + torch.tensor([0.1, -0.2]), atol=1e-4)
        assert coeffs[0, :16].abs().max() < 1e-4  # no bending for an affine map


class TestWarpImage:
    def test_identity_and_shapes(self):
        x = torch.rand(2, 3, 16, 20)
        assert torch.allclose(warp_image(x, identity_params(2)), x, atol=1e-4)

    def test_same_params_warp_consistently(self):
        p = sample_warp_params(2, gen(6))
        x = torch.rand(2, 4, 16, 16)
        both = warp_image(torch.cat([x, x * 2], 1), p)
        assert torch.allclose(both[:, 4:], 2 * warp_image(x, p), atol=1e-5)

    def test_matches_grid_sample_of_mapped_points(self):
        p = sample_warp_params(2, gen(7))
        x = torch.rand(2, 1, 12, 12)
        grid = warp_grid(p, (12, 12))
        ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        assert torch.allclose(warp_image(x, p), ref)

    def test_point_moves_where_inverse_map_says(self):
        p = sample_warp_params(1, gen(8), rotation_deg=30, scale_low=1.0, scale_high=1.0)
        size = 33
        src = torch.tensor([[0.3, -0.2]])
        dst = inverse_map_points(p, src)[0, 0]
        blob = torch.zeros(1, 1, size, size)
        col, row = [round(float((v + 1) / 2 * (size - 1))) for v in src[0]]
        blob[0, 0, row, col] = 1.0
        out = warp_image(blob, p)[0, 0]
        idx = int(out.argmax())
        r, c = divmod(idx, size)
        exp_c, exp_r = [(float(v) + 1) / 2 * (size - 1) for v in dst]
        assert abs(r - exp_r) <= 1.0 and abs(c - exp_c) <= 1.0

    def test_errors(self):
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            warp_image(torch.rand(3, 8, 8), identity_params(3))
        with pytest.raises(ValueError, match="batch"):
            warp_image(torch.rand(2, 1, 8, 8), identity_params(3))

    def test_gradient_flows(self):
        x = torch.rand(1, 2, 8, 8, dtype=torch.float32, requires_grad=True)
        warp_image(x, sample_warp_params(1, gen(9))).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
