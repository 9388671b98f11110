from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.config import DataConfig
from partdisco.data import deepfashion
from partdisco.data import transforms as T
from partdisco.data.io import SizeMismatchError

from .tiny_datasets import DF_IMAGES, DF_PALETTE, df_labels, pattern_image


def _cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(name="deepfashion", root=str(root), **kw)


def test_palette_matches_reference_table() -> None:
    np.testing.assert_array_equal(deepfashion.DEEPFASHION_PALETTE, DF_PALETTE)
    sums = deepfashion.DEEPFASHION_PALETTE.sum(axis=1)
    assert len(set(sums.tolist())) == 16  # the reference's RGB-sum lookup is unambiguous on the palette


class TestColorsToLabels:
    def test_exact(self) -> None:
        labels = np.arange(16).reshape(4, 4)
        np.testing.assert_array_equal(deepfashion.colors_to_labels(DF_PALETTE[labels]), labels)

    def test_unknown_nearest(self, caplog: pytest.LogCaptureFixture) -> None:
        rgb = DF_PALETTE[np.array([[0, 11]])].copy()
        rgb[0, 1] = [250, 3, 2]  # close to red (label 11)
        with caplog.at_level(logging.WARNING):
            out = deepfashion.colors_to_labels(rgb, "seg.png")
        assert out.tolist() == [[0, 11]]
        assert "seg.png" in caplog.text and "[250, 3, 2]" in caplog.text

    def test_unknown_strict(self) -> None:
        rgb = np.array([[[1, 2, 3]]], np.uint8)
        with pytest.raises(ValueError, match="x_segment.png"):
            deepfashion.colors_to_labels(rgb, "x_segment.png", strict=True)


class TestSplits:
    def test_read_split(self, tiny_deepfashion: Path) -> None:
        assert deepfashion.read_split(tiny_deepfashion, "train") == [
            f for s, f, _, _ in DF_IMAGES if s == "train"
        ]
        # test = query then gallery
        assert deepfashion.read_split(tiny_deepfashion, "test") == [DF_IMAGES[3][1], DF_IMAGES[4][1]]
        assert deepfashion.read_split(tiny_deepfashion, "gallery") == [DF_IMAGES[4][1]]

    def test_unknown_split(self, tiny_deepfashion: Path) -> None:
        with pytest.raises(ValueError, match="split"):
            deepfashion.read_split(tiny_deepfashion, "val")

    def test_missing_json(self, tiny_deepfashion: Path) -> None:
        (tiny_deepfashion / "DeepFashion_segmentation_gallery.json").unlink()
        with pytest.raises(FileNotFoundError, match="DeepFashion_segmentation_gallery.json") as info:
            deepfashion.build(_cfg(tiny_deepfashion), "test", train=False)
        assert "Google Drive" in str(info.value)

    def test_bad_json(self, tiny_deepfashion: Path) -> None:
        (tiny_deepfashion / "DeepFashion_segmentation_train.json").write_text('{"imgs": []}')
        with pytest.raises(ValueError, match="file_name"):
            deepfashion.read_split(tiny_deepfashion, "train")

    def test_root_resolution(self, tiny_deepfashion: Path) -> None:
        top = tiny_deepfashion.parents[2]  # .../DeepFashion
        assert deepfashion.resolve_root(top) == tiny_deepfashion
        assert deepfashion.resolve_root(tiny_deepfashion.parents[1]) == tiny_deepfashion
        assert len(deepfashion.build(_cfg(top, image_size=16), "train", train=True)) == 3


class TestTestPipeline:
    def test_resize_longest_and_pad(self, tiny_deepfashion: Path) -> None:
        # 60 x 40 -> longest side 30: 30 x 20, padded with 5 columns each side
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=30), "train", train=False)
        assert not ds.augment and ds.keypoint_names is None and ds.has_masks
        sample = ds[0]
        labels = sample["parts"].numpy()
        assert labels.shape == (30, 30) and sample["parts"].dtype == torch.int64
        np.testing.assert_array_equal(
            labels[:, 5:25], df_labels(60, 40)[::2, ::2]
        )  # cv2 nearest: src = 2 * dst
        assert labels[:, :5].max() == 0 and labels[:, 25:].max() == 0
        np.testing.assert_array_equal(sample["fg_mask"][0].numpy(), (labels != 0).astype(np.float32))
        image = sample["image"].numpy()
        source = pattern_image(60, 40, 1).astype(np.float32) / 255
        expected = source.reshape(30, 2, 20, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
        np.testing.assert_allclose(image[:, :, 5:25], expected, atol=1e-6)
        np.testing.assert_allclose(image[:, :, :5], np.repeat(image[:, :, 5:6], 5, axis=2))  # edge padding
        np.testing.assert_allclose(image[:, :, 25:], np.repeat(image[:, :, 24:25], 5, axis=2))
        ys, xs = np.nonzero(labels)
        assert sample["bbox"].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert sample["name"] == DF_IMAGES[0][1] and int(sample["class_id"]) == 0

    def test_palette_png_segment(self, tiny_deepfashion: Path) -> None:
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=25), "train", train=False)
        np.testing.assert_array_equal(ds[1]["parts"].numpy(), df_labels(50, 50)[::2, ::2])

    def test_test_split(self, tiny_deepfashion: Path) -> None:
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=22), "test", train=False)
        assert len(ds) == 2
        sample = ds[1]  # 44 x 30 -> 22 x 15, padded 3 left / 4 right
        np.testing.assert_array_equal(sample["parts"].numpy()[:, 3:18], df_labels(44, 30)[::2, ::2])
        assert sample["parts"][:, :3].max() == 0 and sample["parts"][:, 18:].max() == 0

    def test_test_split_in_training_mode_is_deterministic(self, tiny_deepfashion: Path) -> None:
        a = deepfashion.build(_cfg(tiny_deepfashion, image_size=22), "test", train=True)
        b = deepfashion.build(_cfg(tiny_deepfashion, image_size=22), "test", train=False)
        torch.testing.assert_close(a[0]["image"], b[0]["image"])


class TestTrainPipeline:
    def test_random_resized_crop_by_hand(self, tiny_deepfashion: Path) -> None:
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=24, flip=False), "train", train=True)
        assert ds.augment
        sample = ds.load_sample(0, np.random.default_rng(3))
        top, left, h, w = T.sample_resized_crop(60, 40, (0.5, 1.0), (3 / 4, 4 / 3), np.random.default_rng(3))
        assert 0.5 * 2400 * 0.9 <= h * w <= 2400
        window = df_labels(60, 40)[top : top + h, left : left + w]
        np.testing.assert_array_equal(
            sample["parts"].numpy(), T.resize_nearest(window, (24, 24), half_pixel=True)
        )
        source = pattern_image(60, 40, 1)[top : top + h, left : left + w]
        pil = np.asarray(Image.fromarray(source).resize((24, 24), Image.BILINEAR), np.float32) / 255
        np.testing.assert_allclose(sample["image"].numpy().transpose(1, 2, 0), pil, atol=1.01 / 255)

    def test_flip(self, tiny_deepfashion: Path) -> None:
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=24), "train", train=True)
        flips = []
        for seed in range(12):
            plain = ds.load_sample(0, np.random.default_rng(seed))
            rng = np.random.default_rng(seed)
            T.sample_resized_crop(60, 40, (0.5, 1.0), (3 / 4, 4 / 3), rng)
            flips.append(rng.random() > 0.5)
            ds.flip = False
            unflipped = ds.load_sample(0, np.random.default_rng(seed))
            ds.flip = True
            if flips[-1]:
                torch.testing.assert_close(plain["parts"], unflipped["parts"].flip(-1))
                torch.testing.assert_close(plain["image"], unflipped["image"].flip(-1))
            else:
                torch.testing.assert_close(plain["parts"], unflipped["parts"])
        assert any(flips) and not all(flips)

    def test_reproducible_with_torch_seed(self, tiny_deepfashion: Path) -> None:
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=24), "train", train=True)
        torch.manual_seed(4)
        a = [ds[i]["image"] for i in range(3)]
        torch.manual_seed(4)
        b = [ds[i]["image"] for i in range(3)]
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)

    def test_part_names(self, tiny_deepfashion: Path) -> None:
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=24), "train", train=True)
        assert len(ds.part_names) == 15 and ds.part_names[0] == "eyeglass" and ds.part_names[-1] == "label_15"


class TestErrors:
    def test_size_mismatch(self, tiny_deepfashion: Path) -> None:
        seg = tiny_deepfashion / DF_IMAGES[0][1].replace(".jpg", "_segment.png")
        Image.fromarray(DF_PALETTE[np.zeros((10, 10), np.int64)]).save(seg)
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=24), "train", train=False)
        with pytest.raises(SizeMismatchError) as info:
            ds[0]
        assert "02_1_front.jpg" in str(info.value) and "02_1_front_segment.png" in str(info.value)

    def test_missing_segment_skipped(self, tiny_deepfashion: Path) -> None:
        (tiny_deepfashion / DF_IMAGES[0][1].replace(".jpg", "_segment.png")).unlink()
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=24), "train", train=False)
        assert ds[0]["name"] == DF_IMAGES[1][1]
        assert ds.skipped == [DF_IMAGES[0][1]]

    def test_unknown_colour_strict(self, tiny_deepfashion: Path) -> None:
        seg = tiny_deepfashion / DF_IMAGES[0][1].replace(".jpg", "_segment.png")
        rgb = DF_PALETTE[df_labels(60, 40)].copy()
        rgb[0, 0] = [9, 9, 9]
        Image.fromarray(rgb).save(seg)
        ds = deepfashion.build(_cfg(tiny_deepfashion, image_size=24, strict=True), "train", train=False)
        with pytest.raises(ValueError, match="outside the DeepFashion palette"):
            ds[0]
        lenient = deepfashion.build(_cfg(tiny_deepfashion, image_size=24), "train", train=False)
        assert lenient[0]["parts"][0, 5] == 0  # (9, 9, 9) at source (0, 0) snaps to black
