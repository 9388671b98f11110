import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import partdisco
from partdisco.data.io import SizeMismatchError
from partdisco.engine.inference import (
    border_background_parts,
    image_to_tensor,
    labels_from_probs,
    predict_probs,
    processing_size,
    segment_images,
)
from partdisco.engine.segment import (
    InputImage,
    SegmentOptions,
    collect_images,
    find_mask,
    output_paths,
    segment_files,
)
from partdisco.models import create_segmenter


class RedLeftModel(nn.Module):
    """Deterministic 2-part segmenter: part 1 where the input is red, part 2 elsewhere, at stride 8."""

    num_parts = 2
    background_channel = False
    arch = "red_left"

    def __init__(self, background_channel: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))
        self.background_channel = background_channel

    def preprocess(self, image01: torch.Tensor) -> torch.Tensor:
        return image01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = F.avg_pool2d(x[:, :1] - x[:, 1:2], 8)  # (B, 1, h, w), ~1 on red, ~0 on black
        logits = [red * self.scale, (0.5 - red) * self.scale]
        if self.background_channel:  # background = dark pixels
            dark = 0.1 - F.avg_pool2d(x.sum(1, keepdim=True), 8)
            logits.insert(0, dark * 10 * self.scale)
        return torch.cat(logits, dim=1)


def red_left_image(height: int = 32, width: int = 48) -> np.ndarray:
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    image[:, : width // 2] = (250, 0, 0)
    return image


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return create_segmenter("resnet18", num_parts=4).eval()


def write_rgb(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


class TestCollectImages:
    def test_folder_recursive_sorted(self, tmp_path):
        write_rgb(tmp_path / "b.png", 4, 4)
        write_rgb(tmp_path / "a.jpg", 4, 4)
        write_rgb(tmp_path / "sub" / "c.png", 4, 4)
        (tmp_path / "notes.txt").write_text("x")
        write_rgb(tmp_path / ".hidden" / "d.png", 4, 4)
        write_rgb(tmp_path / ".e.png", 4, 4)
        items = collect_images([tmp_path])
        assert [i.name for i in items] == ["a", "b", "sub/c"]
        assert all(i.path.is_absolute() for i in items)

    def test_explicit_file_any_suffix_and_dedupe(self, tmp_path):
        odd = tmp_path / "scan.dat"
        odd.write_bytes(b"123")
        png = write_rgb(tmp_path / "x.png", 4, 4)
        items = collect_images([odd, png, tmp_path / "x.png", tmp_path])
        assert [i.name for i in items] == ["scan", "x"]

    def test_glob(self, tmp_path):
        write_rgb(tmp_path / "d1" / "a.png", 4, 4)
        write_rgb(tmp_path / "d1" / "deep" / "b.png", 4, 4)
        write_rgb(tmp_path / "d1" / "c.jpg", 4, 4)
        items = collect_images([str(tmp_path / "d1" / "**" / "*.png")])
        assert sorted(i.name for i in items) == ["a", "deep/b"]

    def test_glob_without_match_is_empty(self, tmp_path):
        assert collect_images([str(tmp_path / "*.png")]) == []

    def test_missing_input_raises(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope"):
            collect_images([tmp_path / "nope"])

    def test_exclude_output_folder(self, tmp_path):
        write_rgb(tmp_path / "a.png", 4, 4)
        write_rgb(tmp_path / "out" / "overlay" / "a.png", 4, 4)
        items = collect_images([tmp_path], exclude=[tmp_path / "out"])
        assert [i.name for i in items] == ["a"]

    def test_same_stem_in_two_roots_keeps_relative_path(self, tmp_path):
        a = write_rgb(tmp_path / "cats" / "img.png", 4, 4)
        b = write_rgb(tmp_path / "dogs" / "img.png", 4, 4)
        items = collect_images([a, b])
        assert [i.name for i in items] == ["cats/img", "dogs/img"]

    def test_same_stem_two_suffixes_keeps_suffix(self, tmp_path):
        write_rgb(tmp_path / "img.png", 4, 4)
        write_rgb(tmp_path / "img.jpg", 4, 4)
        items = collect_images([tmp_path])
        assert [i.name for i in items] == ["img.jpg", "img.png"]
        assert len({output_paths("o", i.name)["labels"] for i in items}) == 2


class TestFindMask:
    def test_relative_name_then_stem(self, tmp_path):
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "a.png").write_bytes(b"")
        (tmp_path / "b.bmp").write_bytes(b"")
        assert find_mask(tmp_path, InputImage(Path("/x/sub/a.jpg"), "sub/a")) == tmp_path / "sub" / "a.png"
        assert find_mask(tmp_path, InputImage(Path("/x/sub/b.jpg"), "sub/b")) == tmp_path / "b.bmp"
        assert find_mask(tmp_path, InputImage(Path("/x/c.jpg"), "c")) is None


class TestProcessingSize:
    def test_values(self):
        assert processing_size(300, 400, 256) == (256, 341)
        assert processing_size(400, 300, 256) == (341, 256)
        assert processing_size(64, 64, 32) == (32, 32)
        assert processing_size(10, 1000, 8) == (1, 32)  # the longer side is capped at MAX_ASPECT * size
        assert processing_size(10, 40, 8) == (8, 32)

    def test_exception(self):
        with pytest.raises(ValueError, match="positive"):
            processing_size(0, 10, 8)


class TestImageToTensor:
    def test_shape_range(self):
        image = np.full((10, 20, 3), 255, dtype=np.uint8)
        x = image_to_tensor(image, (16, 32))
        assert x.shape == (3, 16, 32) and x.dtype == torch.float32
        assert torch.allclose(x, torch.ones_like(x))

    def test_same_size_exact(self):
        image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
        x = image_to_tensor(image, (2, 3))
        assert torch.equal(x, torch.from_numpy(image).permute(2, 0, 1).float() / 255)

    def test_read_only_input(self):
        image = np.zeros((4, 4, 3), dtype=np.uint8)
        image.setflags(write=False)
        assert image_to_tensor(image, (8, 8)).shape == (3, 8, 8)

    def test_exception(self):
        with pytest.raises(ValueError, match="uint8"):
            image_to_tensor(np.zeros((4, 4), dtype=np.uint8), (4, 4))


class TestPredictProbs:
    def test_shape_sum(self, tiny_model):
        p = predict_probs(tiny_model, torch.rand(2, 3, 40, 24))
        assert p.shape == (2, 4, 40, 24)
        assert torch.allclose(p.sum(1), torch.ones(2, 40, 24), atol=1e-5)

    def test_exception(self, tiny_model):
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            predict_probs(tiny_model, torch.rand(3, 8, 8))


class TestLabelsFromProbs:
    def test_values(self):
        probs = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]]).T.reshape(1, 3, 1, 2)
        assert labels_from_probs(probs, False, False).tolist() == [[[1, 2]]]
        assert labels_from_probs(probs, True, True).tolist() == [[[0, 1]]]
        assert labels_from_probs(probs, True, False).tolist() == [[[2, 1]]]


class TestBorderBackgroundParts:
    def test_frame_is_background(self):
        labels = np.ones((20, 20), dtype=np.int64)
        labels[5:15, 5:15] = 2
        labels[8:12, 8:12] = 3
        assert border_background_parts(labels) == [1]

    def test_split_border_keeps_all(self):
        labels = np.ones((20, 20), dtype=np.int64)
        labels[:, 10:] = 2
        assert border_background_parts(labels) == []
        assert border_background_parts(labels, share=0.4) == [1, 2]

    def test_exception(self):
        with pytest.raises(ValueError, match="share"):
            border_background_parts(np.ones((4, 4), dtype=np.int64), share=0.0)
        with pytest.raises(ValueError, match=r"\(H, W\)"):
            border_background_parts(np.ones((1, 4, 4), dtype=np.int64))


class TestSegmentImages:
    def test_shapes_dtypes(self, tiny_model):
        images = [np.zeros((30, 50, 3), np.uint8), np.full((20, 20, 3), 100, np.uint8)]
        out = segment_images(tiny_model, images, size=32, batch_size=2)
        assert [m.labels.shape for m in out] == [(30, 50), (20, 20)]
        for m in out:
            assert m.labels.dtype == np.uint8 and 1 <= m.labels.min() and m.labels.max() <= 4
            assert m.probs.dtype == np.float32 and m.probs.shape == (4, *m.labels.shape)
            np.testing.assert_allclose(m.probs.sum(0), 1.0, atol=1e-5)
            assert m.centroids.shape == (4, 2) and m.background == "none"

    def test_batch_independent(self, tiny_model):
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
        images.append(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8))
        one = segment_images(tiny_model, images, size=32, batch_size=1)
        many = segment_images(tiny_model, images, size=32, batch_size=4)
        for a, b in zip(one, many):
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)

    def test_values_and_centroids(self):
        model = RedLeftModel()
        (maps,) = segment_images(model, [red_left_image(32, 48)], size=64)
        assert (maps.labels[:, :20] == 1).all() and (maps.labels[:, 28:] == 2).all()
        # soft centroids: the left half's centre (12, 16), the right half's (36, 16), within blur
        np.testing.assert_allclose(maps.centroids[0], [12.0, 16.0], atol=1.5)
        np.testing.assert_allclose(maps.centroids[1], [36.0, 16.0], atol=1.5)
        assert model.training  # mode restored

    def test_mask_background(self):
        mask = np.zeros((32, 48), np.float32)
        mask[:, 30:] = 1.0
        (maps,) = segment_images(RedLeftModel(), [red_left_image()], [mask], size=32)
        assert maps.background == "mask"
        assert (maps.labels[:, :30] == 0).all() and (maps.labels[:, 30:] == 2).all()
        np.testing.assert_allclose(maps.centroids[1], [39.0, 16.0], atol=1.5)

    def test_background_channel(self):
        image = red_left_image()
        image[:, 24:] = 0  # right half black -> background channel wins
        model = RedLeftModel(background_channel=True)
        (maps,) = segment_images(model, [image], size=32, crop="none")  # whole image: no object crop
        assert maps.background == "model" and maps.probs.shape == (3, 32, 48)
        assert (maps.labels[:, :20] == 1).all() and (maps.labels[:, 28:] == 0).all()
        (none,) = segment_images(model, [image], size=32, background="none")
        assert none.background == "none" and none.labels.min() >= 1

    def test_border_background(self):
        image = np.full((48, 48, 3), 40, dtype=np.uint8)
        image[16:32, 16:32] = (250, 0, 0)
        (maps,) = segment_images(RedLeftModel(), [image], size=48, background="border")
        assert maps.background == "border"
        assert maps.labels[0, 0] == 0 and maps.labels[24, 24] == 1
        assert set(np.unique(maps.labels)) == {0, 1}

    def test_exceptions(self, tiny_model):
        image = np.zeros((8, 8, 3), np.uint8)
        with pytest.raises(ValueError, match="mask"):
            segment_images(tiny_model, [image], [np.zeros((4, 4), np.float32)])
        with pytest.raises(ValueError, match="background"):
            segment_images(tiny_model, [image], background="sky")
        with pytest.raises(ValueError, match="uint8"):
            segment_images(tiny_model, [image.astype(np.float32)])
        with pytest.raises(ValueError, match="batch_size"):
            segment_images(tiny_model, [image], batch_size=0)


class TestApiSegment:
    def test_list_of_arrays(self, tiny_model):
        images = [
            np.zeros((20, 30, 3), np.uint8),
            np.zeros((16, 16), np.uint8),
            np.zeros((10, 12, 4), np.uint8),
        ]
        labels, probs = partdisco.segment(tiny_model, images, size=32)
        assert [lab.shape for lab in labels] == [(20, 30), (16, 16), (10, 12)]
        assert all(lab.dtype == np.uint8 and lab.min() >= 1 and lab.max() <= 4 for lab in labels)
        assert [p.shape for p in probs] == [(4, 20, 30), (4, 16, 16), (4, 10, 12)]

    def test_batch_tensor_and_single(self, tiny_model):
        batch = torch.rand(3, 3, 24, 32)
        labels, probs = partdisco.segment(tiny_model, batch, size=32)
        assert labels.shape == (3, 24, 32) and probs.shape == (3, 4, 24, 32)
        single_labels, single_probs = partdisco.segment(tiny_model, batch[1], size=32)
        np.testing.assert_array_equal(single_labels, labels[1])
        np.testing.assert_allclose(single_probs, probs[1], atol=1e-5)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)

    def test_uint16_and_float_agree(self, tiny_model):
        rng = np.random.default_rng(1)
        image = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
        a, _ = partdisco.segment(tiny_model, image, size=32)
        b, _ = partdisco.segment(tiny_model, image.astype(np.uint16) * 257, size=32)
        c, _ = partdisco.segment(tiny_model, image.astype(np.float32) / 255, size=32)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)

    def test_masks_and_paths(self, tmp_path):
        model = RedLeftModel()
        path = tmp_path / "img.png"
        Image.fromarray(red_left_image()).save(path)
        mask = np.zeros((32, 48), bool)
        mask[:, 30:] = True
        labels, probs = partdisco.segment(model, [str(path)], masks=[mask], size=32)
        assert (labels[0][:, :30] == 0).all() and (labels[0][:, 30:] == 2).all()
        # integer masks: non-zero is foreground, as for mask files; float masks: > 0.5
        for other in (mask.astype(np.uint8), mask * 0.9):
            same, _ = partdisco.segment(model, str(path), masks=other, size=32)
            np.testing.assert_array_equal(same, labels[0])

    def test_load_from_path(self, tiny_model, tmp_path):
        from partdisco.models import export_checkpoint

        ckpt = export_checkpoint(tiny_model, tmp_path / "m.pt")
        image = np.full((16, 16, 3), 77, np.uint8)
        a, _ = partdisco.segment(ckpt, image, size=32, device="cpu")
        b, _ = partdisco.segment(tiny_model, image, size=32)
        np.testing.assert_array_equal(a, b)

    def test_exceptions(self, tiny_model):
        with pytest.raises(ValueError, match="no images"):
            partdisco.segment(tiny_model, [])
        with pytest.raises(ValueError, match="masks"):
            partdisco.segment(tiny_model, [np.zeros((8, 8, 3), np.uint8)], masks=[None, None])
        with pytest.raises(ValueError, match="image 0"):
            partdisco.segment(tiny_model, [np.zeros((8, 8, 5), np.uint8)])


def make_folder(root: Path) -> Path:
    write_rgb(root / "a.png", 24, 40, seed=1)
    write_rgb(root / "b.png", 30, 20, seed=2)
    write_rgb(root / "sub" / "c.png", 24, 40, seed=3)
    return root


def mtimes(out: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(out.rglob("*.png"))}


class TestSegmentFiles:
    def test_outputs_and_resume(self, tiny_model, tmp_path):
        images = make_folder(tmp_path / "images")
        out = tmp_path / "out"
        summary = segment_files(
            tiny_model, [images], out, SegmentOptions(size=32, batch_size=2), progress=False
        )
        assert sorted(summary.written) == ["a", "b", "sub/c"] and summary.skipped == []
        data = json.loads((out / "parts.json").read_text())
        assert set(data["images"]) == {"a", "b", "sub/c"}
        assert data["settings"]["num_parts"] == 4 and len(data["palette"]) == 5
        umask = os.umask(0)
        os.umask(umask)
        assert (out / "parts.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
        entry = data["images"]["b"]
        assert (entry["height"], entry["width"]) == (30, 20) and sum(entry["area"]) == 600
        labels = np.asarray(Image.open(out / "labels" / "b.png"))
        assert entry["area"] == [int((labels == k).sum()) for k in range(1, 5)]
        assert entry["present"] == [k for k in range(1, 5) if (labels == k).any()]
        for k in range(1, 5):
            assert (entry["centroid"][k - 1] is None) == (k not in entry["present"])
        before = mtimes(out)
        again = segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        assert again.written == [] and sorted(again.skipped) == ["a", "b", "sub/c"]
        assert mtimes(out) == before
        # a new image: only it is computed, and parts.json keeps the old entries
        write_rgb(images / "d.png", 16, 16, seed=4)
        third = segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        assert third.written == ["d"]
        data = json.loads((out / "parts.json").read_text())
        assert set(data["images"]) == {"a", "b", "d", "sub/c"}
        assert "d" in (out / "index.html").read_text()

    def test_missing_output_is_recomputed(self, tiny_model, tmp_path):
        images = make_folder(tmp_path / "images")
        out = tmp_path / "out"
        segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        (out / "overlay" / "a.jpg").unlink()
        summary = segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        assert summary.written == ["a"] and (out / "overlay" / "a.jpg").is_file()
        summary = segment_files(
            tiny_model, [images], out, SegmentOptions(size=32), progress=False, save_probs=True
        )
        assert sorted(summary.written) == ["a", "b", "sub/c"]  # probs were missing

    def test_a_folder_with_png_overlays_of_an_older_version_resumes(self, tiny_model, tmp_path):
        images = make_folder(tmp_path / "images")
        out = tmp_path / "out"
        segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        data = json.loads((out / "parts.json").read_text())
        for name, entry in data["images"].items():  # as older versions wrote them: overlay/NAME.png
            jpg = out / entry["files"]["overlay"]
            Image.open(jpg).save(jpg.with_suffix(".png"))
            jpg.unlink()
            entry["files"]["overlay"] = f"overlay/{name}.png"
        (out / "parts.json").write_text(json.dumps(data))
        again = segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        assert again.written == [] and sorted(again.skipped) == ["a", "b", "sub/c"]
        (out / "overlay" / "b.png").unlink()  # a missing legacy overlay is redone, as a JPEG
        again = segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        assert again.written == ["b"] and (out / "overlay" / "b.jpg").is_file()
        entries = json.loads((out / "parts.json").read_text())["images"]
        assert entries["b"]["files"]["overlay"] == "overlay/b.jpg"
        assert entries["a"]["files"]["overlay"] == "overlay/a.png"

    def test_overwrite_and_settings_check(self, tiny_model, tmp_path):
        images = make_folder(tmp_path / "images")
        out = tmp_path / "out"
        segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        with pytest.raises(ValueError, match="size: 32 there vs 48 now"):
            segment_files(tiny_model, [images], out, SegmentOptions(size=48), progress=False)
        summary = segment_files(
            tiny_model, [images], out, SegmentOptions(size=48), overwrite=True, progress=False
        )
        assert len(summary.written) == 3
        assert json.loads((out / "parts.json").read_text())["settings"]["size"] == 48

    def test_out_inside_input_is_not_an_input(self, tiny_model, tmp_path):
        images = make_folder(tmp_path / "images")
        segment_files(tiny_model, [images], images / "parts", SegmentOptions(size=32), progress=False)
        summary = segment_files(
            tiny_model, [images], images / "parts", SegmentOptions(size=32), progress=False
        )
        assert sorted(summary.skipped) == ["a", "b", "sub/c"] and summary.written == []

    def test_corrupt_file_listed_then_fixed(self, tiny_model, tmp_path):
        images = make_folder(tmp_path / "images")
        (images / "bad.png").write_bytes(os.urandom(64))
        out = tmp_path / "out"
        summary = segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        assert list(summary.failed) == [str((images / "bad.png").resolve())]
        assert "bad.png" in json.dumps(json.loads((out / "parts.json").read_text())["failed"])
        write_rgb(images / "bad.png", 8, 8)
        summary = segment_files(tiny_model, [images], out, SegmentOptions(size=32), progress=False)
        assert summary.written == ["bad"] and summary.failed == {}
        assert json.loads((out / "parts.json").read_text())["failed"] == {}

    def test_masks(self, tmp_path):
        images = tmp_path / "images"
        images.mkdir()
        Image.fromarray(red_left_image()).save(images / "r.jpg", quality=100)
        masks = tmp_path / "masks"
        masks.mkdir()
        mask = np.zeros((32, 48), np.uint8)
        mask[:, 30:] = 255
        Image.fromarray(mask).save(masks / "r.png")
        out = tmp_path / "out"
        segment_files(RedLeftModel(), [images], out, SegmentOptions(size=32), masks_dir=masks, progress=False)
        labels = np.asarray(Image.open(out / "labels" / "r.png"))
        assert (labels[:, :30] == 0).all() and (labels[:, 30:] == 2).all()
        entry = json.loads((out / "parts.json").read_text())["images"]["r"]
        assert entry["background"] == "mask" and entry["present"] == [2] and entry["area"] == [0, 32 * 18]
        assert entry["foreground_area"] == 32 * 18

    def test_mask_errors(self, tiny_model, tmp_path):
        images = make_folder(tmp_path / "images")
        masks = tmp_path / "masks"
        masks.mkdir()
        Image.fromarray(np.zeros((24, 40), np.uint8)).save(masks / "a.png")
        with pytest.raises(FileNotFoundError, match="no mask"):
            segment_files(tiny_model, [images], tmp_path / "o", masks_dir=masks, progress=False)
        Image.fromarray(np.zeros((30, 20), np.uint8)).save(masks / "c.png")
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "b.png")
        with pytest.raises(SizeMismatchError) as info:
            segment_files(
                tiny_model, [images], tmp_path / "o", SegmentOptions(size=32), masks_dir=masks, progress=False
            )
        assert "b.png" in str(info.value) and str(masks / "b.png") in str(info.value)
        with pytest.raises(ValueError, match="masks"):
            segment_files(
                tiny_model,
                [images],
                tmp_path / "o",
                SegmentOptions(background="none"),
                masks_dir=masks,
            )

    def test_empty_input(self, tiny_model, tmp_path):
        (tmp_path / "empty").mkdir()
        with pytest.raises(ValueError, match="no images found"):
            segment_files(tiny_model, [tmp_path / "empty"], tmp_path / "o", progress=False)
