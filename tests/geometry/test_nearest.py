"""The one nearest-neighbour formula (issue #12, 1): exact integers, PIL's NEAREST off ties, both callers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from partdisco.data.transforms import resize_nearest as data_resize_nearest
from partdisco.geometry.nearest import nearest_indices, resize_nearest
from partdisco.visualise.overlay import resize_labels

SIZES = range(1, 49)


def _pil_nearest(in_size: int, out_size: int) -> np.ndarray:
    row = Image.fromarray(np.arange(in_size, dtype=np.int32)[None], mode="I")
    return np.asarray(row.resize((out_size, 1), Image.Resampling.NEAREST))[0].astype(np.int64)


def test_centre_sampling_is_pil_nearest_off_ties() -> None:
    checked = ties = 0
    for n_in in SIZES:
        for n_out in SIZES:
            ours, pil = nearest_indices(n_in, n_out, half_pixel=True), _pil_nearest(n_in, n_out)
            d = np.arange(n_out)
            tie = ((2 * d + 1) * n_in) % (2 * n_out) == 0  # the centre lies exactly on a pixel edge
            np.testing.assert_array_equal(ours[~tie], pil[~tie], err_msg=f"{n_in} -> {n_out}")
            # on an edge PIL's accumulated float step goes either way; ours is the right/lower pixel
            assert set((ours[tie] - pil[tie]).tolist()) <= {0, 1}, (n_in, n_out)
            checked += int((~tie).sum())
            ties += int(tie.sum())
    assert checked > 50_000 and ties > 0


@pytest.mark.parametrize(("n_in", "n_out"), [(256, 32), (64, 256), (2, 8), (96, 12), (7, 7)])
def test_ties_equal_pil_where_its_step_is_exact(n_in: int, n_out: int) -> None:
    np.testing.assert_array_equal(nearest_indices(n_in, n_out, half_pixel=True), _pil_nearest(n_in, n_out))


def test_exact_values_and_conventions() -> None:
    assert nearest_indices(2, 7, half_pixel=True).tolist() == [0, 0, 0, 1, 1, 1, 1]  # 3.5 * 2 / 7 = 1: right
    assert nearest_indices(3, 7, half_pixel=False).tolist() == [0, 0, 0, 1, 1, 2, 2]  # floor(d * 3 / 7)
    assert nearest_indices(5, 5, half_pixel=True).tolist() == list(range(5))
    assert nearest_indices(5, 5, half_pixel=False).tolist() == list(range(5))
    for n_in in SIZES:
        for n_out in SIZES:
            for half in (True, False):
                idx = nearest_indices(n_in, n_out, half_pixel=half)
                assert idx.min() >= 0 and idx.max() <= n_in - 1 and np.all(np.diff(idx) >= 0)
    with pytest.raises(ValueError, match="sizes"):
        nearest_indices(0, 3, half_pixel=True)


def test_every_caller_uses_the_one_formula() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, size=(23, 37))
    for size in [(7, 5), (46, 74), (23, 37), (50, 11), (3, 100)]:
        expected = resize_nearest(labels, size, half_pixel=True)
        np.testing.assert_array_equal(resize_labels(labels, size), expected)
        np.testing.assert_array_equal(data_resize_nearest(labels, size, half_pixel=True), expected)
    assert data_resize_nearest is resize_nearest
    image = rng.integers(0, 255, size=(9, 6, 3)).astype(np.uint8)
    out = resize_nearest(image, (4, 13), half_pixel=False)
    assert out.shape == (4, 13, 3) and out.dtype == np.uint8
