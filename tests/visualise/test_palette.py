import hashlib

import numpy as np
import pytest

from partdisco.visualise import palette as palette_module
from partdisco.visualise.palette import (
    BACKGROUND_COLOR,
    PALETTE,
    _build_palette,
    _srgb_to_lab,
    colorize,
    legend,
    palette_for_png,
)

# sha256 of PALETTE.tobytes(); a change here recolours every saved picture, so it must be deliberate.
PALETTE_SHA256 = "35b09d8dc63bb0ae0d735ec27a726d4c072ee73c84332695f94bb8bb37c7a794"


class TestPalette:
    def test_shape_dtype(self):
        assert PALETTE.shape == (256, 3)
        assert PALETTE.dtype == np.uint8

    def test_deterministic(self):
        np.testing.assert_array_equal(_build_palette(), PALETTE)
        assert hashlib.sha256(PALETTE.tobytes()).hexdigest() == PALETTE_SHA256

    def test_background_is_black(self):
        assert tuple(PALETTE[0].tolist()) == BACKGROUND_COLOR == (0, 0, 0)

    def test_first_colours_are_okabe_ito(self):
        assert PALETTE[1].tolist() == [230, 159, 0]
        assert PALETTE[2].tolist() == [86, 180, 233]
        assert PALETTE[3].tolist() == [0, 158, 115]

    def test_generated_colours_pinned(self):
        assert PALETTE[21].tolist() == [255, 0, 255]
        assert PALETTE[22].tolist() == [0, 0, 255]

    def test_first_32_pairwise_distinct(self):
        lab = _srgb_to_lab(PALETTE[:33].astype(np.int64))  # background + parts 1..32
        dist = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
        np.fill_diagonal(dist, np.inf)
        assert dist.min() > 20.0  # CIE76: 2.3 is a just-noticeable difference
        assert len({tuple(c) for c in PALETTE[:33].tolist()}) == 33

    def test_all_256_unique(self):
        assert len({tuple(c) for c in PALETTE.tolist()}) == 256

    def test_read_only(self):
        with pytest.raises(ValueError):
            PALETTE[1, 0] = 0

    def test_srgb_to_lab_reference_values(self):
        lab = _srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]]))
        np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)
        np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-9)
        np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)


class TestColorize:
    def test_maps_label_to_palette(self):
        labels = np.array([[0, 1, 2], [3, 17, 255]], dtype=np.int64)
        out = colorize(labels)
        assert out.shape == (2, 3, 3) and out.dtype == np.uint8
        for i in range(2):
            for j in range(3):
                np.testing.assert_array_equal(out[i, j], PALETTE[labels[i, j]])

    def test_accepts_other_int_dtypes_and_bool(self):
        np.testing.assert_array_equal(colorize(np.array([[1]], dtype=np.uint8))[0, 0], PALETTE[1])
        np.testing.assert_array_equal(colorize(np.array([[True, False]]))[0], PALETTE[[1, 0]])

    def test_torch_tensor(self):
        torch = pytest.importorskip("torch")
        out = colorize(torch.tensor([[0, 4]]))
        np.testing.assert_array_equal(out[0], PALETTE[[0, 4]])

    def test_empty(self):
        assert colorize(np.zeros((0, 5), dtype=np.int64)).shape == (0, 5, 3)

    @pytest.mark.parametrize(
        ("labels", "error", "match"),
        [
            (np.zeros((2, 2, 2), dtype=np.int64), ValueError, r"\(H, W\)"),
            (np.zeros((2, 2), dtype=np.float32), TypeError, "integer"),
            (np.array([[0, -1]]), ValueError, "0..255"),
            (np.array([[0, 256]]), ValueError, "0..255"),
        ],
    )
    def test_exceptions(self, labels, error, match):
        with pytest.raises(error, match=match):
            colorize(labels)


class TestPaletteForPng:
    def test_flat_list(self):
        flat = palette_for_png()
        assert len(flat) == 768
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in flat)
        assert flat[:6] == [0, 0, 0, 230, 159, 0]
        np.testing.assert_array_equal(np.array(flat).reshape(256, 3), PALETTE)


class TestLegend:
    def test_shape_and_swatches(self):
        swatch, pad = 12, 3
        img = legend(4, swatch=swatch)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        # 5 rows (background + 4 parts); each swatch interior has its palette colour.
        line_h = (img.shape[0] - pad) // 5
        for row, label in enumerate(range(5)):
            y = pad + row * line_h + swatch // 2
            np.testing.assert_array_equal(img[y, pad + swatch // 2], PALETTE[label])

    def test_without_background_is_shorter(self):
        assert legend(3, include_background=False).shape[0] < legend(3).shape[0]

    def test_names_are_drawn(self):
        short = legend(2, names=["a", "b"])
        long = legend(2, names=["a", "a much longer part name"])
        assert long.shape[1] > short.shape[1]
        text_area = short[:, 3 + 12 + 3 :]
        assert (text_area < 100).any()  # dark text pixels exist

    def test_exceptions(self):
        with pytest.raises(ValueError, match="num_parts"):
            legend(0)
        with pytest.raises(ValueError, match="names"):
            legend(3, names=["a"])

    def test_font_fallback_for_old_pillow(self, monkeypatch):
        real = palette_module.ImageFont.load_default

        def load_default_without_size(*args, **kwargs):
            if args or kwargs:
                raise TypeError("load_default() takes no arguments")
            return real()

        monkeypatch.setattr(palette_module.ImageFont, "load_default", load_default_without_size)
        assert legend(2).shape[2] == 3
