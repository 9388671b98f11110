"""An image given to the API as an array reads exactly as the same image read from a file (#12, 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from partdisco.api import _image_to_rgb_uint8
from partdisco.data.io import read_image


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
