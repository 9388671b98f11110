import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.cli import main
from partdisco.models import create_segmenter, export_checkpoint

K = 4
# name -> (file, expected (H, W) of the outputs = the image after EXIF rotation)
EXPECTED = {
    "rgb": ("rgb.png", (48, 64)),
    "photo": ("photo.jpg", (40, 56)),
    "gray": ("gray.png", (36, 36)),
    "rgba": ("rgba.png", (32, 48)),
    "deep": ("deep.png", (40, 30)),
    "rotated": ("rotated.jpg", (40, 24)),  # stored 24x40 with EXIF orientation 6 (rotate 90)
    "sub/nested": ("sub/nested.png", (20, 28)),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    seg = create_segmenter("resnet18", num_parts=K)
    return export_checkpoint(seg, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)

    def rgb(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    Image.fromarray(rgb(48, 64)).save(root / "rgb.png")
    Image.fromarray(rgb(40, 56)).save(root / "photo.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8)).save(root / "gray.png")
    rgba = np.concatenate([rgb(32, 48), rng.integers(0, 256, (32, 48, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    deep = Image.fromarray(rng.integers(0, 65536, (40, 30), dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    deep.save(root / "deep.png")
    rotated = Image.fromarray(rgb(24, 40))
    exif = rotated.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    rotated.save(root / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(rgb(20, 28)).save(root / "sub" / "nested.png")
    (root / "corrupt.png").write_bytes(rng.bytes(200))
    return root


def run_segment(checkpoint, *args):
    return main(["segment", str(checkpoint), *map(str, args), "--size", "64", "--quiet", "--device", "cpu"])


@pytest.fixture(scope="module")
def segmented(checkpoint, mixed_folder, tmp_path_factory):
    """The mixed folder segmented once with --save-probs: (out, exit code, stdout, stderr)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("segmented") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run_segment(checkpoint, mixed_folder, "--out", out, "--save-probs", "--batch-size", "4")
    return out, code, stdout.getvalue(), stderr.getvalue()


def test_mixed_folder_outputs(segmented, mixed_folder):
    out, code, stdout, stderr = segmented
    assert code == 0
    assert "7 segmented" in stdout and "1 unreadable" in stdout
    assert "corrupt.png" in stderr
    for name, (_, (H, W)) in EXPECTED.items():
        labels_img = Image.open(out / "labels" / f"{name}.png")
        assert labels_img.mode == "P"
        labels = np.asarray(labels_img)
        assert labels.dtype == np.uint8 and labels.shape == (H, W), name
        assert labels.min() >= 1 and labels.max() <= K  # no background: the model has none, no masks
        color = np.asarray(Image.open(out / "color" / f"{name}.png"))
        assert color.dtype == np.uint8 and color.shape == (H, W, 3)
        overlay_img = Image.open(out / "overlay" / f"{name}.jpg")
        assert overlay_img.format == "JPEG"
        overlay = np.asarray(overlay_img)
        assert overlay.dtype == np.uint8 and overlay.shape == (H, W, 3)
        with np.load(out / "probs" / f"{name}.npz") as npz:
            probs = npz["probs"]
            assert not bool(npz["background_channel"])
        assert probs.dtype == np.float16 and probs.shape == (K, H, W)
        np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
        # labels are the argmax of the probabilities except near part boundaries (nearest vs bilinear)
        assert (probs.argmax(0) + 1 == labels).mean() > 0.8
    assert not (out / "labels" / "corrupt.png").exists()

    data = json.loads((out / "parts.json").read_text())
    assert set(data["images"]) == set(EXPECTED)
    assert data["settings"]["num_parts"] == K and data["settings"]["size"] == 64
    assert data["palette"][0] == [0, 0, 0] and len(data["palette"]) == K + 1
    assert list(data["failed"]) == [str((mixed_folder / "corrupt.png").resolve())]
    for name, (file, (H, W)) in EXPECTED.items():
        entry = data["images"][name]
        assert entry["source"] == str((mixed_folder / file).resolve())
        assert (entry["height"], entry["width"]) == (H, W) and entry["background"] == "none"
        labels = np.asarray(Image.open(out / entry["files"]["labels"]))
        assert entry["area"] == [int((labels == k).sum()) for k in range(1, K + 1)]
        assert sum(entry["area"]) == H * W
        for k, centroid in enumerate(entry["centroid"], start=1):
            if k in entry["present"]:
                assert 0 <= centroid[0] <= W and 0 <= centroid[1] <= H
            else:
                assert centroid is None
    html = (out / "index.html").read_text()
    assert html.count('class="card"') == len(EXPECTED)
    assert "overlay/sub/nested.jpg" in html


def test_same_colour_for_same_part(segmented):
    out = segmented[0]
    palette = np.asarray(json.loads((out / "parts.json").read_text())["palette"], dtype=np.uint8)
    for name in EXPECTED:
        labels = np.asarray(Image.open(out / "labels" / f"{name}.png"))
        color = np.asarray(Image.open(out / "color" / f"{name}.png"))
        np.testing.assert_array_equal(color, palette[labels])


def test_rerun_skips_existing(checkpoint, mixed_folder, segmented, capsys):
    out = segmented[0]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert len(stamps) == 5 * len(EXPECTED) + 2  # 5 files per image + parts.json, index.html
    code = run_segment(checkpoint, mixed_folder, "--out", out, "--save-probs", "--batch-size", "4")
    assert code == 0
    assert "0 segmented, 7 already done, 1 unreadable" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert {p: t for p, t in after.items() if p.suffix != ".json" and p.suffix != ".html"} == {
        p: t for p, t in stamps.items() if p.suffix != ".json" and p.suffix != ".html"
    }


def test_existing_out_is_reused_not_wiped(checkpoint, mixed_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_segment(checkpoint, mixed_folder / "rgb.png", "--out", out) == 0
    assert (out / "keep.txt").read_text() == "mine"


def test_glob_input(checkpoint, mixed_folder, tmp_path):
    out = tmp_path / "out"
    assert run_segment(checkpoint, str(mixed_folder / "p*.jpg"), "--out", out) == 0
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["photo.png"]


def test_masks(checkpoint, mixed_folder, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:50] = 255
    Image.fromarray(mask).save(masks / "rgb.png")
    out = tmp_path / "out"
    assert run_segment(checkpoint, mixed_folder / "rgb.png", "--out", out, "--masks", masks) == 0
    labels = np.asarray(Image.open(out / "labels" / "rgb.png"))
    assert (labels[mask == 0] == 0).all() and (labels[mask > 0] >= 1).all()
    entry = json.loads((out / "parts.json").read_text())["images"]["rgb"]
    assert entry["background"] == "mask" and sum(entry["area"]) == 20 * 30


def test_mask_of_wrong_size_names_both_files(checkpoint, mixed_folder, tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "rgb.png")
    code = run_segment(checkpoint, mixed_folder / "rgb.png", "--out", tmp_path / "out", "--masks", masks)
    err = capsys.readouterr().err
    assert code == 2
    assert str(mixed_folder / "rgb.png") in err and str(masks / "rgb.png") in err


def test_empty_input_is_an_error(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_segment(checkpoint, tmp_path / "empty", "--out", tmp_path / "out") == 2
    assert "no images found" in capsys.readouterr().err


def test_missing_input_and_conflicting_flags(checkpoint, mixed_folder, tmp_path, capsys):
    assert run_segment(checkpoint, tmp_path / "nope", "--out", tmp_path / "out") == 2
    assert "nope" in capsys.readouterr().err
    args = (mixed_folder, "--out", tmp_path / "out", "--masks", tmp_path, "--no-background")
    assert run_segment(checkpoint, *args) == 2
    assert "--masks" in capsys.readouterr().err


def test_no_background_with_background_channel(mixed_folder, tmp_path):
    torch.manual_seed(0)
    seg = create_segmenter("resnet18", num_parts=3, background_channel=True)
    ckpt = export_checkpoint(seg, tmp_path / "bg.pt")
    out = tmp_path / "out"
    assert run_segment(ckpt, mixed_folder / "rgb.png", "--out", out, "--save-probs") == 0
    entry = json.loads((out / "parts.json").read_text())["images"]["rgb"]
    assert entry["background"] == "model" and len(entry["area"]) == 3
    with np.load(out / "probs" / "rgb.npz") as npz:
        assert npz["probs"].shape == (4, 48, 64) and bool(npz["background_channel"])
    labels = np.asarray(Image.open(out / "labels" / "rgb.png"))
    assert labels.max() <= 3
    out2 = tmp_path / "out2"
    assert run_segment(ckpt, mixed_folder / "rgb.png", "--out", out2, "--no-background") == 0
    assert np.asarray(Image.open(out2 / "labels" / "rgb.png")).min() >= 1


def test_fg_refine_option(mixed_folder, tmp_path, capsys):
    from partdisco.api import load, segment

    torch.manual_seed(0)
    seg = create_segmenter("resnet18", num_parts=3, background_channel=True)
    ckpt = export_checkpoint(seg, tmp_path / "bg.pt")
    image = mixed_folder / "rgb.png"
    for radius in ("0", "0.2"):
        out = tmp_path / f"out{radius}"
        assert run_segment(ckpt, image, "--out", out, "--fg-refine", radius) == 0
        settings = json.loads((out / "parts.json").read_text())["settings"]
        assert settings["fg_refine"] == [float(radius), 0.001]
        labels, _ = segment(load(ckpt), str(image), size=64, fg_refine=float(radius))  # the API, same maps
        assert np.array_equal(np.asarray(Image.open(out / "labels" / "rgb.png")), labels)
    assert run_segment(ckpt, image, "--out", tmp_path / "bad", "--fg-refine", "0.5") == 2
    assert "fg_refine must be in [0, 0.5)" in capsys.readouterr().err


def test_help_lists_segment(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "segment" in capsys.readouterr().out


def test_corrupt_only_folder(checkpoint, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "x.png").write_bytes(os.urandom(50))
    assert run_segment(checkpoint, folder, "--out", tmp_path / "out") == 1
    assert "x.png" in capsys.readouterr().err
    assert json.loads((Path(tmp_path / "out") / "parts.json").read_text())["images"] == {}


@pytest.mark.slow
def test_default_size_is_the_training_image_size(tiny_overrides, mixed_folder, tmp_path, capsys):
    from partdisco.api import resolve_train_config, train

    run = train(resolve_train_config([*tiny_overrides, "train.steps=1", "eval.baseline=false"]))
    out = tmp_path / "seg"
    code = main(
        ["segment", str(run / "model.pt"), str(mixed_folder), "--out", str(out), "--quiet", "--device", "cpu"]
    )
    assert code == 0
    data = json.loads((out / "parts.json").read_text())
    assert data["settings"]["size"] == 32  # the tiny run trained at data.image_size=32
