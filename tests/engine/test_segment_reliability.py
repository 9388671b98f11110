"""Issue #15, points 5 and 7: segment owns only its files, merges concurrent runs, bounds memory."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.engine.segment import SegmentOptions, segment_files
from partdisco.engine.segment import inputs as segment_inputs
from partdisco.engine.segment import ledger as segment_ledger
from partdisco.engine.segment import run as segment_mod  # segment_files calls segment_images there
from partdisco.models import create_segmenter


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_segmenter("resnet18", num_parts=3).eval()


def _image(path, size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _run(model, inputs, out, **kw):
    return segment_files(model, [str(p) for p in inputs], out, SegmentOptions(size=32), progress=False, **kw)


def test_files_segment_did_not_write_are_never_replaced(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "cat.png")
    out = tmp_path / "out"
    (out / "labels").mkdir(parents=True)
    (out / "labels" / "cat.png").write_bytes(b"the user's own file")
    (out / "index.html").write_text("<p>my page</p>")
    with pytest.raises(ValueError, match=r"holds files that partdisco segment did not write .*index.html"):
        _run(model, [src], out)
    assert (out / "labels" / "cat.png").read_bytes() == b"the user's own file"
    assert (out / "index.html").read_text() == "<p>my page</p>"
    assert not (out / "parts.json").exists()


def test_its_own_files_are_recomputed_and_recorded(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "cat.png")
    out = tmp_path / "out"
    _run(model, [src], out)
    data = json.loads((out / "parts.json").read_text())
    assert {"labels/cat.png", "color/cat.png", "overlay/cat.jpg"} <= set(data["owned_files"])
    summary = _run(model, [src], out, overwrite=True)  # its own files: replaced without complaint
    assert summary.written == ["cat"]


def test_two_runs_into_one_out_list_every_image(model, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _image(a / "one.png", seed=1)
    _image(b / "two.png", seed=2)
    out = tmp_path / "out"
    _run(model, [a], out)
    # Run B started before run A wrote anything: its first read of parts.json found none.
    real = segment_ledger.read_parts_json
    calls = {"n": 0}

    def stale_first(path):
        calls["n"] += 1
        return None if calls["n"] == 1 else real(path)

    monkeypatch.setattr(segment_ledger, "read_parts_json", stale_first)
    _run(model, [b], out)
    data = json.loads((out / "parts.json").read_text())
    assert sorted(data["images"]) == ["one", "two"]
    html = (out / "index.html").read_text()
    assert "one" in html and "two" in html


def test_huge_images_are_shrunk_while_decoding(model, tmp_path, monkeypatch):
    monkeypatch.setattr(segment_inputs, "MAX_WORKING_PIXELS", 60 * 40)
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "big.png", size=(600, 400))
    Image.fromarray(np.full((400, 600, 3), 90, np.uint8)).save(src / "big.jpg", quality=90)
    seen = []
    real = segment_mod.segment_images

    def spy(model_, images, *args, **kwargs):
        seen.extend(image.shape for image in images)
        return real(model_, images, *args, **kwargs)

    monkeypatch.setattr(segment_mod, "segment_images", spy)
    summary = _run(model, [src], tmp_path / "out")
    assert sorted(summary.written) == ["big", "big.jpg"] or len(summary.written) == 2
    assert seen and all(h * w <= 60 * 40 and w / h == pytest.approx(1.5, rel=0.05) for h, w, _ in seen)
    entry = next(iter(json.loads((tmp_path / "out" / "parts.json").read_text())["images"].values()))
    assert entry["width"] * entry["height"] <= 60 * 40


def test_a_10000_pixel_square_png_stays_small(tmp_path):
    """The issue's ~100 KB PNG of 10000x10000 (over 6 GB before): shrunk to the cap, peak RSS measured."""
    Image.new("L", (10000, 10000), 128).save(tmp_path / "huge.png")
    script = textwrap.dedent(
        f"""
        import resource, torch
        from partdisco.engine.segment import SegmentOptions, segment_files
        from partdisco.models import create_segmenter
        torch.set_num_threads(1)
        model = create_segmenter("resnet18", num_parts=3).eval()
        s = segment_files(model, [{str(tmp_path / "huge.png")!r}], {str(tmp_path / "out")!r},
                          SegmentOptions(size=32), progress=False)
        print(len(s.written), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    written, peak_kib = map(int, done.stdout.split())
    assert written == 1
    entry = json.loads((tmp_path / "out" / "parts.json").read_text())["images"]["huge"]
    assert entry["width"] * entry["height"] <= segment_inputs.MAX_WORKING_PIXELS
    assert peak_kib < 4 * 2**20, f"peak RSS {peak_kib / 2**20:.2f} GiB"  # measured 1.6-2.9 GiB; old: > 6 GB


def test_an_image_that_cannot_be_processed_is_skipped_by_name(model, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    _image(src / "ok.png", size=(40, 30))
    _image(src / "toobig.png", size=(50, 50))
    real = segment_mod.segment_images

    def picky(model_, images, *args, **kwargs):
        if any(image.shape[0] == 50 for image in images):
            raise MemoryError("cannot allocate")
        return real(model_, images, *args, **kwargs)

    monkeypatch.setattr(segment_mod, "segment_images", picky)
    summary = _run(model, [src], tmp_path / "out")
    assert summary.written == ["ok"]
    ((path, reason),) = summary.failed.items()
    assert path.endswith("toobig.png") and "MemoryError" in reason


def test_a_file_name_that_is_not_utf8_does_not_break_index_html(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    name = os.fsdecode(b"caf\xff.png")
    _image(src / name)
    out = tmp_path / "out"
    for _ in range(2):  # the rerun reads its parts.json back and writes the index again
        summary = _run(model, [src], out)
        html = (out / "index.html").read_text(encoding="utf-8")
        assert "caf%FF.png" in html and "caf\ufffd" in html
    assert summary.skipped == [os.fsdecode(b"caf\xff")]
