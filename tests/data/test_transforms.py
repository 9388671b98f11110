from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.data import keypoints as K
from partdisco.data import sample as S
from partdisco.data import transforms as T

from .tiny_datasets import pattern_image


class TestPerturbBbox:
    def test_padding_by_hand(self) -> None:
        # box 10..49 x 14..33: width 40, height 20 -> 2 px and 1 px of padding per side
        assert T.perturb_bbox([10, 14, 49, 33], 0.05, 0.05, None).tolist() == [8.0, 13.0, 51.0, 34.0]

    def test_jitter_matches_formula(self) -> None:
        u = np.random.default_rng(4).random(4)
        out = T.perturb_bbox([10, 14, 49, 33], 0.05, 0.05, np.random.default_rng(4))
        width, height = 40.0, 20.0
        expected = [
            10 - (0.05 * width + (1 - 2 * u[0]) * 0.05 * width),
            14 - (0.05 * height + (1 - 2 * u[1]) * 0.05 * height),
            49 + (0.05 * width + (1 - 2 * u[2]) * 0.05 * width),
            33 + (0.05 * height + (1 - 2 * u[3]) * 0.05 * height),
        ]
        np.testing.assert_allclose(out, expected)

    def test_jitter_bounds(self) -> None:
        rng = np.random.default_rng(0)
        for _ in range(50):
            out = T.perturb_bbox([0, 0, 99, 49], 0.05, 0.05, rng)
            assert -10 <= out[0] <= 0 and -5 <= out[1] <= 0
            assert 99 <= out[2] <= 109 and 49 <= out[3] <= 54

    def test_zero_jitter_draws_nothing(self) -> None:
        rng = np.random.default_rng(1)
        T.perturb_bbox([0, 0, 9, 9], 0.05, 0.0, rng)
        assert rng.random() == np.random.default_rng(1).random()


class TestSquareBbox:
    def test_wide(self) -> None:
        # 44 x 22 -> grow height by 22, 11 each side
        assert T.square_bbox([8.0, 13.0, 51.0, 34.0]).tolist() == [8, 2, 51, 45]

    def test_tall(self) -> None:
        assert T.square_bbox([0, 0, 3, 9]).tolist() == [-3, 0, 6, 9]

    def test_half_to_even_rounding(self) -> None:
        # width 10, height 5: growth 2.5 rounds to 2 (Python round)
        assert T.square_bbox([0, 0, 9, 4]).tolist() == [0, -2, 9, 7]
        # coordinates 3.5 -> 4, 8.5 -> 8: width 5, height 6, growth 0.5 -> 0
        assert T.square_bbox([3.5, 0, 8.5, 5]).tolist() == [4, 0, 9, 5]


class TestCropWithFill:
    def test_inside(self) -> None:
        a = np.arange(20).reshape(4, 5)
        np.testing.assert_array_equal(T.crop_with_fill(a, [1, 1, 3, 2], fill=-1), a[1:3, 1:4])

    def test_partly_outside(self) -> None:
        a = np.arange(6).reshape(2, 3)
        out = T.crop_with_fill(a, [-1, -1, 1, 0], fill=9)
        assert out.tolist() == [[9, 9, 9], [9, 0, 1]]

    def test_fully_outside_and_channels(self) -> None:
        a = np.ones((2, 2, 3), np.float32)
        out = T.crop_with_fill(a, [5, 5, 6, 7], fill=0.5)
        assert out.shape == (3, 2, 3) and np.all(out == 0.5) and out.dtype == np.float32

    def test_empty_box(self) -> None:
        with pytest.raises(ValueError, match="empty box"):
            T.crop_with_fill(np.zeros((2, 2)), [3, 0, 1, 1], fill=0)


class TestObjectCrop:
    def test_crop_box_by_hand(self) -> None:
        assert T.object_crop_box([10, 14, 49, 33], 0.05, 0.05, None).tolist() == [8, 2, 51, 45]

    def test_crop_resize_scale_one_is_exact(self) -> None:
        image = pattern_image(48, 64, 1).astype(np.float32) / 255
        out, scale = T.crop_resize_image(image, np.array([8, 2, 51, 45]), 44)
        assert scale == 1.0
        np.testing.assert_array_equal(out, image[2:46, 8:52])

    def test_crop_resize_fill_outside(self) -> None:
        image = np.full((10, 10, 3), 0.5, np.float32)
        out, scale = T.crop_resize_image(image, np.array([-2, -2, 9, 9]), 12)
        assert scale == 1.0
        np.testing.assert_allclose(out[:2], T.IMAGE_FILL)
        np.testing.assert_allclose(out[2:, 2:], 0.5)

    def test_crop_resize_half_is_block_mean(self) -> None:
        image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
        out, scale = T.crop_resize_image(image, np.array([0, 0, 7, 7]), 4)
        assert scale == 0.5
        np.testing.assert_allclose(out, image.reshape(4, 2, 4, 2, 3).mean(axis=(1, 3)), atol=1e-6)

    def test_labels_nearest(self) -> None:
        labels = np.arange(64).reshape(8, 8)
        out = T.crop_resize_labels(labels, np.array([0, 0, 7, 7]), 4)
        np.testing.assert_array_equal(out, labels[::2, ::2])
        out = T.crop_resize_labels(labels, np.array([-1, -1, 6, 6]), 8)
        assert out[0].tolist() == [0] * 8 and out[1, 1:].tolist() == labels[0, :7].tolist()


class TestSizes:
    def test_longest(self) -> None:
        assert T.size_for_longest_side(1101, 750, 256)[:2] == (256, 174)
        assert T.size_for_longest_side(44, 44, 22) == (22, 22, 0.5)

    def test_shorter_truncates(self) -> None:
        assert T.size_for_shorter_side(375, 500, 256) == (256, 341)
        assert T.size_for_shorter_side(500, 375, 256) == (341, 256)
        assert T.size_for_shorter_side(30, 30, 16) == (16, 16)

    def test_center_crop_offsets(self) -> None:
        assert T.center_crop_offsets(256, 341, 16) == (0, 2, 256, 336)
        assert T.center_crop_offsets(40, 32, 16) == (4, 0, 32, 32)


class TestResize:
    def test_identity(self) -> None:
        image = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
        np.testing.assert_array_equal(T.resize_image(image, (5, 6), antialias=True), image)

    def test_antialias_matches_pil(self) -> None:
        image = pattern_image(37, 53, 3)
        for size in [(20, 30), (60, 90), (13, 40)]:
            pil = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BILINEAR), np.float32)
            ours = T.resize_image(image.astype(np.float32), size, antialias=True)
            assert np.abs(pil - ours).max() <= 1.0

    def test_two_dimensional(self) -> None:
        out = T.resize_image(np.array([[0.0, 1.0]], np.float32), (1, 4), antialias=False)
        np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])

    def test_nearest_cv2_convention(self) -> None:
        a = np.arange(7)[None]
        assert T.resize_nearest(a, (1, 3), half_pixel=False).tolist() == [[0, 2, 4]]

    def test_nearest_pil_convention_matches_pil(self) -> None:
        labels = np.random.default_rng(0).integers(0, 250, (23, 31)).astype(np.uint8)
        for size in [(10, 7), (40, 50), (23, 16)]:
            pil = np.asarray(Image.fromarray(labels).resize(size[::-1], Image.NEAREST))
            np.testing.assert_array_equal(T.resize_nearest(labels, size, half_pixel=True), pil)

    def test_nearest_keeps_dtype_and_channels(self) -> None:
        a = np.zeros((4, 4, 2), np.int64)
        out = T.resize_nearest(a, (2, 3), half_pixel=False)
        assert out.shape == (2, 3, 2) and out.dtype == np.int64


class TestPad:
    def test_edge(self) -> None:
        a = np.array([[1.0, 2.0]])
        out, top, left = T.pad_to_size(a, 3, "edge")
        assert (top, left) == (1, 0)
        assert out.tolist() == [[1.0, 2.0, 2.0], [1.0, 2.0, 2.0], [1.0, 2.0, 2.0]]

    def test_zero_centred(self) -> None:
        out, top, left = T.pad_to_size(np.ones((4, 1), np.int64), 4, "zero")
        assert (top, left) == (0, 1)
        assert out.sum(axis=0).tolist() == [0, 4, 0, 0]

    def test_noop(self) -> None:
        a = np.ones((5, 5))
        out, top, left = T.pad_to_size(a, 4, "zero")
        assert out is a and (top, left) == (0, 0)

    def test_bad_mode(self) -> None:
        with pytest.raises(ValueError, match="mode"):
            T.pad_to_size(np.ones((2, 2)), 3, "reflect")


class TestSampleResizedCrop:
    def test_bounds_and_ranges(self) -> None:
        rng = np.random.default_rng(0)
        for _ in range(200):
            top, left, h, w = T.sample_resized_crop(60, 40, (0.5, 1.0), (3 / 4, 4 / 3), rng)
            assert 0 <= top <= 60 - h and 0 <= left <= 40 - w and h > 0 and w > 0
            assert 0.5 * 2400 * 0.9 <= h * w <= 2400

    def test_deterministic(self) -> None:
        a = T.sample_resized_crop(60, 40, (0.5, 1.0), (3 / 4, 4 / 3), np.random.default_rng(7))
        b = T.sample_resized_crop(60, 40, (0.5, 1.0), (3 / 4, 4 / 3), np.random.default_rng(7))
        assert a == b

    def test_fallback_central(self) -> None:
        # area fraction > 1 never fits: the centred window with the ratio clamped to 4/3
        assert T.sample_resized_crop(10, 100, (1.5, 2.0), (3 / 4, 4 / 3), np.random.default_rng(0)) == (
            0,
            43,
            10,
            13,
        )
        assert T.sample_resized_crop(100, 10, (1.5, 2.0), (3 / 4, 4 / 3), np.random.default_rng(0)) == (
            43,
            0,
            13,
            10,
        )
        assert T.sample_resized_crop(10, 10, (1.5, 2.0), (3 / 4, 4 / 3), np.random.default_rng(0)) == (
            0,
            0,
            10,
            10,
        )


class TestKeypoints:
    kps = np.array([[5.0, 6.0, 1.0], [7.0, 8.0, 0.0], [1.0, 2.0, 1.0]])

    def test_shift_and_scale_visible_only(self) -> None:
        out = K.scale_keypoints(K.shift_keypoints(self.kps, 1, 2), 2, 3)
        assert out.tolist() == [[8.0, 12.0, 1.0], [7.0, 8.0, 0.0], [0.0, 0.0, 1.0]]

    def test_flip_permutation(self) -> None:
        out = K.flip_keypoints(self.kps, 10, np.array([2, 1, 0]))
        assert out.tolist() == [[8.0, 2.0, 1.0], [7.0, 8.0, 0.0], [4.0, 6.0, 1.0]]

    def test_flip_twice_identity(self) -> None:
        perm = np.array([2, 1, 0])
        twice = K.flip_keypoints(K.flip_keypoints(self.kps, 10, perm), 10, perm)
        np.testing.assert_array_equal(twice, self.kps)

    def test_flip_points_at_mirrored_pixel(self) -> None:
        image = pattern_image(6, 9, 1)
        kps = np.array([[2.0, 3.0, 1.0], [8.0, 0.0, 1.0]])
        flipped = K.flip_keypoints(kps, 9, None)
        mirrored = K.hflip(image)
        for (x, y, _), (fx, fy, _) in zip(kps, flipped):
            assert mirrored[int(fy), int(fx)].tolist() == image[int(y), int(x)].tolist()

    def test_drop_outside(self) -> None:
        kps = np.array([[3.9, 0.0, 1.0], [4.0, 1.0, 1.0], [-0.1, 1.0, 1.0], [1.0, 1.0, 0.0]])
        assert K.drop_keypoints_outside(kps, 4, 4)[:, 2].tolist() == [1.0, 0.0, 0.0, 0.0]

    def test_clean(self) -> None:
        out = K.clean_keypoints(np.array([[3.0, 2.0, 0.0], [1.0, 2.0, 2.0]]))
        assert out.dtype == np.float32 and out.tolist() == [[0, 0, 0], [1, 2, 1]]


class TestBoxes:
    def test_inclusive_to_continuous(self) -> None:
        assert T.inclusive_to_continuous([10, 14, 49, 33]).tolist() == [10, 14, 50, 34]

    def test_transform_and_clip(self) -> None:
        box = T.transform_box(np.array([10.0, 14.0, 50.0, 34.0]), (8, 2), (0.5, 0.5), (22, 22))
        assert box.tolist() == [1.0, 6.0, 21.0, 16.0]
        box = T.transform_box(np.array([-5.0, -5.0, 50.0, 60.0]), (0, 0), (1, 1), (20, 30))
        assert box.tolist() == [0.0, 0.0, 30.0, 20.0]

    def test_flip(self) -> None:
        assert T.flip_box(np.array([1.0, 2.0, 4.0, 5.0]), 10).tolist() == [6.0, 2.0, 9.0, 5.0]

    def test_mask_box(self) -> None:
        mask = np.zeros((5, 6))
        mask[1:3, 2:5] = 1
        assert T.mask_box(mask).tolist() == [2, 1, 4, 2]
        assert T.mask_box(np.zeros((3, 3))) is None


class TestTensors:
    def test_converters(self) -> None:
        image = S.float_hwc_to_tensor(np.full((2, 3, 3), 1.5))
        assert image.shape == (3, 2, 3) and image.dtype == torch.float32 and image.max() == 1.0
        mask = S.mask_to_tensor(np.ones((2, 3)))
        assert mask.shape == (1, 2, 3) and mask.dtype == torch.float32
        labels = S.labels_to_tensor(np.ones((2, 3), np.uint8))
        assert labels.dtype == torch.int64

    def test_make_sample(self) -> None:
        kps = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 1.0]])
        sample = S.make_sample(
            np.zeros((4, 4, 3)), np.ones((4, 4)), np.array([0, 0, 4, 4]), 7, 2, "a.jpg", np.zeros((4, 4)), kps
        )
        assert sorted(sample) == [
            "bbox",
            "class_id",
            "fg_mask",
            "image",
            "index",
            "keypoints",
            "name",
            "parts",
        ]
        assert sample["class_id"].dtype == torch.int64 and int(sample["class_id"]) == 7
        assert sample["keypoints"].tolist() == [[0, 0, 0], [3, 4, 1]]
        assert sample["bbox"].dtype == torch.float32
        minimal = S.make_sample(np.zeros((4, 4, 3)), np.ones((4, 4)), np.zeros(4), 0, 0, "b")
        assert "parts" not in minimal and "keypoints" not in minimal
