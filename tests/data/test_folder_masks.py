"""data.masks: partial masks are an error naming the first image without one; ignore; empty masks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partdisco.config import DataConfig
from partdisco.data import folder

from .tiny_datasets import make_tiny_folder


def _cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(name="folder", root=str(root), image_size=32, **kw)


def test_partial_masks_name_first_image_without_one(tmp_path: Path) -> None:
    root = make_tiny_folder(tmp_path)
    (root / "masks" / "bird2.png").unlink()
    with pytest.raises(FileNotFoundError) as info:
        folder.build(_cfg(root), "train", train=True)
    message = str(info.value)
    assert "images/bird2" in message and "data.masks=ignore" in message and "\n" not in message


def test_ignore_trains_without_masks_but_test_split_keeps_them(tmp_path: Path) -> None:
    root = make_tiny_folder(tmp_path)
    (root / "masks" / "bird2.png").unlink()  # bird2 is a training image
    train = folder.build(_cfg(root, masks="ignore"), "train", train=True)
    assert not train.has_masks and float(train[0]["fg_mask"].min()) == 1.0
    test = folder.build(_cfg(root, masks="ignore"), "test", train=False)
    assert test.has_masks  # held-out masks still score the predicted foreground


def test_empty_mask_is_reported_per_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_tiny_folder(tmp_path)
    path = root / "masks" / "bird1.png"
    size = Image.open(path).size
    Image.fromarray(np.zeros(size[::-1], np.uint8)).save(path)
    ds = folder.build(_cfg(root), "train", train=False)
    with caplog.at_level(logging.WARNING):
        ds[0]
        ds[0]
    assert caplog.text.count("masks/bird1.png of images/bird1.png is empty") == 1
    assert ds.empty_masks == {"bird1.png"}
    strict = folder.build(_cfg(root, strict=True), "train", train=False)
    with pytest.raises(ValueError, match="bird1.png is empty"):
        strict[0]
