"""data.masks=ignore on CUB / PASCAL-Part: training images are whole images, no box or mask places them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from partdisco.config import DataConfig
from partdisco.data import cub, pascal_part
from partdisco.data import transforms as T

from .tiny_datasets import CUB_IMAGES, PASCAL_SHAPE, cub_image, cub_keypoints, make_tiny_cub, pattern_image


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def test_cub_masks_ignore_trains_on_whole_images(tiny_cub: Path) -> None:
    cfg = DataConfig(name="cub", root=str(tiny_cub), image_size=24, flip=False, masks="ignore")
    ds = cub.build(cfg, "train", train=True)
    assert ds.whole_image and not ds.has_masks
    sample = ds[0]
    image = cub_image(1).astype(np.float32) / 255
    want, _, want_kps, _ = T.centre_square(image, 24, None, cub_keypoints(1))
    np.testing.assert_allclose(sample["image"].numpy(), want.transpose(2, 0, 1), atol=1e-6)
    assert (sample["fg_mask"] == 1).all()  # no mask: the foreground is learnt
    assert sample["bbox"].tolist() == [0.0, 0.0, 24.0, 24.0]
    want_kps[want_kps[:, 2] == 0] = 0
    np.testing.assert_allclose(sample["keypoints"].numpy(), want_kps, atol=1e-5)
    # the default (masks) keeps the reference crop around the box: a different view of the same image
    boxed = cub.build(DataConfig(name="cub", root=str(tiny_cub), image_size=24, flip=False), "train", True)
    assert boxed.has_masks and not torch.allclose(boxed[0]["image"], sample["image"])
    # evaluation keeps its boxes and masks: they only score
    test = cub.build(cfg, "test", train=False)
    assert isinstance(test, cub.CubEvalDataset) and test.has_masks


def test_cub_masks_ignore_needs_no_segmentations(tmp_path: Path) -> None:
    root = make_tiny_cub(tmp_path, cmr=False)
    shutil.rmtree(root / "segmentations")
    cfg = DataConfig(name="cub", root=str(root), image_size=16, masks="ignore")
    ds = cub.build(cfg, "train", train=True)
    assert len(ds) == 3 and ds[1]["image"].shape == (3, 16, 16)  # image 3 is the grayscale one
    flipped = [ds.load_sample(0, np.random.default_rng(s)) for s in range(6)]
    assert {bool(torch.equal(f["image"], ds.load_sample(0, None)["image"])) for f in flipped} == {True, False}


def test_cub_whole_image_keeps_off_centre_pixels_as_folder_images_do(tiny_cub: Path) -> None:
    # a wide image: the centre square of the resized image, exactly the folder pipeline's view
    height, width = next(item[3] for item in CUB_IMAGES if item[0] == 1)
    assert width != height
    cfg = DataConfig(
        name="cub", root=str(tiny_cub), image_size=min(height, width), flip=False, masks="ignore"
    )
    sample = cub.build(cfg, "train", train=True)[0]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    np.testing.assert_allclose(
        sample["image"].numpy() * 255,
        _rgb(cub_image(1))[top : top + side, left : left + side].transpose(2, 0, 1),
    )


def test_pascal_masks_ignore_one_whole_image_per_image(tiny_pascal: Path) -> None:
    cfg = DataConfig(name="pascal_part", root=str(tiny_pascal), image_size=40, flip=False, masks="ignore")
    ds = pascal_part.build(cfg, "train", train=True)
    assert ds.whole_image and not ds.has_masks
    assert [o.image_id for o in ds.objects] == ["2008_000001", "2008_000003"]
    sample = ds[0]
    H, W = PASCAL_SHAPE  # 40 x 60: the centre 40 x 40 square
    left = (W - H) // 2
    source = pattern_image(H, W, tag=1)[:, left : left + H].transpose(2, 0, 1)
    np.testing.assert_allclose(sample["image"].numpy() * 255, source, atol=1e-3)
    assert (sample["fg_mask"] == 1).all() and "parts" not in sample
    # two objects of one image are one sample
    twice = pascal_part.PascalPartDataset(
        tiny_pascal,
        ds.objects * 2,
        ds.part_names,
        T.ObjectCrop.from_config(cfg),
        False,
        False,
        whole_image=True,
    )
    assert len(twice) == 2
    # the default and the evaluation keep the object crops
    assert pascal_part.build(DataConfig(name="pascal_part", root=str(tiny_pascal)), "train", True).has_masks
    test = pascal_part.build(cfg, "test", train=False)
    assert not test.whole_image and "parts" in test[0]
