"""Issue #22, points 4, 5, 8 and 9: segment runs with other settings or another model never mix files, a
killed run can be rerun, extreme strips and sizes stay bounded."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.engine.inference import images as inference_mod  # segment_images resizes there
from partdisco.engine.inference import processing_size
from partdisco.engine.segment import SegmentOptions, segment_files
from partdisco.engine.segment import (
    run as segment_mod,  # segment_files calls segment_images, write_outputs there
)
from partdisco.models import create_segmenter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_segmenter("resnet18", num_parts=3).eval()


def _images(folder, n=3):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def _run(model, src, out, size=32, crop="auto", **kw):
    options = SegmentOptions(size=size, batch_size=1, crop=crop)
    return segment_files(model, [str(src)], out, options, progress=False, **kw)


# --------------------------------------------------------------------------------------- 4: other settings


def test_a_second_run_with_other_settings_is_refused_while_the_first_runs(model, tmp_path, monkeypatch):
    src, out = _images(tmp_path / "in"), tmp_path / "out"
    real, errors = segment_mod.segment_images, []

    def with_a_second_run(*args, **kwargs):
        if not errors:  # the second run starts while the first segments its first chunk
            with pytest.raises(ValueError, match=r"other settings .*size: 32 there vs 48 now") as err:
                _run(model, src, out, size=48)
            errors.append(err)
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_mod, "segment_images", with_a_second_run)
    summary = _run(model, src, out)
    assert errors and len(summary.written) == 3
    data = json.loads((out / "parts.json").read_text())
    assert data["settings"]["size"] == 32 and sorted(data["images"]) == ["im0", "im1", "im2"]
    assert {e["height"] for e in data["images"].values()} == {30}


def test_an_overwrite_run_with_other_settings_stops_the_first(model, tmp_path, monkeypatch):
    src, out = _images(tmp_path / "in"), tmp_path / "out"
    real, calls = segment_mod.segment_images, []

    def with_a_second_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            monkeypatch.setattr(segment_mod, "segment_images", real)
            _run(model, src, out, size=48, overwrite=True)
            monkeypatch.setattr(segment_mod, "segment_images", with_a_second_run)
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_mod, "segment_images", with_a_second_run)
    with pytest.raises(ValueError, match="rewritten meanwhile by another partdisco segment run"):
        _run(model, src, out)
    data = json.loads((out / "parts.json").read_text())
    assert data["settings"]["size"] == 48 and len(data["images"]) == 3  # the other run's index, whole
    monkeypatch.setattr(segment_mod, "segment_images", real)
    # every file is segment's own: the first settings can be recomputed into the folder
    assert len(_run(model, src, out, overwrite=True).written) == 3


# --------------------------------------------------------------------------------------- 5: another model


def test_a_changed_model_is_not_reported_as_done(model, tmp_path):
    src, out = _images(tmp_path / "in"), tmp_path / "out"
    _run(model, src, out, checkpoint="runs/x/model.pt")
    retrained = copy.deepcopy(model)
    with torch.no_grad():
        next(retrained.parameters()).add_(0.01)
    with pytest.raises(ValueError, match="the model's weights differ from those that wrote it"):
        _run(retrained, src, out, checkpoint="runs/x/model.pt")
    assert len(_run(retrained, src, out, checkpoint="runs/x/model.pt", overwrite=True).written) == 3
    assert len(_run(retrained, src, out, checkpoint="runs/x/model.pt").skipped) == 3


# --------------------------------------------------------------------------------------- 9: recovery


def test_files_of_a_run_killed_mid_chunk_are_its_own_on_the_rerun(model, tmp_path, monkeypatch):
    src, out = _images(tmp_path / "in"), tmp_path / "out"
    real, calls = segment_mod.write_outputs, []

    def killed_after_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the first image of the chunk was written
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_mod, "write_outputs", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        segment_files(
            model,
            [str(src)],
            out,
            SegmentOptions(size=32, batch_size=8),
            progress=False,
        )
    assert (out / "labels" / "im0.png").is_file()
    monkeypatch.setattr(segment_mod, "write_outputs", real)
    summary = _run(model, src, out)  # no "files segment did not write" refusal
    # images whose files were all written before the kill are listed (skipped now); the rest are written
    assert "im1" in summary.written
    assert sorted(summary.written + summary.skipped) == ["im0", "im1", "im2"]
    assert len(_run(model, src, out, overwrite=True).written) == 3


def test_a_250_character_file_name_is_skipped_by_name(model, tmp_path):
    src, out = _images(tmp_path / "in", n=1), tmp_path / "out"
    long = src / ("x" * 246 + ".png")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(long)
    summary = _run(model, src, out)
    assert summary.written == ["im0"]
    assert (
        "would be" in summary.failed[str(long.resolve())]
        and "rename the file" in summary.failed[str(long.resolve())]
    )
    assert _run(model, src, out).skipped == ["im0"]  # the rerun works too


# --------------------------------------------------------------------------------------- 8: memory


def test_an_extreme_strip_is_processed_at_a_bounded_size(model, tmp_path, monkeypatch):
    assert processing_size(1, 5000, 256) == (1, 1024)
    assert processing_size(300, 400, 256) == (256, 341)  # ordinary images as before
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((1, 5000, 3), 128, np.uint8)).save(src / "strip.png")
    seen = []
    real = inference_mod.image_to_tensor

    def spy(image, size, *args, **kwargs):
        seen.append(size)
        return real(image, size, *args, **kwargs)

    monkeypatch.setattr(inference_mod, "image_to_tensor", spy)
    summary = _run(model, src, tmp_path / "out", crop="none")
    assert summary.written == ["strip"] or summary.failed
    assert seen and all(h * w <= 4 * 32 * 32 for h, w in seen)


def test_an_absurd_size_is_refused_before_any_work(model, tmp_path):
    src, out = _images(tmp_path / "in", n=1), tmp_path / "out"
    with pytest.raises(ValueError, match=r"size must be 1\.\.2048"):
        _run(model, src, out, size=100000)
    assert not out.exists()


# --------------------------------------------------------------------------------------- misleading


def test_images_without_foreground_are_flagged_and_empty_masks_named(model, tmp_path, caplog):
    src, out = _images(tmp_path / "in", n=2), tmp_path / "out"
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((30, 40), np.uint8)).save(masks / f"im{i}.png")
    with caplog.at_level("WARNING"):
        summary = _run(model, src, out, masks_dir=masks)
    assert sorted(summary.no_foreground) == ["im0", "im1"]
    assert "NO FOREGROUND FOUND" in (out / "index.html").read_text()
    assert "no foreground found in 2 image(s)" in caplog.text
    assert f"{src.resolve() / 'im0.png'}: its mask is empty" in caplog.text


def test_the_weights_fingerprint_of_a_file_backed_model_is_the_files(tmp_path):
    from torch import nn

    from partdisco.engine.segment import weights_fingerprint

    class FileModel(nn.Module):  # as OnnxSegmenter: no state dict, the weights are the file
        def __init__(self, path):
            super().__init__()
            self.path = path

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights two")
    assert weights_fingerprint(FileModel(a)) != weights_fingerprint(FileModel(b))
    assert weights_fingerprint(FileModel(a)) == weights_fingerprint(FileModel(tmp_path / "a.onnx"))
