from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from partdisco.config import DataConfig
from partdisco.data import cub, cub_files
from partdisco.data.io import SizeMismatchError

from .tiny_datasets import CUB_IMAGES, CUB_KP_NAMES, cub_image, cub_keypoints, cub_mask, make_tiny_cub


def _cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(name="cub", root=str(root), **kw)


def _rel(image_id: int) -> str:
    return next(item[1] for item in CUB_IMAGES if item[0] == image_id)


def _rng_with_flip(flip: bool) -> np.random.Generator:
    """A generator whose first draw is > 0.5 (flip) or not."""
    seed = next(s for s in range(100) if (np.random.default_rng(s).random() > 0.5) == flip)
    return np.random.default_rng(seed)


class TestCmrRecords:
    def test_loadmat_roundtrip(self, tiny_cub: Path) -> None:
        records = cub_files.load_cmr_records(cub_files.cmr_annotation_path(tiny_cub, "train"))
        assert [r.rel_path for r in records] == [_rel(1), _rel(3), _rel(6)]
        first = records[0]
        assert first.class_id == 1
        assert first.bbox.tolist() == [10.0, 14.0, 49.0, 33.0]  # 1-based (11, 15, 50, 34) -> 0-based
        np.testing.assert_array_equal(first.keypoints, cub_keypoints(1))  # 1-based parts -> 0-based
        np.testing.assert_array_equal(first.cmr_mask(), cub_mask(1))

    def test_missing_variable(self, tmp_path: Path) -> None:
        path = tmp_path / "x.mat"
        scipy.io.savemat(path, {"other": np.zeros(3)})
        with pytest.raises(ValueError, match="no variable 'images'"):
            cub_files.load_cmr_records(path)

    def test_missing_file_names_source(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="CMR cachedir"):
            cub_files.load_cmr_records(tmp_path / "train_cub_cleaned.mat")


class TestOfficialRecords:
    def test_splits(self, tiny_cub: Path) -> None:
        train = cub_files.load_official_records(tiny_cub, "train")
        test = cub_files.load_official_records(tiny_cub, "test")
        assert [r.rel_path for r in train] == [_rel(1), _rel(3), _rel(6)]
        assert [r.rel_path for r in test] == [_rel(2), _rel(4), _rel(5)]
        assert [r.class_id for r in test] == [1, 2, 3]
        assert test[0].box_xywh.tolist() == [12.5, 10.0, 30.0, 25.0]
        np.testing.assert_array_equal(test[0].keypoints, cub_keypoints(2))

    def test_bad_split(self, tiny_cub: Path) -> None:
        with pytest.raises(ValueError, match="'train' or 'test'"):
            cub_files.load_official_records(tiny_cub, "val")

    def test_class_from_folder_without_label_file(self, tiny_cub: Path) -> None:
        (tiny_cub / "image_class_labels.txt").unlink()
        assert [r.class_id for r in cub_files.load_official_records(tiny_cub, "test")] == [1, 2, 3]


class TestTrainingPipeline:
    def test_attributes(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=44), "train", train=True)
        assert isinstance(ds, cub.CubCropDataset) and len(ds) == 3
        assert ds.keypoint_names == CUB_KP_NAMES and ds.part_names is None and ds.has_masks
        assert ds.flip_permutation == [0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14]
        assert ds.skipped == [] and ds.augment

    def test_crop_by_hand_scale_one(self, tiny_cub: Path) -> None:
        # box (10, 14, 49, 33) -> padded (8, 13, 51, 34) -> square (8, 2, 51, 45): 44 px, S = 44
        ds = cub.build(_cfg(tiny_cub, image_size=44, jitter_frac=0.0, flip=False), "train", train=True)
        sample = ds[0]
        image = cub_image(1)
        np.testing.assert_array_equal(
            sample["image"].numpy(), image[2:46, 8:52].transpose(2, 0, 1) / np.float32(255)
        )
        np.testing.assert_array_equal(sample["fg_mask"][0].numpy(), cub_mask(1)[2:46, 8:52])
        kps = cub_keypoints(1)
        expected = kps.copy()
        expected[kps[:, 2] > 0, :2] -= (8, 2)
        expected[kps[:, 2] == 0] = 0
        np.testing.assert_allclose(sample["keypoints"].numpy(), expected)
        assert sample["bbox"].tolist() == [2.0, 12.0, 42.0, 32.0]
        assert (
            sample["name"] == f"images/{_rel(1)}"
            and int(sample["class_id"]) == 1
            and int(sample["index"]) == 0
        )
        out = sample["image"].numpy().transpose(1, 2, 0)
        for (x, y, v), (ox, oy, _) in zip(sample["keypoints"].numpy(), kps):
            if v > 0:  # the keypoint still points at the same bird pixel
                np.testing.assert_array_equal(out[int(y), int(x)] * 255, image[int(oy), int(ox)])

    def test_crop_outside_image_filled(self, tiny_cub: Path) -> None:
        # box (0, 0, 39, 19) -> padded (-2, -1, 41, 20) -> square (-2, -12, 41, 31)
        ds = cub.build(_cfg(tiny_cub, image_size=44, jitter_frac=0.0, flip=False), "train", train=True)
        sample = ds[1]
        image = sample["image"].numpy()
        mask = sample["fg_mask"][0].numpy()
        np.testing.assert_allclose(image[:, :12], 1 / 255)
        np.testing.assert_allclose(image[:, :, :2], 1 / 255)
        assert mask[:12].max() == 0 and mask[:, :2].max() == 0
        np.testing.assert_array_equal(image[:, 12:, 2:] * 255, cub_image(3)[0:32, 0:42].transpose(2, 0, 1))
        np.testing.assert_array_equal(mask[12:, 2:], cub_mask(3)[0:32, 0:42])
        assert sample["bbox"].tolist() == [2.0, 12.0, 42.0, 32.0]

    def test_resize_half(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=22, jitter_frac=0.0, flip=False), "train", train=True)
        sample = ds[0]
        crop = cub_image(1)[2:46, 8:52].astype(np.float32) / 255
        expected = crop.reshape(22, 2, 22, 2, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
        np.testing.assert_allclose(sample["image"].numpy(), expected, atol=1e-6)
        np.testing.assert_array_equal(sample["fg_mask"][0].numpy(), cub_mask(1)[2:46:2, 8:52:2])
        kps = cub_keypoints(1)
        visible = kps[:, 2] > 0
        np.testing.assert_allclose(
            sample["keypoints"].numpy()[visible, :2], (kps[visible, :2] - (8, 2)) * 0.5
        )
        assert sample["bbox"].tolist() == [1.0, 6.0, 21.0, 16.0]

    def test_flip_swaps_left_right(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=44, jitter_frac=0.0), "train", train=True)
        plain = ds.load_sample(0, _rng_with_flip(False))
        flipped = ds.load_sample(0, _rng_with_flip(True))
        torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
        torch.testing.assert_close(flipped["fg_mask"], plain["fg_mask"].flip(-1))
        perm = cub_files.CUB_FLIP_PERMUTATION
        for i in range(15):
            x, y, v = plain["keypoints"][perm[i]].tolist()
            if v > 0:
                assert flipped["keypoints"][i].tolist() == [43 - x, y, 1.0]
            else:
                assert flipped["keypoints"][i].tolist() == [0.0, 0.0, 0.0]
        # left eye (row 6) of the flipped bird is the right eye (row 10) of the original, mirrored
        assert flipped["keypoints"][6, 0] == 43 - plain["keypoints"][10, 0]
        assert flipped["bbox"].tolist() == [2.0, 12.0, 42.0, 32.0]  # symmetric box
        image = flipped["image"].numpy().transpose(1, 2, 0)
        source = cub_image(1)
        for i in range(15):
            x, y, v = flipped["keypoints"][i].tolist()
            ox, oy, ov = cub_keypoints(1)[perm[i]]
            if v > 0:
                np.testing.assert_array_equal(image[int(y), int(x)] * 255, source[int(oy), int(ox)])

    def test_jitter_follows_epoch(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=32), "train", train=True)
        a, b, c = ds[(0, 1)], ds[(0, 1)], ds[(0, 2)]
        torch.testing.assert_close(a["image"], b["image"])
        assert not torch.equal(a["bbox"], c["bbox"])

    def test_test_split_not_augmented(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=32), "test", train=True)
        assert not ds.augment and len(ds) == 3
        torch.testing.assert_close(ds[0]["image"], ds[0]["image"])

    def test_class_filter(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=32, cub_classes=[2, 3]), "train", train=True)
        assert [r.class_id for r in ds.records] == [2, 3]

    def test_root_parent_accepted(self, tiny_cub: Path) -> None:
        assert len(cub.build(_cfg(tiny_cub.parent, image_size=32), "train", train=True)) == 3

    def test_dataloader_batches(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=32), "train", train=True)
        batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
        assert batch["image"].shape == (3, 3, 32, 32) and batch["keypoints"].shape == (3, 15, 3)
        assert batch["fg_mask"].shape == (3, 1, 32, 32) and len(batch["name"]) == 3

    def test_official_fallback(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        root = make_tiny_cub(tmp_path, cmr=False)
        with caplog.at_level(logging.WARNING):
            ds = cub.build(_cfg(root, image_size=44, jitter_frac=0.0, flip=False), "train", train=True)
        assert "cachedir" in caplog.text and len(ds) == 3
        sample = ds[0]
        # segmentations == 255: the soft ring (128) above the bird is background
        np.testing.assert_array_equal(sample["fg_mask"][0].numpy(), cub_mask(1)[2:46, 8:52])
        assert sample["bbox"].tolist() == [2.0, 12.0, 42.0, 32.0]

    def test_nothing_to_train_from(self, tmp_path: Path) -> None:
        root = make_tiny_cub(tmp_path, cmr=False)
        (root / "bounding_boxes.txt").unlink()
        with pytest.raises(FileNotFoundError, match="CMR") as info:
            cub.build(_cfg(root), "train", train=True)
        assert "bounding_boxes.txt" in str(info.value)

    def test_corrupt_image_skipped(self, tiny_cub: Path, caplog: pytest.LogCaptureFixture) -> None:
        (tiny_cub / "images" / _rel(1)).write_bytes(b"\xff\xd8 not really a jpeg")
        ds = cub.build(_cfg(tiny_cub, image_size=32), "train", train=True)
        with caplog.at_level(logging.WARNING):
            sample = ds[0]
        assert int(sample["index"]) == 1 and ds.skipped == [f"images/{_rel(1)}"]
        strict = cub.build(_cfg(tiny_cub, image_size=32, strict=True), "train", train=True)
        with pytest.raises(OSError, match="Black_Footed_Albatross_0001"):
            strict[0]

    def test_mask_size_mismatch(self, tiny_cub: Path) -> None:
        Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tiny_cub / "images" / _rel(1), format="PNG")
        ds = cub.build(_cfg(tiny_cub, image_size=32), "train", train=True)
        with pytest.raises(SizeMismatchError, match="CMR mask"):
            ds[0]


class TestEvalPipeline:
    def test_fg_crop_resize_by_hand(self, tiny_cub: Path) -> None:
        # image 2: box (12.5, 10, 30, 25) -> rows 10..34, cols 12..41 (25 x 30); factor 32 / 25;
        # resized to 32 x 38 (38 = int(38.4)); centre crop to 32 x 32 removes 3 columns on the left
        ds = cub.build(_cfg(tiny_cub, image_size=32), "test", train=False)
        assert isinstance(ds, cub.CubEvalDataset) and not ds.augment
        sample = ds[0]
        assert sample["image"].shape == (3, 32, 32)
        crop = cub_image(2)[10:35, 12:42]
        pil = np.asarray(Image.fromarray(crop).resize((38, 32), Image.BILINEAR), np.float32)[:, 3:35] / 255
        np.testing.assert_allclose(sample["image"].numpy().transpose(1, 2, 0), pil, atol=1.01 / 255)
        kps = cub_keypoints(2)
        factor = 32 / 25
        for (x, y, v), (ox, oy, ov) in zip(sample["keypoints"].tolist(), kps):
            ex = max(ox - 12.5, 0) * factor - 3
            ey = max(oy - 10.0, 0) * factor
            if ov > 0 and 0 <= ex < 32 and 0 <= ey < 32:
                assert v == 1.0 and x == pytest.approx(ex, abs=1e-4) and y == pytest.approx(ey, abs=1e-4)
            else:
                assert [x, y, v] == [0.0, 0.0, 0.0]
        mask = sample["fg_mask"][0].numpy()
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
        pil_mask = np.asarray(Image.fromarray(cub_mask(2)[10:35, 12:42]).resize((38, 32), Image.BILINEAR))[
            :, 3:35
        ]
        assert (mask != pil_mask).mean() < 0.03

    def test_fg_without_resize_exact(self, tiny_cub: Path) -> None:
        # image 5: box (20, 10, 30, 30), S = 30 -> factor 1; 30 % 16 = 14 -> centre 16 x 16 at offset 7
        ds = cub.build(_cfg(tiny_cub, image_size=30), "test", train=False)
        sample = ds[2]
        expected = cub_image(5)[17:33, 27:43].transpose(2, 0, 1) / np.float32(255)
        np.testing.assert_allclose(sample["image"].numpy(), expected, atol=1e-7)
        for (x, y, v), (ox, oy, ov) in zip(sample["keypoints"].tolist(), cub_keypoints(5)):
            ex, ey = ox - 20 - 7, oy - 10 - 7
            inside = ov > 0 and 0 <= ex < 16 and 0 <= ey < 16
            assert [x, y, v] == ([ex, ey, 1.0] if inside else [0.0, 0.0, 0.0])
        assert sample["bbox"].tolist() == [0.0, 0.0, 16.0, 16.0]

    def test_full_gt_mask_exact(self, tiny_cub: Path) -> None:
        # image 4 (grayscale, 50 x 40): S = 40 -> no resize;
        # 50 -> 48 rows from row 1, 40 -> 32 cols from col 4
        ds = cub.build(_cfg(tiny_cub, image_size=40, cub_variant="full"), "test", train=False)
        sample = ds[1]
        assert sample["image"].shape == (3, 48, 32)
        gray = cub_image(4)[1:49, 4:36] / np.float32(255)
        for c in range(3):
            np.testing.assert_allclose(sample["image"][c].numpy(), gray, atol=1e-7)
        np.testing.assert_array_equal(sample["fg_mask"][0].numpy(), cub_mask(4)[1:49, 4:36])  # ring excluded
        for (x, y, v), (ox, oy, ov) in zip(sample["keypoints"].tolist(), cub_keypoints(4)):
            assert [x, y, v] == ([ox - 4, oy - 1, 1.0] if ov > 0 else [0.0, 0.0, 0.0])
        assert sample["bbox"].tolist() == [1.0, 5.0, 31.0, 43.0]
        assert int(sample["class_id"]) == 2

    def test_sup_mask_is_the_reference_foreground(self, tiny_cub: Path) -> None:
        # gray level 200 on the object: the reference's [1 - fg, fg * p] on raw levels calls any level >= 1
        # foreground (issue #11; tests/test_paper_path.py checks 0/1, 0/255 and soft masks)
        ds = cub.build(_cfg(tiny_cub, image_size=40, cub_variant="full", cub_mask="sup"), "test", train=False)
        assert ds.mask_dir == tiny_cub.parent / "supervisedlabels"
        mask = ds[1]["fg_mask"][0].numpy()
        np.testing.assert_allclose(mask, cub_mask(4)[1:49, 4:36], atol=1e-6)

    def test_sup_three_class_folder(self, tiny_cub: Path) -> None:
        shutil.copytree(tiny_cub.parent / "supervisedlabels", tiny_cub.parent / "supervisedlabels3")
        cfg = _cfg(tiny_cub, image_size=32, cub_mask="sup", cub_classes=[1, 2, 3])
        assert cub.build(cfg, "test", train=False).mask_dir.name == "supervisedlabels3"
        cfg = _cfg(tiny_cub, image_size=32, cub_mask="sup")
        assert cub.build(cfg, "test", train=False).mask_dir.name == "supervisedlabels"

    def test_sup_missing(self, tmp_path: Path) -> None:
        root = make_tiny_cub(tmp_path, supervised=False)
        with pytest.raises(FileNotFoundError, match="supervisedlabels"):
            cub.build(_cfg(root, cub_mask="sup"), "test", train=False)

    def test_no_mask(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=32, cub_mask="none"), "test", train=False)
        assert not ds.has_masks
        assert ds[0]["fg_mask"].min() == 1.0

    def test_train_split_and_class_filter(self, tiny_cub: Path) -> None:
        ds = cub.build(_cfg(tiny_cub, image_size=32, cub_classes=[1]), "train", train=False)
        assert len(ds) == 1 and ds.sample_name(0) == f"images/{_rel(1)}"

    def test_missing_official_file(self, tiny_cub: Path) -> None:
        (tiny_cub / "images.txt").unlink()
        with pytest.raises(FileNotFoundError, match="images.txt") as info:
            cub.build(_cfg(tiny_cub), "test", train=False)
        assert "official CUB" in str(info.value)

    def test_missing_segmentations(self, tiny_cub: Path) -> None:
        shutil.rmtree(tiny_cub / "segmentations")
        with pytest.raises(FileNotFoundError, match="segmentations"):
            cub.build(_cfg(tiny_cub), "test", train=False)

    def test_no_root(self) -> None:
        with pytest.raises(ValueError, match="data.root"):
            cub.build(DataConfig(name="cub"), "test", train=False)

    def test_bad_variant(self, tiny_cub: Path) -> None:
        with pytest.raises(ValueError, match="cub_variant"):
            cub.build(_cfg(tiny_cub, cub_variant="crop"), "test", train=False)


def test_class_from_rel_path() -> None:
    assert cub_files.class_from_rel_path("200.Common_Yellowthroat/x.jpg") == 200
    with pytest.raises(ValueError, match="NNN.Species"):
        cub_files.class_from_rel_path("birds/x.jpg")


def test_keypoint_names_default(tiny_cub: Path) -> None:
    (tiny_cub / "parts" / "parts.txt").unlink()
    assert cub_files.read_keypoint_names(tiny_cub) == cub_files.CUB_KEYPOINT_NAMES
