import numpy as np
import pytest

from partdisco.visualise.overlay import (
    draw_points,
    overlay,
    part_boundaries,
    resize_labels,
    soft_overlay,
    to_uint8_image,
)
from partdisco.visualise.palette import PALETTE


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(16, 20, 3), dtype=np.uint8)


@pytest.fixture
def labels():
    lab = np.zeros((16, 20), dtype=np.int64)
    lab[2:8, 3:10] = 1
    lab[8:14, 3:10] = 2
    lab[4:12, 12:18] = 3
    return lab


class TestPartBoundaries:
    def test_square(self):
        lab = np.zeros((6, 6), dtype=np.int64)
        lab[1:5, 1:5] = 2
        edge = part_boundaries(lab)
        expected = np.zeros((6, 6), dtype=bool)
        expected[1:5, 1:5] = True
        expected[2:4, 2:4] = False
        np.testing.assert_array_equal(edge, expected)

    def test_two_parts_touching_mark_both_sides(self):
        lab = np.array([[1, 1, 2, 2]])
        np.testing.assert_array_equal(part_boundaries(lab), [[False, True, True, False]])

    def test_uniform_has_no_boundary(self):
        assert not part_boundaries(np.full((4, 4), 3)).any()
        assert not part_boundaries(np.zeros((4, 4), dtype=np.int64)).any()


class TestOverlay:
    def test_shape_dtype(self, image, labels):
        out = overlay(image, labels)
        assert out.shape == image.shape and out.dtype == np.uint8

    def test_background_unchanged_parts_changed(self, image, labels):
        out = overlay(image, labels, alpha=0.5, background_alpha=0.0)
        bg = labels == 0
        np.testing.assert_array_equal(out[bg], image[bg])
        changed = (out != image).any(axis=-1)
        assert changed[labels > 0].mean() > 0.95

    def test_blend_value(self, labels):
        img = np.full((16, 20, 3), 100, dtype=np.uint8)
        out = overlay(img, labels, alpha=0.25, draw_boundaries=False)
        expected = np.rint(0.75 * 100 + 0.25 * PALETTE[2].astype(float)).astype(np.uint8)
        np.testing.assert_array_equal(out[10, 5], expected)

    def test_alpha_zero_returns_image(self, image, labels):
        np.testing.assert_array_equal(overlay(image, labels, alpha=0.0, draw_boundaries=False), image)

    def test_alpha_zero_with_boundaries_draws_outlines_only(self, image, labels):
        out = overlay(image, labels, alpha=0.0, draw_boundaries=True)
        edge = part_boundaries(labels)
        np.testing.assert_array_equal(out[~edge], image[~edge])
        np.testing.assert_array_equal(out[edge], PALETTE[labels[edge]])

    def test_alpha_one_is_colorize_on_parts(self, image, labels):
        out = overlay(image, labels, alpha=1.0, draw_boundaries=False)
        np.testing.assert_array_equal(out[labels > 0], PALETTE[labels[labels > 0]])

    def test_background_alpha(self, labels):
        img = np.full((16, 20, 3), 200, dtype=np.uint8)
        out = overlay(img, labels, background_alpha=0.5, draw_boundaries=False)
        np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # blended with black

    @pytest.mark.parametrize(
        ("alpha", "background_alpha"), [(0.5, 0.0), (0.3, 0.7), (1.0, 0.25), (0.123, 1.0)]
    )
    def test_lookup_table_blend_equals_the_per_pixel_formula(self, alpha, background_alpha):
        """The table blend (issue #24) gives the bytes of the float64 per-pixel formula it replaced."""
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
        lab = rng.integers(0, 256, (37, 53))
        lab[:5] = 0
        opacity = np.where(lab > 0, alpha, background_alpha)[..., None]
        expected = (1.0 - opacity) * img.astype(np.float64) + opacity * PALETTE[lab].astype(np.float64)
        expected = np.clip(np.rint(expected), 0, 255).astype(np.uint8)
        out = overlay(img, lab, alpha=alpha, background_alpha=background_alpha, draw_boundaries=False)
        np.testing.assert_array_equal(out, expected)

    def test_input_not_modified(self, image, labels):
        before = image.copy()
        overlay(image, labels)
        np.testing.assert_array_equal(image, before)

    def test_torch_inputs(self, image, labels):
        torch = pytest.importorskip("torch")
        out = overlay(torch.from_numpy(image), torch.from_numpy(labels))
        np.testing.assert_array_equal(out, overlay(image, labels))

    def test_exceptions(self, image, labels):
        with pytest.raises(ValueError, match="resize_labels"):
            overlay(image, labels[::2, ::2])
        with pytest.raises(ValueError, match="alpha"):
            overlay(image, labels, alpha=1.5)
        with pytest.raises(ValueError, match="background_alpha"):
            overlay(image, labels, background_alpha=-0.1)
        with pytest.raises(TypeError, match="uint8"):
            overlay(image.astype(np.float32), labels)
        with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
            overlay(image[..., 0], labels)


class TestSoftOverlay:
    def test_one_hot_equals_overlay(self, image, labels):
        probs = np.zeros((3, 16, 20))
        for k in range(3):
            probs[k] = labels == k + 1
        out = soft_overlay(image, probs, alpha=0.5)
        np.testing.assert_array_equal(out, overlay(image, labels, alpha=0.5, draw_boundaries=False))

    def test_mix_value(self):
        img = np.zeros((1, 1, 3), dtype=np.uint8)
        probs = np.array([0.5, 0.5]).reshape(2, 1, 1)
        out = soft_overlay(img, probs, alpha=1.0)
        expected = np.rint(0.5 * PALETTE[1].astype(float) + 0.5 * PALETTE[2].astype(float))
        np.testing.assert_array_equal(out[0, 0], expected)

    def test_fg_mask_keeps_background(self, image):
        probs = np.full((4, 16, 20), 0.25)
        fg = np.zeros((1, 16, 20), dtype=np.float32)
        fg[:, :8] = 1.0
        out = soft_overlay(image, probs, fg_mask=fg)
        np.testing.assert_array_equal(out[8:], image[8:])
        assert (out[:8] != image[:8]).any()

    def test_background_channel(self, image):
        probs = np.zeros((3, 16, 20))
        probs[0] = 1.0  # all background
        np.testing.assert_array_equal(soft_overlay(image, probs, background_channel=True), image)
        probs = probs[::-1].copy()  # all mass on channel 2 -> part 2
        out = soft_overlay(image, probs, alpha=1.0, background_channel=True)
        np.testing.assert_array_equal(out[0, 0], PALETTE[2])

    def test_torch_softmax_bf16(self, image):
        torch = pytest.importorskip("torch")
        probs = torch.randn(4, 16, 20, generator=torch.Generator().manual_seed(0)).softmax(0)
        out = soft_overlay(image, probs.to(torch.bfloat16))
        assert out.shape == image.shape and out.dtype == np.uint8

    def test_exceptions(self, image):
        with pytest.raises(ValueError, match=r"\(K, H, W\)"):
            soft_overlay(image, np.zeros((16, 20)))
        with pytest.raises(ValueError, match="must match"):
            soft_overlay(image, np.zeros((2, 8, 8)))
        with pytest.raises(ValueError, match="fg_mask"):
            soft_overlay(image, np.zeros((2, 16, 20)), fg_mask=np.ones((8, 8)))


class TestDrawPoints:
    def test_changes_pixels_near_point_only(self):
        img = np.full((32, 32, 3), 128, dtype=np.uint8)
        x, y, radius = 10.5, 20.5, 3.0
        out = draw_points(img, np.array([[x, y]]), radius=radius)
        changed = (out != img).any(axis=-1)
        ys, xs = np.nonzero(changed)
        dist = np.hypot(xs + 0.5 - x, ys + 0.5 - y)
        assert changed.sum() > 20
        assert dist.max() <= radius + 1.0
        np.testing.assert_array_equal(out[20, 10], PALETTE[1])
        np.testing.assert_array_equal(out[20, 10 + 4], [0, 0, 0])  # outline ring

    def test_palette_per_row_and_custom_colors(self):
        img = np.zeros((20, 40, 3), dtype=np.uint8)
        pts = np.array([[5.5, 5.5], [25.5, 10.5]])
        out = draw_points(img, pts, radius=2)
        np.testing.assert_array_equal(out[5, 5], PALETTE[1])
        np.testing.assert_array_equal(out[10, 25], PALETTE[2])
        out = draw_points(img, pts, colors=(255, 0, 0), radius=2)
        np.testing.assert_array_equal(out[10, 25], [255, 0, 0])
        out = draw_points(img, pts, colors=np.array([[1, 2, 3], [4, 5, 6]]), radius=2)
        np.testing.assert_array_equal(out[10, 25], [4, 5, 6])

    def test_invisible_nan_and_outside_points_skipped(self):
        img = np.zeros((10, 10, 3), dtype=np.uint8)
        pts = np.array([[5.0, 5.0, 0.0], [np.nan, 2.0, 1.0], [100.0, 100.0, 1.0]])
        np.testing.assert_array_equal(draw_points(img, pts), img)

    def test_point_on_border_is_clipped(self):
        img = np.zeros((10, 10, 3), dtype=np.uint8)
        out = draw_points(img, np.array([[0.0, 0.0]]), radius=2, outline=False)
        np.testing.assert_array_equal(out[0, 0], PALETTE[1])
        assert (out != 0).any(axis=-1).sum() < 10

    def test_input_not_modified(self):
        img = np.zeros((10, 10, 3), dtype=np.uint8)
        draw_points(img, np.array([[5.0, 5.0]]))
        assert not img.any()

    def test_exceptions(self):
        img = np.zeros((10, 10, 3), dtype=np.uint8)
        with pytest.raises(ValueError, match=r"\(K, 2\)"):
            draw_points(img, np.zeros((3, 4)))
        with pytest.raises(ValueError, match="radius"):
            draw_points(img, np.zeros((1, 2)), radius=0)
        with pytest.raises(ValueError, match="colors"):
            draw_points(img, np.zeros((2, 2)), colors=np.zeros((3, 3)))


class TestToUint8Image:
    def test_chw_float_unit_range(self):
        x = np.zeros((3, 4, 5), dtype=np.float32)
        x[0] = 1.0
        x[1] = 0.5
        out = to_uint8_image(x)
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[0, 0], [255, 128, 0])

    def test_hwc_float_is_unit_range_and_0_255_needs_value_range(self):
        # one rule for floats (imaging/convert.py): [0, 1]; 8-bit-unit floats say so with value_range
        np.testing.assert_array_equal(to_uint8_image(np.full((4, 5, 3), 200.0))[0, 0], [255, 255, 255])
        out = to_uint8_image(np.full((4, 5, 3), 200.0), value_range=(0, 255))
        np.testing.assert_array_equal(out[0, 0], [200, 200, 200])

    def test_uint8_passthrough(self):
        x = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
        np.testing.assert_array_equal(to_uint8_image(x), x)

    def test_grey_rgba_and_clipping(self):
        assert to_uint8_image(np.zeros((4, 5))).shape == (4, 5, 3)
        assert to_uint8_image(np.zeros((1, 4, 5))).shape == (4, 5, 3)
        rgba = np.zeros((4, 5, 4), dtype=np.uint8)
        rgba[..., 3] = 255
        np.testing.assert_array_equal(to_uint8_image(rgba), np.zeros((4, 5, 3)))
        rgba[..., :3], rgba[..., 3] = 200, 51  # alpha is composited on black, not dropped
        np.testing.assert_array_equal(to_uint8_image(rgba), np.full((4, 5, 3), 40))
        out = to_uint8_image(np.array([[-5, 300]], dtype=np.int64))
        np.testing.assert_array_equal(out[0, :, 0], [0, 255])

    def test_value_range_and_nan(self):
        out = to_uint8_image(np.array([[-1.0, 0.0, 1.0, np.nan]]), value_range=(-1.0, 1.0))
        np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 128])

    def test_ambiguous_layout_tensor_is_chw_array_is_hwc(self):
        torch = pytest.importorskip("torch")
        x = np.zeros((3, 7, 3), dtype=np.float32)
        assert to_uint8_image(x).shape == (3, 7, 3)
        assert to_uint8_image(torch.from_numpy(x)).shape == (7, 3, 3)

    def test_torch_bf16(self):
        torch = pytest.importorskip("torch")
        out = to_uint8_image(torch.ones(3, 4, 5, dtype=torch.bfloat16))
        np.testing.assert_array_equal(out, np.full((4, 5, 3), 255))

    def test_exceptions(self):
        with pytest.raises(ValueError, match="expected image"):
            to_uint8_image(np.zeros((5, 6, 7)))
        with pytest.raises(ValueError, match="expected image"):
            to_uint8_image(np.zeros((1, 3, 4, 4)))
        with pytest.raises(ValueError, match="value_range"):
            to_uint8_image(np.zeros((4, 4)), value_range=(1.0, 1.0))


class TestResizeLabels:
    def test_integer_upscale_repeats(self):
        lab = np.array([[1, 2], [3, 4]])
        expected = np.repeat(np.repeat(lab, 3, axis=0), 3, axis=1)
        np.testing.assert_array_equal(resize_labels(lab, (6, 6)), expected)

    def test_downscale_reads_pixel_centres(self):
        lab = np.arange(16).reshape(4, 4)
        np.testing.assert_array_equal(resize_labels(lab, (2, 2)), [[5, 7], [13, 15]])

    def test_matches_pil_nearest(self):
        from PIL import Image

        rng = np.random.default_rng(1)
        lab = rng.integers(0, 5, size=(7, 9)).astype(np.uint8)
        for size in [(13, 5), (3, 20), (7, 9)]:
            pil = np.asarray(Image.fromarray(lab).resize(size[::-1], Image.Resampling.NEAREST))
            np.testing.assert_array_equal(resize_labels(lab, size), pil)

    def test_torch_and_dtype(self):
        torch = pytest.importorskip("torch")
        out = resize_labels(torch.tensor([[0, 1]]), (1, 4))
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, [[0, 0, 1, 1]])

    def test_exceptions(self):
        with pytest.raises(ValueError, match=r"\(h, w\)"):
            resize_labels(np.zeros((1, 2, 2), dtype=np.int64), (4, 4))
        with pytest.raises(ValueError, match="size"):
            resize_labels(np.zeros((2, 2), dtype=np.int64), (0, 4))
        with pytest.raises(TypeError, match="integer"):
            resize_labels(np.zeros((2, 2)), (4, 4))


@pytest.mark.gpu
class TestCudaInputs:
    def test_cuda_tensors_follow_to_cpu(self, image, labels):
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        img_t = torch.from_numpy(image).cuda()
        lab_t = torch.from_numpy(labels).cuda()
        np.testing.assert_array_equal(overlay(img_t, lab_t), overlay(image, labels))
        chw = img_t.permute(2, 0, 1).half() / 255
        np.testing.assert_array_equal(to_uint8_image(chw), to_uint8_image(image.astype(np.float32) / 255))
        probs = torch.full((3, 16, 20), 1 / 3, device="cuda")
        assert soft_overlay(img_t, probs).shape == image.shape
