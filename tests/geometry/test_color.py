import pytest
import torch

from partdisco.geometry.color import (
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
