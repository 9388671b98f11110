from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.config import DataConfig
from partdisco.data import folder
from partdisco.data.io import ImageReadError, SizeMismatchError

from .tiny_datasets import (
    FOLDER_KEYPOINTS,
    FOLDER_KP_NAMES,
    FOLDER_PART_NAMES,
    folder_image,
    folder_mask,
    folder_parts,
    gray_pattern,
    make_tiny_folder,
)


def _cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(name="folder", root=str(root), **kw)


def _rng_with_flip(flip: bool) -> np.random.Generator:
    seed = next(s for s in range(100) if (np.random.default_rng(s).random() > 0.5) == flip)
    return np.random.default_rng(seed)


class TestSplits:
    def test_lists(self, tiny_folder: Path) -> None:
        train = folder.build(_cfg(tiny_folder, image_size=32), "train", train=True)
        test = folder.build(_cfg(tiny_folder, image_size=32), "test", train=False)
        assert train.files == ["bird1.png", "bird2.jpg", "bird3.png"]
        assert test.files == ["bird4.png"]  # the '# held out' comment is ignored
        assert train.augment and not test.augment

    def test_no_lists_uses_everything(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        root = make_tiny_folder(tmp_path, splits=False)
        with caplog.at_level(logging.WARNING):
            ds = folder.build(_cfg(root, image_size=32), "test", train=False)
        assert ds.files == ["bird1.png", "bird2.jpg", "bird3.png", "bird4.png"]
        assert "no train.txt" in caplog.text

    def test_complement(self, tiny_folder: Path) -> None:
        (tiny_folder / "test.txt").unlink()
        assert folder.build(_cfg(tiny_folder), "test", train=False).files == ["bird4.png"]

    def test_unknown_entry(self, tiny_folder: Path) -> None:
        (tiny_folder / "train.txt").write_text("bird1.png\nbird9.png\n")
        with pytest.raises(FileNotFoundError, match=r"train.txt:2: 'bird9.png'"):
            folder.build(_cfg(tiny_folder), "train", train=True)

    def test_no_images(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="images"):
            folder.build(_cfg(tmp_path), "train", train=True)
        (tmp_path / "images").mkdir()
        (tmp_path / "images" / "readme.txt").write_text("not an image")
        with pytest.raises(FileNotFoundError, match="no images"):
            folder.build(_cfg(tmp_path), "train", train=True)


class TestWithMasks:
    def test_attributes(self, tiny_folder: Path) -> None:
        ds = folder.build(_cfg(tiny_folder, image_size=32), "train", train=True)
        assert ds.has_masks and ds.part_names == FOLDER_PART_NAMES and ds.keypoint_names == FOLDER_KP_NAMES
        assert ds.flip_permutation == [1, 0, 2] and ds.skipped == []

    def test_crop_by_hand(self, tiny_folder: Path) -> None:
        # mask box (10, 14, 49, 33) -> square crop (8, 2, 51, 45), S = 44: no resizing
        ds = folder.build(_cfg(tiny_folder, image_size=44, jitter_frac=0.0, flip=False), "train", train=True)
        sample = ds[0]
        np.testing.assert_array_equal(
            sample["image"].numpy() * 255, folder_image("bird1.png")[2:46, 8:52].transpose(2, 0, 1)
        )
        np.testing.assert_array_equal(
            sample["fg_mask"][0].numpy(), folder_mask("bird1.png")[2:46, 8:52] / 255
        )
        np.testing.assert_array_equal(sample["parts"].numpy(), folder_parts("bird1.png")[2:46, 8:52])
        assert sample["keypoints"].tolist() == [[12.0, 18.0, 1.0], [32.0, 19.0, 1.0], [0.0, 0.0, 0.0]]
        assert sample["bbox"].tolist() == [2.0, 12.0, 42.0, 32.0]
        assert sample["name"] == "images/bird1.png"

    def test_flip_swaps_eyes(self, tiny_folder: Path) -> None:
        ds = folder.build(_cfg(tiny_folder, image_size=44, jitter_frac=0.0), "train", train=True)
        plain = ds.load_sample(0, _rng_with_flip(False))
        flipped = ds.load_sample(0, _rng_with_flip(True))
        torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
        torch.testing.assert_close(flipped["parts"], plain["parts"].flip(-1))
        assert flipped["keypoints"].tolist() == [[11.0, 19.0, 1.0], [31.0, 18.0, 1.0], [0.0, 0.0, 0.0]]

    def test_rgba_composited(self, tiny_folder: Path) -> None:
        # bird3: mask box (0, 0, 29, 19) -> crop (-2, -7, 30, 25); transparent from x = 25 (column 27)
        ds = folder.build(_cfg(tiny_folder, image_size=33, jitter_frac=0.0, flip=False), "train", train=True)
        image = ds[2]["image"].numpy()
        assert image[:, 7:, 27:].max() == 0.0
        np.testing.assert_array_equal(
            image[:, 7:, 2:27] * 255, folder_image("bird3.png")[0:26, 0:25].transpose(2, 0, 1)
        )

    def test_sixteen_bit_gray(self, tiny_folder: Path) -> None:
        # bird4: mask box (6, 6, 29, 29) -> crop (5, 5, 30, 30), S = 26
        ds = folder.build(_cfg(tiny_folder, image_size=26), "test", train=False)
        image = ds[0]["image"].numpy() * 255
        for c in range(3):
            np.testing.assert_allclose(image[c], gray_pattern(36, 36)[5:31, 5:31], atol=1e-4)
        assert ds[0]["keypoints"].abs().sum() == 0  # no keypoints listed for bird4

    def test_empty_mask_uses_whole_image(self, tiny_folder: Path) -> None:
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(tiny_folder / "masks" / "bird1.png")
        ds = folder.build(_cfg(tiny_folder, image_size=70, jitter_frac=0.0, flip=False), "train", train=True)
        sample = ds[0]
        assert sample["fg_mask"].max() == 0.0
        assert sample["bbox"].tolist() == [3.0, 11.0, 67.0, 59.0]  # crop (-3, -11, 66, 58)

    def test_dataloader(self, tiny_folder: Path) -> None:
        ds = folder.build(_cfg(tiny_folder, image_size=32), "train", train=True)
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
        assert batch["image"].shape == (3, 3, 32, 32) and batch["parts"].shape == (3, 32, 32)
        assert batch["keypoints"].shape == (3, 3, 3)


class TestWithoutMasks:
    def test_resize_and_centre_crop(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        root = make_tiny_folder(tmp_path, masks=False)
        with caplog.at_level(logging.INFO):
            ds = folder.build(_cfg(root, image_size=24, flip=False), "train", train=True)
        assert "no masks used" in caplog.text and not ds.has_masks
        sample = ds[0]
        # 48 x 64 -> 24 x 32, centre 24 columns from column 4
        pil = np.asarray(
            Image.fromarray(folder_image("bird1.png")).resize((32, 24), Image.BILINEAR), np.float32
        )
        np.testing.assert_allclose(sample["image"].numpy().transpose(1, 2, 0) * 255, pil[:, 4:28], atol=1.01)
        assert sample["fg_mask"].min() == 1.0 and sample["bbox"].tolist() == [0.0, 0.0, 24.0, 24.0]
        assert sample["keypoints"].tolist() == [[6.0, 10.0, 1.0], [16.0, 10.5, 1.0], [0.0, 0.0, 0.0]]
        parts = np.asarray(Image.fromarray(folder_parts("bird1.png")).resize((32, 24), Image.NEAREST))
        np.testing.assert_array_equal(sample["parts"].numpy(), parts[:, 4:28])

    def test_keypoints_outside_crop_dropped(self, tmp_path: Path) -> None:
        root = make_tiny_folder(tmp_path, masks=False)
        points = {"bird1.png": [[63.0, 20.0, 1.0], [8.0, 20.0, 1.0], [7.0, 20.0, 1.0]]}
        (root / "keypoints.json").write_text(json.dumps({"names": FOLDER_KP_NAMES, "keypoints": points}))
        ds = folder.build(_cfg(root, image_size=24, flip=False), "train", train=True)
        # x * 0.5 - 4: 27.5 (>= 24, dropped), 0.0 (kept), -0.5 (dropped)
        assert ds[0]["keypoints"].tolist() == [[0.0, 0.0, 0.0], [0.0, 10.0, 1.0], [0.0, 0.0, 0.0]]

    def test_eval_logs_nothing(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        root = make_tiny_folder(tmp_path, masks=False)
        with caplog.at_level(logging.WARNING):
            folder.build(_cfg(root, image_size=24), "test", train=False)
        assert "foreground" not in caplog.text


class TestBadFiles:
    def test_corrupt_skipped(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        root = make_tiny_folder(tmp_path, corrupt=True)
        ds = folder.build(_cfg(root, image_size=32), "train", train=True)
        assert ds.files[1] == "broken.png"
        with caplog.at_level(logging.WARNING):
            sample = ds[1]
        assert sample["name"] == "images/bird2.jpg" and int(sample["index"]) == 2
        assert ds.skipped == ["images/broken.png"] and "broken.png" in caplog.text
        names = [ds[i]["name"] for i in range(len(ds))]
        assert names == ["images/bird1.png", "images/bird2.jpg", "images/bird2.jpg", "images/bird3.png"]
        assert ds.skipped == ["images/broken.png"]

    def test_corrupt_strict(self, tmp_path: Path) -> None:
        root = make_tiny_folder(tmp_path, corrupt=True)
        ds = folder.build(_cfg(root, image_size=32, strict=True), "train", train=True)
        with pytest.raises(ImageReadError, match="broken.png"):
            ds[1]

    def test_size_mismatch_always_raises(self, tiny_folder: Path) -> None:
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(tiny_folder / "masks" / "bird1.png")
        ds = folder.build(_cfg(tiny_folder, image_size=32), "train", train=True)
        with pytest.raises(SizeMismatchError) as info:
            ds[0]
        assert "images/bird1.png" in str(info.value) and "masks/bird1.png" in str(info.value)

    def test_parts_size_mismatch(self, tiny_folder: Path) -> None:
        Image.fromarray(np.zeros((48, 63), np.uint8)).save(tiny_folder / "parts" / "bird1.png")
        ds = folder.build(_cfg(tiny_folder, image_size=32), "train", train=True)
        with pytest.raises(SizeMismatchError, match="parts/bird1.png"):
            ds[0]

    def test_missing_mask(self, tiny_folder: Path) -> None:
        (tiny_folder / "masks" / "bird2.png").unlink()
        with pytest.raises(FileNotFoundError, match="bird2.png"):
            folder.build(_cfg(tiny_folder), "train", train=True)

    def test_bad_keypoints(self, tiny_folder: Path) -> None:
        (tiny_folder / "keypoints.json").write_text(
            json.dumps({"names": ["a", "b"], "keypoints": FOLDER_KEYPOINTS})
        )
        with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
            folder.build(_cfg(tiny_folder), "train", train=True)
        (tiny_folder / "keypoints.json").write_text("[1, 2]")
        with pytest.raises(ValueError, match="keypoints.json"):
            folder.build(_cfg(tiny_folder), "train", train=True)

    def test_bad_permutation(self, tiny_folder: Path) -> None:
        content = {"names": FOLDER_KP_NAMES, "keypoints": {}, "flip_permutation": [0, 0, 1]}
        (tiny_folder / "keypoints.json").write_text(json.dumps(content))
        with pytest.raises(ValueError, match="permutation"):
            folder.build(_cfg(tiny_folder), "train", train=True)

    def test_default_permutation(self, tiny_folder: Path) -> None:
        content = {"names": FOLDER_KP_NAMES, "keypoints": FOLDER_KEYPOINTS}
        (tiny_folder / "keypoints.json").write_text(json.dumps(content))
        assert folder.build(_cfg(tiny_folder), "train", train=True).flip_permutation == [0, 1, 2]


class TestLoading:
    def test_workers_reproducible(self, tmp_path: Path) -> None:
        root = make_tiny_folder(tmp_path, corrupt=True)
        ds = folder.build(_cfg(root, image_size=24), "train", train=True)
        runs = []
        for global_seed in range(2):  # augmentations do not read the global generator
            torch.manual_seed(global_seed)
            loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
            runs.append([b["image"] for b in loader])
        assert len(runs[0]) == 2
        for a, b in zip(*runs):
            torch.testing.assert_close(a, b)

