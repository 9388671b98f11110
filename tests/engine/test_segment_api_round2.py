"""Issue #22, point 6: partdisco.segment reads arrays and PIL images as the CLI reads files."""

import numpy as np
import pytest
import torch
from PIL import Image

import partdisco
from partdisco.models import create_segmenter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_segmenter("resnet18", num_parts=3).eval()


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)


def test_a_float_array_in_0_255_is_refused_not_binarised(model, photo):
    with pytest.raises(ValueError, match=r"image 0: float images must hold values in 0\.\.1, got .*\.\.254"):
        partdisco.segment(model, photo.astype(np.float32), size=32)
    with pytest.raises(ValueError, match="image 1: float"):
        partdisco.segment(model, [photo, torch.from_numpy(photo).permute(2, 0, 1).float()], size=32)
    small, _ = partdisco.segment(model, np.clip(photo / 255.0 + 0.005, 0, 1.005), size=32)  # tiny overshoot
    assert small.shape == (24, 32)


@pytest.mark.parametrize("mode", ["CMYK", "P", "YCbCr", "HSV", "F"])
def test_pil_images_of_any_mode_are_converted_not_read_as_raw_channels(model, photo, mode, tmp_path):
    gray = mode == "F"
    pil = Image.fromarray(photo).convert("L").convert("F") if gray else Image.fromarray(photo).convert(mode)
    from_pil, _ = partdisco.segment(model, pil, size=32)
    rgb = np.repeat(np.asarray(pil.convert("L"))[..., None], 3, 2) if gray else np.asarray(pil.convert("RGB"))
    as_rgb, _ = partdisco.segment(model, rgb, size=32)
    np.testing.assert_array_equal(from_pil, as_rgb)
    if mode != "HSV":  # (PIL cannot write HSV files) the same image as a file gives the same map
        pil.save(tmp_path / "x.tiff")
        from_file, _ = partdisco.segment(model, str(tmp_path / "x.tiff"), size=32)
        np.testing.assert_array_equal(from_pil, from_file)
