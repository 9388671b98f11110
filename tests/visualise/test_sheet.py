import html
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partdisco.visualise.overlay import overlay
from partdisco.visualise.palette import PALETTE, colorize
from partdisco.visualise.sheet import (
    image_grid,
    part_grid,
    save_label_png,
    save_png,
    write_contact_sheet,
)


def _tile(h, w, value):
    return np.full((h, w, 3), value, dtype=np.uint8)


class TestImageGrid:
    def test_sizes_add_up(self):
        pad = 3
        rows = [[_tile(10, 10, 0), _tile(10, 20, 50)], [_tile(10, 15, 100), _tile(10, 5, 150)]]
        grid = image_grid(rows, pad=pad)
        col_widths = [15, 20]
        assert grid.shape == (pad + 2 * (10 + pad), pad + sum(col_widths) + 2 * pad, 3)
        assert grid.dtype == np.uint8

    def test_tiles_placed_and_padding_is_bg(self):
        grid = image_grid([[_tile(4, 4, 10), _tile(4, 4, 20)]], pad=2, bg=255)
        np.testing.assert_array_equal(grid[2:6, 2:6], 10)
        np.testing.assert_array_equal(grid[2:6, 8:12], 20)
        assert (grid[:2] == 255).all() and (grid[:, 6:8] == 255).all()

    def test_resize_to_common_height(self):
        grid = image_grid([[_tile(8, 8, 0), _tile(16, 32, 0)]], pad=0)
        # the 8x8 tile is upscaled to 16x16, the 16x32 tile is kept
        assert grid.shape == (16, 48, 3)
        grid = image_grid([[_tile(8, 8, 0), _tile(16, 32, 0)]], pad=0, tile_height=4)
        assert grid.shape == (4, 4 + 8, 3)

    def test_upscale_is_nearest(self):
        tile = np.zeros((2, 2, 3), dtype=np.uint8)
        tile[0, 0] = 255
        grid = image_grid([[tile]], pad=0, tile_height=4)
        np.testing.assert_array_equal(grid[:2, :2], 255)
        np.testing.assert_array_equal(grid[2:, 2:], 0)

    def test_ragged_rows_and_float_chw_tiles(self):
        chw = np.ones((3, 6, 6), dtype=np.float32)
        grid = image_grid([[chw, chw, chw], [chw]], pad=1, bg=(0, 0, 0))
        assert grid.shape == (1 + 2 * 7, 1 + 3 * 7, 3)
        np.testing.assert_array_equal(grid[8:14, 8:14], 0)  # missing cell stays background

    def test_titles_add_a_band_with_text(self):
        rows = [[_tile(20, 40, 128), _tile(20, 40, 128)]]
        plain = image_grid(rows, pad=2)
        titled = image_grid(rows, pad=2, titles=["input", "a title much wider than its column"])
        band = titled.shape[0] - plain.shape[0]
        assert band > 5 and titled.shape[1] == plain.shape[1]
        assert (titled[:band] < 128).any()  # dark text drawn on the white band
        np.testing.assert_array_equal(titled[band:], plain)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="at least one tile"):
            image_grid([])
        with pytest.raises(ValueError, match="at least one tile"):
            image_grid([[]])
        with pytest.raises(ValueError, match="titles"):
            image_grid([[_tile(2, 2, 0)]], titles=["a", "b"])
        with pytest.raises(ValueError, match="pad"):
            image_grid([[_tile(2, 2, 0)]], pad=-1)
        with pytest.raises(ValueError, match="bg"):
            image_grid([[_tile(2, 2, 0)]], bg=(1, 2))


class TestPartGrid:
    def _data(self):
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
        labels = [rng.integers(0, 5, (16, 16)) for _ in range(2)]
        return images, labels

    def test_rows_are_input_partmap_overlay(self):
        images, labels = self._data()
        grid = part_grid(images, labels, pad=2)
        plain = image_grid(
            [[img, colorize(lab), overlay(img, lab)] for img, lab in zip(images, labels)], pad=2
        )
        band = grid.shape[0] - plain.shape[0]
        assert band > 0 and grid.shape[1] == 2 + 3 * 18
        np.testing.assert_array_equal(grid[band:], plain)
        np.testing.assert_array_equal(grid[band + 2 : band + 18, 20:36], colorize(labels[0]))

    def test_logit_resolution_labels_are_resized(self):
        torch = pytest.importorskip("torch")
        image = torch.rand(3, 16, 16)
        labels = torch.zeros(4, 4, dtype=torch.int64)
        labels[:2, :2] = 3
        grid = part_grid([image], [labels], pad=0)
        band = grid.shape[0] - 16
        np.testing.assert_array_equal(grid[band, 16], PALETTE[3])
        np.testing.assert_array_equal(grid[band + 15, 31], PALETTE[0])

    def test_legend_appended(self):
        images, labels = self._data()
        assert part_grid(images, labels, num_parts=4).shape[1] > part_grid(images, labels).shape[1]

    def test_exceptions(self):
        images, labels = self._data()
        with pytest.raises(ValueError, match="as many label maps"):
            part_grid(images, labels[:1])
        with pytest.raises(ValueError, match="as many label maps"):
            part_grid([], [])


class TestSavePng:
    def test_round_trip_rgb_and_grey(self, tmp_path):
        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
        path = save_png(tmp_path / "sub" / "a.png", rgb)
        assert path == tmp_path / "sub" / "a.png"
        np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
        grey = rng.integers(0, 256, (5, 4), dtype=np.uint8)
        np.testing.assert_array_equal(np.asarray(Image.open(save_png(tmp_path / "g.png", grey))), grey)

    def test_overwrites_and_leaves_no_temp_files(self, tmp_path):
        save_png(tmp_path / "a.png", _tile(2, 2, 0))
        save_png(str(tmp_path / "a.png"), _tile(2, 2, 9))
        assert os.listdir(tmp_path) == ["a.png"]
        assert np.asarray(Image.open(tmp_path / "a.png"))[0, 0, 0] == 9

    def test_failed_write_keeps_old_file(self, tmp_path, monkeypatch):
        save_png(tmp_path / "a.png", _tile(2, 2, 7))

        def broken_save(self, *args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(Image.Image, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            save_png(tmp_path / "a.png", _tile(2, 2, 9))
        monkeypatch.undo()
        assert os.listdir(tmp_path) == ["a.png"]
        assert np.asarray(Image.open(tmp_path / "a.png"))[0, 0, 0] == 7

    def test_exceptions(self, tmp_path):
        with pytest.raises(TypeError, match="a.png.*uint8"):
            save_png(tmp_path / "a.png", np.zeros((2, 2, 3), dtype=np.float32))
        with pytest.raises(ValueError, match="a.png"):
            save_png(tmp_path / "a.png", np.zeros((2, 2, 5), dtype=np.uint8))


class TestSaveLabelPng:
    def test_round_trip_with_palette(self, tmp_path):
        labels = np.array([[0, 1, 2], [3, 200, 255]])
        path = save_label_png(tmp_path / "l.png", labels)
        pil = Image.open(path)
        assert pil.mode == "P"
        np.testing.assert_array_equal(np.asarray(pil), labels)
        np.testing.assert_array_equal(np.asarray(pil.convert("RGB")), colorize(labels))


class TestWriteContactSheet:
    def _make_files(self, root: Path, names):
        entries = []
        for i, name in enumerate(names):
            img_rel, ov_rel, col_rel = f"images/{i}.png", f"overlays/{i}.png", f"parts/{i}.png"
            for rel in (img_rel, ov_rel, col_rel):
                save_png(root / rel, _tile(4, 4, 10 * i))
            entries.append({"name": name, "image": img_rel, "overlay": ov_rel, "color": col_rel})
        return entries

    def test_contains_every_entry_with_relative_links_that_exist(self, tmp_path):
        names = ["bird_001.jpg", "<script>alert(1)</script>", 'a & b "quoted"']
        entries = self._make_files(tmp_path, names)
        entries[0]["info"] = "nmi=0.5 <b>"
        out = write_contact_sheet(tmp_path / "index.html", entries, "Run <1>", num_parts=4)
        text = out.read_text(encoding="utf-8")
        assert text.startswith("<!DOCTYPE html>")
        for name in names:
            assert html.escape(name) in text
        assert "<script>" not in text and "&lt;script&gt;" in text
        assert "Run &lt;1&gt;" in text and "nmi=0.5 &lt;b&gt;" in text
        links = re.findall(r'(?:src|href)="([^"]+)"', text)
        assert len(links) == 2 * 3 * len(names)  # <a href> + <img src> for image, overlay, parts
        for link in links:
            assert not link.startswith(("/", "http:", "https:", "file:"))
            assert (tmp_path / link).is_file()
        assert "<link" not in text and "<script" not in text  # self-contained
        assert "<style>" in text

    def test_legend_uses_palette(self, tmp_path):
        out = write_contact_sheet(
            tmp_path / "index.html", [], "empty", num_parts=3, part_names=["head", "body", "x<y"]
        )
        text = out.read_text()
        for k in range(4):
            r, g, b = PALETTE[k].tolist()
            assert f"rgb({r}, {g}, {b})" in text
        assert "3: x&lt;y" in text and "0: background" in text and "1: head" in text

    def test_absolute_paths_made_relative_and_quoted(self, tmp_path):
        save_png(tmp_path / "my images" / "a.png", _tile(2, 2, 0))
        entry = {"name": "a", "image": tmp_path / "my images" / "a.png", "overlay": "my images/a.png"}
        out = write_contact_sheet(tmp_path / "index.html", [entry], "t", num_parts=2)
        text = out.read_text()
        assert str(tmp_path) not in text
        assert text.count('src="my%20images/a.png"') == 2

    def test_missing_file_is_logged(self, tmp_path, caplog):
        entry = {"name": "a", "image": "nope.png", "overlay": "nope_ov.png"}
        with caplog.at_level(logging.WARNING, logger="partdisco.visualise.sheet"):
            write_contact_sheet(tmp_path / "index.html", [entry], "t", num_parts=2)
        assert "2 missing file(s)" in caplog.text and "nope.png" in caplog.text

    def test_atomic_no_temp_left(self, tmp_path):
        write_contact_sheet(tmp_path / "out" / "index.html", [], "t", num_parts=2)
        assert os.listdir(tmp_path / "out") == ["index.html"]

    def test_exceptions(self, tmp_path):
        with pytest.raises(ValueError, match="entry 0.*overlay"):
            write_contact_sheet(tmp_path / "i.html", [{"name": "a", "image": "a.png"}], "t", 2)
        with pytest.raises(ValueError, match="unknown keys.*gt"):
            write_contact_sheet(
                tmp_path / "i.html", [{"name": "a", "image": "a", "overlay": "b", "gt": "c"}], "t", 2
            )
        with pytest.raises(ValueError, match="num_parts"):
            write_contact_sheet(tmp_path / "i.html", [], "t", 0)
        with pytest.raises(ValueError, match="part_names"):
            write_contact_sheet(tmp_path / "i.html", [], "t", 2, part_names=["a"])
