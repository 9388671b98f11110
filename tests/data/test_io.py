from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.data.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    SampleDataset,
    SizeMismatchError,
    check_same_size,
    read_image,
    read_label_map,
    read_mask,
)


def _save(array: np.ndarray, path: Path, mode: str | None = None, **kw: Any) -> Path:
    img = Image.fromarray(array) if mode is None else Image.fromarray(array, mode=mode)
    img.save(path, **kw)
    return path


class TestReadImage:
    def test_rgb_exact(self, tmp_path: Path) -> None:
        rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
        out = read_image(_save(rgb, tmp_path / "a.png"))
        assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
        np.testing.assert_array_equal(out, rgb)

    def test_grayscale_expanded(self, tmp_path: Path) -> None:
        gray = np.array([[0, 10, 200]], np.uint8)
        out = read_image(_save(gray, tmp_path / "g.png"))
        assert out.shape == (1, 3, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], gray)

    def test_palette(self, tmp_path: Path) -> None:
        img = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="L").convert("P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (768 - 9))
        img.save(tmp_path / "p.png")
        out = read_image(tmp_path / "p.png")
        assert out[0, 1].tolist() == [255, 0, 0]
        assert out[1, 0].tolist() == [0, 0, 255]
        assert out[0, 0].tolist() == [0, 0, 0]

    def test_rgba_composited_on_black(self, tmp_path: Path) -> None:
        rgba = np.zeros((1, 3, 4), np.uint8)
        rgba[..., :3] = 200
        rgba[0, :, 3] = [255, 128, 0]
        out = read_image(_save(rgba, tmp_path / "a.png"))
        assert out[0, :, 0].tolist() == [200, round(200 * 128 / 255), 0]

    def test_gray_alpha(self, tmp_path: Path) -> None:
        la = np.zeros((1, 2, 2), np.uint8)
        la[0, :, 0] = 100
        la[0, :, 1] = [255, 0]
        out = read_image(_save(la, tmp_path / "la.png", mode="LA"))
        assert out[0, :, 1].tolist() == [100, 0]

    def test_sixteen_bit_scaled(self, tmp_path: Path) -> None:
        values = np.array([[0, 257, 65535, 32896]], np.uint16)
        out = read_image(_save(values, tmp_path / "s.png"))
        assert out[0, :, 0].tolist() == [0, 1, 255, 128]

    def test_exif_orientation_applied(self, tmp_path: Path) -> None:
        stored = np.zeros((2, 4), np.uint8)
        stored[:, 2:] = 255  # left half black, right half white
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        out = read_image(_save(stored, tmp_path / "e.png", exif=exif))
        assert out.shape == (4, 2, 3)
        assert out[:2, :, 0].max() == 0 and out[2:, :, 0].min() == 255

    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.jpg"
        with pytest.raises(ImageReadError, match="nope.jpg") as info:
            read_image(path)
        assert "does not exist" in str(info.value)
        assert isinstance(info.value, OSError) and isinstance(info.value, ValueError)
        assert info.value.path == str(path)

    def test_truncated_file(self, tmp_path: Path) -> None:
        good = _save(np.zeros((40, 40, 3), np.uint8) + 90, tmp_path / "good.png")
        bad = tmp_path / "bad.png"
        bad.write_bytes(good.read_bytes()[:70])
        with pytest.raises(ImageReadError, match="bad.png"):
            read_image(bad)

    def test_not_an_image(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.jpg"
        path.write_text("hello")
        with pytest.raises(ImageReadError, match="notes.jpg"):
            read_image(path)

    def test_directory_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(ImageReadError, match="not a regular file"):
            read_image(tmp_path)

    def test_error_pickles(self) -> None:
        err = pickle.loads(pickle.dumps(ImageReadError("/x/y.png", "broken")))
        assert isinstance(err, ImageReadError) and err.path == "/x/y.png" and err.reason == "broken"
        assert str(err) == "cannot read /x/y.png: broken"

    def test_extensions(self) -> None:
        assert {".jpg", ".jpeg", ".png"} <= set(IMAGE_EXTENSIONS)
        assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)


class TestReadMask:
    def test_binary_any_positive(self, tmp_path: Path) -> None:
        path = _save(np.array([[0, 1, 128, 255]], np.uint8), tmp_path / "m.png")
        out = read_mask(path)
        assert out.dtype == np.float32
        assert out.tolist() == [[0.0, 1.0, 1.0, 1.0]]

    def test_binary_threshold(self, tmp_path: Path) -> None:
        path = _save(np.array([[0, 128, 254, 255]], np.uint8), tmp_path / "m.png")
        assert read_mask(path, threshold=254).tolist() == [[0.0, 0.0, 0.0, 1.0]]

    def test_gray_keeps_soft_values(self, tmp_path: Path) -> None:
        path = _save(np.array([[0, 51, 255]], np.uint8), tmp_path / "m.png")
        np.testing.assert_allclose(read_mask(path, mode="gray"), [[0.0, 0.2, 1.0]], atol=1e-7)

    def test_rgb_uses_max_channel(self, tmp_path: Path) -> None:
        rgb = np.zeros((1, 2, 3), np.uint8)
        rgb[0, 1] = [0, 0, 90]
        path = _save(rgb, tmp_path / "m.png")
        assert read_mask(path).tolist() == [[0.0, 1.0]]
        np.testing.assert_allclose(read_mask(path, mode="gray"), [[0.0, 90 / 255]], atol=1e-7)

    def test_sixteen_bit(self, tmp_path: Path) -> None:
        path = _save(np.array([[0, 65535]], np.uint16), tmp_path / "m.png")
        assert read_mask(path, mode="gray").tolist() == [[0.0, 1.0]]

    def test_one_bit(self, tmp_path: Path) -> None:
        img = Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1")
        img.save(tmp_path / "m.png")
        assert read_mask(tmp_path / "m.png").tolist() == [[0.0, 1.0]]

    def test_bad_mode(self, tmp_path: Path) -> None:
        path = _save(np.zeros((1, 1), np.uint8), tmp_path / "m.png")
        with pytest.raises(ValueError, match="mode"):
            read_mask(path, mode="soft")

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(ImageReadError, match="gone.png"):
            read_mask(tmp_path / "gone.png")


class TestReadLabelMap:
    def test_gray_values(self, tmp_path: Path) -> None:
        path = _save(np.array([[0, 3, 17]], np.uint8), tmp_path / "l.png")
        out = read_label_map(path)
        assert out.dtype == np.int64 and out.tolist() == [[0, 3, 17]]

    def test_palette_indices(self, tmp_path: Path) -> None:
        img = Image.fromarray(np.array([[0, 2, 5]], np.uint8), mode="L").convert("P")
        img.putpalette([(i * 40) % 256 for i in range(768)])
        img.save(tmp_path / "l.png")
        assert read_label_map(tmp_path / "l.png").tolist() == [[0, 2, 5]]

    def test_sixteen_bit_not_rescaled(self, tmp_path: Path) -> None:
        path = _save(np.array([[0, 300]], np.uint16), tmp_path / "l.png")
        assert read_label_map(path).tolist() == [[0, 300]]

    def test_rgb_rejected(self, tmp_path: Path) -> None:
        path = _save(np.zeros((1, 2, 3), np.uint8), tmp_path / "l.png")
        with pytest.raises(ImageReadError, match="palette or single-channel"):
            read_label_map(path)


class TestCheckSameSize:
    def test_equal_ok(self) -> None:
        check_same_size("img.jpg", "img.png", (4, 5, 3), (4, 5))

    def test_mismatch_names_both(self) -> None:
        with pytest.raises(SizeMismatchError) as info:
            check_same_size("dir/img.jpg", "masks/img.png", (4, 5, 3), (5, 4))
        message = str(info.value)
        assert "dir/img.jpg" in message and "masks/img.png" in message
        assert "4x5" in message and "5x4" in message
        assert isinstance(info.value, ValueError)


class _Toy(SampleDataset):
    """Sample i reads file i; indices in ``bad`` raise ImageReadError."""

    def __init__(self, n: int, bad: set[int], augment: bool = False, strict: bool = False) -> None:
        super().__init__(augment=augment, strict=strict, seed=3)
        self.n = n
        self.bad = bad
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def sample_name(self, index: int) -> str:
        return f"images/{index}.png"

    def load_sample(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        self.reads.append(index)
        if index in self.bad:
            raise ImageReadError(self.sample_name(index), "corrupt")
        value = -1.0 if rng is None else float(rng.random())
        return {"index": index, "value": value}


class TestSampleDataset:
    def test_good_sample(self) -> None:
        assert _Toy(3, set())[1] == {"index": 1, "value": -1.0}

    def test_skip_to_next_and_record(self, caplog: pytest.LogCaptureFixture) -> None:
        ds = _Toy(4, {1, 2})
        with caplog.at_level(logging.WARNING):
            assert ds[1]["index"] == 3
        assert ds.skipped == ["images/1.png", "images/2.png"]
        assert "images/1.png" in caplog.text and "strict" in caplog.text
        ds.reads.clear()
        assert ds[2]["index"] == 3
        assert ds.reads == [3]  # known-bad files are not read again
        assert ds.skipped == ["images/1.png", "images/2.png"]

    def test_wraps_around(self) -> None:
        assert _Toy(3, {2})[2]["index"] == 0

    def test_strict_raises(self) -> None:
        ds = _Toy(3, {0}, strict=True)
        with pytest.raises(ImageReadError, match="images/0.png"):
            ds[0]
        assert ds.skipped == []

    def test_all_bad(self) -> None:
        with pytest.raises(ValueError, match="none of the 2 images could be read"):  # one line in the CLI
            _Toy(2, {0, 1})[0]

    def test_index_range(self) -> None:
        ds = _Toy(3, set())
        assert ds[-1]["index"] == 2
        with pytest.raises(IndexError):
            ds[3]
        assert [s["index"] for s in ds] == [0, 1, 2]  # iteration protocol stops at IndexError

    def test_augment_rng_from_seed_epoch_index(self) -> None:
        ds = _Toy(3, set(), augment=True)
        torch.manual_seed(5)
        first = [ds[(i, 4)]["value"] for i in range(3)]
        torch.manual_seed(6)  # the global generator plays no part
        assert [ds[(i, 4)]["value"] for i in range(3)] == first
        assert len(set(first)) == 3
        assert ds[(0, 5)]["value"] != first[0]  # next epoch: a new augmentation
        assert first[0] == np.random.default_rng([3, 4, 0]).random()  # (seed, epoch, index)

    def test_no_augment_leaves_torch_rng_alone(self) -> None:
        ds = _Toy(2, set())
        state = torch.get_rng_state()
        ds[0]
        assert torch.equal(state, torch.get_rng_state())

    def test_dataloader_workers_reproducible(self) -> None:
        ds = _Toy(4, set(), augment=True)
        values = []
        for _ in range(2):
            torch.manual_seed(11)
            loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
            values.append(torch.cat([b["value"] for b in loader]).tolist())
        assert values[0] == values[1]
