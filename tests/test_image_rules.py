"""An image given to the API as an array reads exactly as the same image read from a file (#12, 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partdisco.data.io import read_image
from partdisco.engine.inference.inputs import image_to_rgb_uint8 as _image_to_rgb_uint8


def test_rgba_array_composites_like_the_file(tmp_path: Path) -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (9, 11, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    from_file = read_image(tmp_path / "a.png")
    assert np.array_equal(_image_to_rgb_uint8(rgba, 0), from_file)
    assert np.array_equal(_image_to_rgb_uint8(Image.open(tmp_path / "a.png"), 0), from_file)
    assert not np.array_equal(from_file, rgba[:, :, :3])  # alpha was applied, not dropped


def test_sixteen_bit_gray_array_reads_like_the_file(tmp_path: Path) -> None:
    gray = np.random.default_rng(1).integers(0, 65536, (7, 5), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert np.array_equal(_image_to_rgb_uint8(gray, 0), read_image(tmp_path / "g.png"))


def _every_reader(array: np.ndarray) -> list[np.ndarray]:
    """The same (H, W, C) image through each "any image -> uint8 RGB" entry point."""
    import torch

    from partdisco.imaging.convert import to_rgb_uint8
    from partdisco.visualise.overlay import to_uint8_image

    chw = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0)))
    return [
        to_rgb_uint8(array),
        _image_to_rgb_uint8(array, 0),
        to_uint8_image(array),
        to_uint8_image(chw),
    ]


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(2).random((5, 6, 3), dtype=np.float32),  # floats are [0, 1]
        np.random.default_rng(4).integers(0, 256, (5, 6, 4), dtype=np.uint8),  # alpha on black
        np.random.default_rng(5).random((5, 6, 4), dtype=np.float32),  # float alpha in [0, 1]
        np.random.default_rng(6).integers(0, 65536, (5, 6, 1), dtype=np.uint16),  # 16 bit
        np.random.default_rng(7).integers(-50, 400, (5, 6, 3)),  # other integers clipped
        np.random.default_rng(8).random((5, 6, 1)) > 0.5,  # bool: 0 / 255
    ],
    ids=["float", "rgba-uint8", "rgba-float", "uint16", "int64", "bool"],
)
def test_one_value_rule_for_every_caller(array: np.ndarray) -> None:
    first, *others = _every_reader(array)
    assert first.dtype == np.uint8 and first.shape == (5, 6, 3)
    for other in others:
        np.testing.assert_array_equal(other, first)


def test_out_of_range_floats_are_clipped_by_pictures_and_refused_by_the_api() -> None:
    from partdisco.imaging.convert import to_rgb_uint8
    from partdisco.visualise.overlay import to_uint8_image

    array = np.random.default_rng(3).random((5, 6, 3)) * 3 - 1
    np.testing.assert_array_equal(to_uint8_image(array), to_rgb_uint8(array))  # pictures clip to [0, 1]
    with pytest.raises(ValueError, match="image 0: float images must hold values in 0..1"):
        _image_to_rgb_uint8(array, 0)  # partdisco.segment: a 0..255 float array is not silently binarised


def test_the_rule_values() -> None:
    from partdisco.imaging.convert import to_rgb_uint8

    px = to_rgb_uint8(np.array([[[0.5, 2.0, np.nan]]], np.float32))
    assert px.tolist() == [[[128, 255, 0]]]
    assert to_rgb_uint8(np.array([[[200, 100, 0, 51]]], np.uint8)).tolist() == [[[40, 20, 0]]]
    assert to_rgb_uint8(np.array([[[True], [False]]])).tolist() == [[[255, 255, 255], [0, 0, 0]]]
    assert to_rgb_uint8(np.array([[[257, 65535]]], np.uint16).reshape(1, 2, 1))[0, :, 0].tolist() == [1, 255]
    same = to_rgb_uint8(np.array([[[100.0, 127.5, 300.0]]]), value_range=(0, 255))
    assert same.tolist() == [[[100, 128, 255]]]
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        to_rgb_uint8(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="value_range"):
        to_rgb_uint8(np.zeros((2, 2, 3)), value_range=(1, 1))


def test_float_file_reads_in_8_bit_units(tmp_path: Path) -> None:
    values = np.array([[0.0, 100.0, 127.5, 300.0]], np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 100, 128, 255]
