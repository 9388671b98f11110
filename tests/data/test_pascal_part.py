from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from partdisco.config import DataConfig
from partdisco.data import pascal_part
from partdisco.data.io import SizeMismatchError
from partdisco.data.transforms import crop_with_fill

from .tiny_datasets import PASCAL_SHAPE, make_tiny_pascal, pattern_image


def _cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(name="pascal_part", root=str(root), **kw)


def _horse_a_labels(merged: bool) -> np.ndarray:
    """Hand-painted labels of the big horse: later lines win (head > tail > torso > legs > neck)."""
    if merged:
        head, torso, legs, tail, neck = 1, 2, 3, 4, 2
    else:
        fine = pascal_part.FINE_PARTS["horse"]
        head, torso, legs, tail, neck = (
            fine.index(n) + 1 for n in ("head", "torso", "lfuleg", "tail", "neck")
        )
    labels = np.zeros(PASCAL_SHAPE, np.int64)
    labels[10:12, 38:42] = neck
    labels[27:35, 12:17] = legs
    labels[12:27, 10:45] = torso
    labels[12:20, 10:14] = tail
    labels[5:12, 40:50] = head
    return labels


def _rng_with_flip(flip: bool) -> np.random.Generator:
    seed = next(s for s in range(100) if (np.random.default_rng(s).random() > 0.5) == flip)
    return np.random.default_rng(seed)


class TestIndex:
    def test_objects_and_area_filter(self, tiny_pascal: Path) -> None:
        train = pascal_part.build(_cfg(tiny_pascal, image_size=32), "train", train=True)
        assert [(o.image_id, o.object_index) for o in train.objects] == [
            ("2008_000001", 0),
            ("2008_000003", 0),
        ]
        test = pascal_part.build(_cfg(tiny_pascal, image_size=32), "test", train=False)
        assert [(o.image_id, o.object_index) for o in test.objects] == [
            ("2009_000004", 0)
        ]  # 2nd horse: 15 % < 20 %
        assert train.part_names == ["head", "torso", "legs", "tail"]
        assert train.keypoint_names is None and train.has_masks and train.flip_permutation is None
        assert train.sample_name(0) == "VOC2010/JPEGImages/2008_000001.jpg"

    def test_val_equals_test(self, tiny_pascal: Path) -> None:
        val = pascal_part.build(_cfg(tiny_pascal, image_size=32), "val", train=False)
        assert [o.image_id for o in val.objects] == ["2009_000004"]

    def test_negative_ids_not_opened(self, tiny_pascal: Path) -> None:
        (tiny_pascal / "Annotations_Part" / "2008_000002.mat").write_bytes(b"garbage")
        assert len(pascal_part.build(_cfg(tiny_pascal), "train", train=True)) == 2

    def test_labels_merged(self, tiny_pascal: Path) -> None:
        ds = pascal_part.build(_cfg(tiny_pascal), "train", train=True)
        np.testing.assert_array_equal(ds.objects[0].full_labels(), _horse_a_labels(merged=True))
        assert ds.objects[0].bbox.tolist() == [10, 5, 49, 34]

    def test_labels_fine(self, tiny_pascal: Path) -> None:
        ds = pascal_part.build(_cfg(tiny_pascal), "train", train=True, merge_parts=False)
        np.testing.assert_array_equal(ds.objects[0].full_labels(), _horse_a_labels(merged=False))
        assert ds.part_names == pascal_part.FINE_PARTS["horse"]

    def test_car_numbered_parts(self, tiny_pascal: Path) -> None:
        ds = pascal_part.build(_cfg(tiny_pascal, pascal_class="car"), "test", train=False)
        labels = ds.objects[0].full_labels()
        assert ds.part_names == ["body", "windows", "wheels", "lights"]
        assert labels[34, 35] == 3 and labels[34, 54] == 3  # wheel_1, wheel_2
        assert labels[24, 40] == 2 and labels[29, 40] == 1  # window_1, leftside
        assert labels[23, 33] == 0  # car pixel without a part

    def test_merge_tables_cover_fine_names(self) -> None:
        for cls in pascal_part.CLASSES:
            _, lookup = pascal_part.part_table(cls, merge_parts=True)
            assert set(pascal_part.FINE_PARTS[cls]) <= set(lookup), cls
        assert len(pascal_part.CLASSES) == 10


class TestSamples:
    def test_crop_by_hand(self, tiny_pascal: Path) -> None:
        # object box (10, 5, 49, 34): padded (8, 3.5, 51, 35.5) -> rounded (8, 4, 51, 36)
        # -> square (8, -2, 51, 41)
        ds = pascal_part.build(
            _cfg(tiny_pascal, image_size=44, jitter_frac=0.0, flip=False), "train", train=True
        )
        sample = ds[0]
        expected = crop_with_fill(_horse_a_labels(merged=True), [8, -2, 51, 41], 0)
        np.testing.assert_array_equal(sample["parts"].numpy(), expected)
        np.testing.assert_array_equal(sample["fg_mask"][0].numpy(), (expected > 0).astype(np.float32))
        image = sample["image"].numpy()
        np.testing.assert_allclose(image[:, :2], 1 / 255)
        np.testing.assert_allclose(image[:, 42:], 1 / 255)
        source = pattern_image(*PASCAL_SHAPE, tag=1)[0:40, 8:52].transpose(2, 0, 1)
        np.testing.assert_array_equal(image[:, 2:42] * 255, source)
        assert sample["bbox"].tolist() == [2.0, 7.0, 42.0, 37.0]
        assert sample["parts"].dtype == torch.int64 and int(sample["class_id"]) == 0

    def test_flip(self, tiny_pascal: Path) -> None:
        ds = pascal_part.build(_cfg(tiny_pascal, image_size=44, jitter_frac=0.0), "train", train=True)
        plain = ds.load_sample(0, _rng_with_flip(False))
        flipped = ds.load_sample(0, _rng_with_flip(True))
        torch.testing.assert_close(flipped["parts"], plain["parts"].flip(-1))
        torch.testing.assert_close(flipped["image"], plain["image"].flip(-1))
        assert flipped["bbox"].tolist() == [2.0, 7.0, 42.0, 37.0]

    def test_jitter_changes_crop(self, tiny_pascal: Path) -> None:
        ds = pascal_part.build(_cfg(tiny_pascal, image_size=32), "train", train=True)
        a, b = ds[(0, 0)], ds[(0, 0)]
        torch.testing.assert_close(a["image"], b["image"])
        boxes = {tuple(ds[(0, epoch)]["bbox"].tolist()) for epoch in range(5)}
        assert len(boxes) > 1

    def test_test_samples_square(self, tiny_pascal: Path) -> None:
        ds = pascal_part.build(_cfg(tiny_pascal, image_size=32), "test", train=False)
        sample = ds[0]
        assert sample["image"].shape == (3, 32, 32) and set(sample["parts"].unique().tolist()) == {0, 1, 2, 3}

    def test_image_size_mismatch(self, tiny_pascal: Path) -> None:
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(
            tiny_pascal / "VOC2010/JPEGImages/2008_000001.jpg", "PNG"
        )
        ds = pascal_part.build(_cfg(tiny_pascal, image_size=32), "train", train=True)
        with pytest.raises(SizeMismatchError, match="2008_000001.mat"):
            ds[0]


class TestErrors:
    def test_unknown_part_name(self, tiny_pascal: Path) -> None:
        mask = np.ones(PASCAL_SHAPE, np.uint8)
        parts = np.zeros((1, 1), dtype=[("part_name", "O"), ("mask", "O")])
        parts[0, 0]["part_name"] = "wing"
        parts[0, 0]["mask"] = mask
        objects = np.zeros((1, 1), dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
        objects[0, 0]["class"] = "horse"
        objects[0, 0]["class_ind"] = 13
        objects[0, 0]["mask"] = mask
        objects[0, 0]["parts"] = parts
        path = tiny_pascal / "Annotations_Part" / "2008_000003.mat"
        scipy.io.savemat(path, {"anno": {"imname": "2008_000003", "objects": objects}})
        with pytest.raises(ValueError, match="'wing'") as info:
            pascal_part.build(_cfg(tiny_pascal), "train", train=True)
        assert "2008_000003.mat" in str(info.value)

    def test_corrupt_annotation(self, tiny_pascal: Path) -> None:
        (tiny_pascal / "Annotations_Part" / "2008_000003.mat").write_bytes(b"not a mat file")
        with pytest.raises(ValueError, match="2008_000003.mat"):
            pascal_part.build(_cfg(tiny_pascal), "train", train=True)

    def test_missing_annotation_folder(self, tmp_path: Path) -> None:
        root = make_tiny_pascal(tmp_path)
        (root / "Annotations_Part").rename(root / "elsewhere")
        with pytest.raises(FileNotFoundError, match="Annotations_Part") as info:
            pascal_part.build(_cfg(root), "train", train=True)
        assert "PASCAL-Part annotations" in str(info.value)

    def test_missing_list(self, tiny_pascal: Path) -> None:
        with pytest.raises(FileNotFoundError, match="cat_train.txt"):
            pascal_part.build(_cfg(tiny_pascal, pascal_class="cat"), "train", train=True)

    def test_missing_mat_warns(self, tiny_pascal: Path, caplog: pytest.LogCaptureFixture) -> None:
        (tiny_pascal / "Annotations_Part" / "2008_000003.mat").unlink()
        with caplog.at_level(logging.WARNING):
            ds = pascal_part.build(_cfg(tiny_pascal), "train", train=True)
        assert len(ds) == 1 and "1 train ids" in caplog.text

    def test_unknown_class(self, tiny_pascal: Path) -> None:
        with pytest.raises(ValueError, match="no merged part table for class 'person'"):
            pascal_part.build(_cfg(tiny_pascal, pascal_class="person"), "train", train=True)

    def test_parent_root(self, tiny_pascal: Path) -> None:
        assert len(pascal_part.build(_cfg(tiny_pascal.parent), "train", train=True)) == 2

    def test_bad_split(self, tiny_pascal: Path) -> None:
        with pytest.raises(ValueError, match="split"):
            pascal_part.build(_cfg(tiny_pascal), "trainval", train=True)
