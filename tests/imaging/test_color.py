import hashlib
from pathlib import Path

import pytest
import torch

from partdisco.imaging.color import (
    LAB_CIE,
    LAB_SKIMAGE,
    apply_color_jitter,
    hsv_to_rgb,
    rgb_to_grayscale,
    rgb_to_hsv,
    rgb_to_lab,
    sample_jitter_params,
)


def px(*rgb):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)


class TestRgbToLab:
    @pytest.mark.parametrize(
        "rgb, lab",
        [
            ((1.0, 0.0, 0.0), (53.2406, 80.0923, 67.2027)),  # skimage.color.rgb2lab values
            ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
            ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
            ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
            ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
            ((0.5, 0.5, 0.5), (53.3889, 0.0, 0.0)),
        ],
    )
    def test_values(self, rgb, lab):
        out = rgb_to_lab(px(*rgb)).flatten()
        assert torch.allclose(out, torch.tensor(lab), atol=1e-2)

    def test_shape_and_error(self):
        assert rgb_to_lab(torch.rand(2, 3, 4, 5)).shape == (2, 3, 4, 5)
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            rgb_to_lab(torch.rand(2, 4, 4, 5))

    def test_float32_under_autocast(self):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = rgb_to_lab(torch.rand(1, 3, 4, 4))
        assert out.dtype == torch.float32


# Colours, and their Lab values as the three copies of the conversion computed them before issue #12 merged
# them into rgb_to_lab (exact float32 values): the merge must not move a single bit.
GOLDEN_RGB = [
    [1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1], [0.5, 0.5, 0.5], [0.02, 0.03, 0.01], [0.05, 0.2, 0.9],
]  # fmt: skip
GOLDEN_SKIMAGE = [  # the colour loss's conversion (imaging/color.py)
    [100.0, -0.0024437904357910156, 0.004649162292480469],
    [0.0, 0.0, 0.0],
    [53.24058532714844, 80.0923080444336, 67.20274353027344],
    [32.29566955566406, 79.18559265136719, -107.8572998046875],
    [53.38896942138672, -0.0014603137969970703, 0.0027894973754882812],
    [1.8478434085845947, -1.3760850429534912, 1.6952604055404663],
    [34.26021194458008, 56.842044830322266, -90.15001678466797],
]
GOLDEN_CIE = [  # the texture bank's former private copy (models/perceptual.py)
    [100.0, 0.0, 0.0],
    [0.0, 0.0, 0.0],
    [53.24058532714844, 80.09418487548828, 67.20153045654297],
    [32.29566955566406, 79.18701934814453, -107.86175537109375],
    [53.38896942138672, 0.0, 0.0],
    [1.8478355407714844, -1.3759956359863281, 1.6951650381088257],
    [34.26021194458008, 56.8433837890625, -90.15412902832031],
]
# sha256 of visualise.palette.PALETTE as built by its former private copy (IEC 61966-2-1 matrix, float64).
GOLDEN_PALETTE_SHA256 = "35b09d8dc63bb0ae0d735ec27a726d4c072ee73c84332695f94bb8bb37c7a794"


class TestOneLabImplementation:
    @pytest.mark.parametrize("constants, golden", [(LAB_SKIMAGE, GOLDEN_SKIMAGE), (LAB_CIE, GOLDEN_CIE)])
    def test_equal_to_the_former_copies(self, constants, golden):
        # The goldens were written on an Intel Xeon; float32 pow / cbrt round differently on other CPUs
        # (an AMD EPYC differs by up to 4 ulps, 3e-5). The tolerance is 30x tighter than the gap between
        # the two conventions (1e-3 and more on a* / b*), so a swapped constant set still fails.
        rgb = torch.tensor(GOLDEN_RGB, dtype=torch.float32).view(-1, 3, 1, 1)
        out = rgb_to_lab(rgb, constants).view(-1, 3)
        torch.testing.assert_close(out, torch.tensor(golden, dtype=torch.float32), rtol=1e-6, atol=1e-4)
        other = GOLDEN_CIE if golden is GOLDEN_SKIMAGE else GOLDEN_SKIMAGE
        assert not torch.allclose(out, torch.tensor(other, dtype=torch.float32), rtol=1e-6, atol=1e-4)

    def test_default_is_the_reference_convention(self):
        x = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
        assert torch.equal(rgb_to_lab(x), rgb_to_lab(x, LAB_SKIMAGE))

    def test_white_point(self):
        white = px(1.0, 1.0, 1.0)
        assert rgb_to_lab(white, LAB_CIE).flatten().tolist() == [100.0, 0.0, 0.0]
        assert rgb_to_lab(white, LAB_SKIMAGE)[0, 1].item() < -1e-3  # skimage's rounded white, kept

    def test_palette_unchanged(self):
        from partdisco.visualise.palette import PALETTE

        assert hashlib.sha256(PALETTE.tobytes()).hexdigest() == GOLDEN_PALETTE_SHA256

    def test_no_other_copy_in_the_package(self):
        """The sRGB linearisation threshold 0.04045 is written once, in imaging/color.py."""
        src = Path(__file__).resolve().parents[2] / "src" / "partdisco"
        holders = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if "0.04045" in p.read_text())
        assert holders == ["imaging/color.py"]


class TestHsv:
    def test_round_trip(self):
        x = torch.rand(3, 3, 8, 8)
        assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)

    def test_known(self):
        assert torch.allclose(rgb_to_hsv(px(1.0, 0.0, 0.0)).flatten(), torch.tensor([0.0, 1.0, 1.0]))
        assert torch.allclose(rgb_to_hsv(px(0.0, 0.0, 1.0)).flatten(), torch.tensor([2 / 3, 1.0, 1.0]))


class TestColorJitter:
    def test_no_jitter_is_identity(self):
        x = torch.rand(4, 3, 8, 8)
        p = sample_jitter_params(4, torch.Generator().manual_seed(0), prob=0.0, grayscale_prob=0.0)
        assert torch.equal(apply_color_jitter(x, p), x)

    def test_grayscale_all(self):
        x = torch.rand(2, 3, 8, 8)
        p = sample_jitter_params(2, torch.Generator().manual_seed(0), prob=0.0, grayscale_prob=1.0)
        out = apply_color_jitter(x, p)
        assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
        assert torch.allclose(out[:, :1], rgb_to_grayscale(x), atol=1e-6)

    def test_brightness_only(self):
        x = torch.full((1, 3, 2, 2), 0.5)
        p = sample_jitter_params(1, torch.Generator().manual_seed(0), prob=1.0, grayscale_prob=0.0)
        p.contrast.fill_(1.0)
        p.saturation.fill_(1.0)
        p.hue.fill_(0.0)
        p.brightness.fill_(1.2)
        assert torch.allclose(apply_color_jitter(x, p), torch.full_like(x, 0.6), atol=1e-5)

    def test_replayable_and_in_range(self):
        x = torch.rand(8, 3, 8, 8)
        a = apply_color_jitter(x, sample_jitter_params(8, torch.Generator().manual_seed(5)))
        b = apply_color_jitter(x, sample_jitter_params(8, torch.Generator().manual_seed(5)))
        assert torch.equal(a, b)
        assert a.min() >= 0 and a.max() <= 1
        assert not torch.allclose(a, x)
