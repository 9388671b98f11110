"""Sums over bilinearly upsampled maps at the maps' own size (geometry/upsampled.py, issue #24)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from partdisco.geometry.upsampled import Upsampled, interpolation_matrix, weighted_moments

CASES = [
    # (H, W), [(c, h, w) per map], align_corners
    ((32, 24), [(5, 8, 6), (3, 2, 3)], True),  # stride 4 and 16-ish, as VGG's taps
    ((17, 9), [(4, 1, 9), (2, 17, 1)], False),  # one-row / one-column maps, same size in one direction
    ((16, 16), [(3, 1, 1)], True),  # a single pixel: constant everywhere
    ((20, 30), [(6, 40, 12)], False),  # downsampling in one direction
    ((7, 5), [(2, 7, 5)], True),  # the same size: the identity
]


@pytest.mark.parametrize(("size", "shapes", "align"), CASES)
def test_moments_equal_the_dense_sums(size, shapes, align) -> None:
    torch.manual_seed(0)
    maps = tuple(torch.randn(2, c, h, w, dtype=torch.float64) for c, h, w in shapes)
    up = Upsampled(maps, size, align)
    dense = up.dense()  # (2, C, H, W)
    assert tuple(dense.shape) == up.shape
    weights = torch.rand(2, 3, *size, dtype=torch.float64)
    centre = torch.randn(2, dense.shape[1], dtype=torch.float64)
    first, second = weighted_moments(weights, up, centre)
    centred = dense - centre[..., None, None]
    close = {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(first, torch.einsum("bkhw,bchw->bkc", weights, centred), **close)
    torch.testing.assert_close(second, torch.einsum("bkhw,bchw->bkc", weights, centred.square()), **close)
    only_first, none = weighted_moments(weights, up, second=False)
    assert none is None
    torch.testing.assert_close(only_first, torch.einsum("bkhw,bchw->bkc", weights, dense), **close)


def test_interpolation_matrix_is_f_interpolate() -> None:
    x = torch.randn(3, 11, dtype=torch.float64)
    for out, align in ((29, True), (29, False), (4, False), (11, True)):
        want = F.interpolate(x[None], size=out, mode="linear", align_corners=align)[0]  # (3, out)
        got = x @ interpolation_matrix(out, 11, align, torch.float64, "cpu").T
        torch.testing.assert_close(got, want)


def test_moments_refuse_weights_of_another_size() -> None:
    up = Upsampled((torch.zeros(1, 2, 4, 4),), (16, 16), True)
    with pytest.raises(ValueError, match="not at the features' size"):
        weighted_moments(torch.ones(1, 1, 8, 8), up)
