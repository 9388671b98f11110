"""segment reads and writes in threads while the network runs (issue #24): same files, clean stops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import partdisco.engine.segment.run as engine_segment  # segment_files calls _segment_or_skip there
from partdisco.engine.segment import SegmentOptions, segment_files
from partdisco.models import create_segmenter


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return create_segmenter("resnet18", num_parts=3).eval()


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_many_chunks_write_what_one_chunk_writes(tmp_path, photos, model):
    # batch 1: chunks of 4 images, reads and writes overlapping the next chunk; batch 16: one chunk
    segment_files(
        model, [photos], tmp_path / "a" / "out", SegmentOptions(size=24, batch_size=1), progress=False
    )
    segment_files(
        model, [photos], tmp_path / "b" / "out", SegmentOptions(size=24, batch_size=16), progress=False
    )
    assert _files(tmp_path / "a" / "out") == _files(tmp_path / "b" / "out")


def _ctrl_c_at_chunk(monkeypatch, k: int):
    """Ctrl-C when chunk ``k`` (1-based) would be segmented; returns the real function, to restore."""
    real, calls = engine_segment._segment_or_skip, [0]

    def stop(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_segment, "_segment_or_skip", stop)
    return real


def test_a_stop_mid_run_lists_what_was_written_and_a_rerun_finishes(tmp_path, photos, model, monkeypatch):
    real = _ctrl_c_at_chunk(monkeypatch, 3)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_files(model, [photos], out, SegmentOptions(size=24, batch_size=1), progress=False)
    chunk = engine_segment.CHUNK_BATCHES  # images per chunk at batch size 1
    assert 2 * chunk < 9, "the test needs a third chunk"
    listed = set(json.loads((out / "parts.json").read_text())["images"])
    assert listed == {f"im{i}" for i in range(2 * chunk)}  # chunk 2's files were being written: listed too
    monkeypatch.setattr(engine_segment, "_segment_or_skip", real)
    summary = segment_files(model, [photos], out, SegmentOptions(size=24, batch_size=1), progress=False)
    assert summary.written == [f"im{i}" for i in range(2 * chunk, 9)] and len(summary.skipped) == 2 * chunk


@pytest.fixture()
def many_photos(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(20):  # 5 chunks at batch size 1
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(root / f"im{i:02d}.png")
    return root


def _count_ledger_writes(monkeypatch):
    real, calls = engine_segment.merge_and_write, []

    def counting(*args, **kwargs):
        calls.append(len(args[2]))  # images this run had listed
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_segment, "merge_and_write", counting)
    return calls


def test_a_costly_ledger_is_rewritten_only_when_due_and_the_files_are_the_same(
    tmp_path, many_photos, model, monkeypatch
):
    calls = _count_ledger_writes(monkeypatch)
    options = SegmentOptions(size=24, batch_size=1)
    segment_files(model, [many_photos], tmp_path / "a" / "out", options, progress=False)
    assert calls == [4, 8, 12, 16, 20, 20]  # a cheap ledger: after every chunk, at the end, the final one
    calls.clear()
    # a ledger that costs: rewritten once its cost ratio allows (the first rewrite measures the cost)
    monkeypatch.setattr(engine_segment, "FLUSH_FREE_S", 0.0)
    monkeypatch.setattr(engine_segment, "FLUSH_COST_RATIO", 1e9)
    segment_files(model, [many_photos], tmp_path / "b" / "out", options, progress=False)
    assert calls == [4, 20, 20]
    assert _files(tmp_path / "a" / "out") == _files(tmp_path / "b" / "out")


def test_a_stop_between_due_rewrites_still_lists_every_written_image(
    tmp_path, many_photos, model, monkeypatch
):
    monkeypatch.setattr(engine_segment, "FLUSH_FREE_S", 0.0)
    monkeypatch.setattr(engine_segment, "FLUSH_COST_RATIO", 1e9)
    real = _ctrl_c_at_chunk(monkeypatch, 4)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        segment_files(model, [many_photos], out, SegmentOptions(size=24, batch_size=1), progress=False)
    ledger = json.loads((out / "parts.json").read_text())
    assert set(ledger["images"]) == {f"im{i:02d}" for i in range(12)}  # not only the first rewrite's 4
    # every image's output paths were claimed before the first chunk: nothing segment wrote is foreign
    assert {f"labels/im{i:02d}.png" for i in range(20)} <= set(ledger["owned_files"])
    monkeypatch.setattr(engine_segment, "_segment_or_skip", real)
    summary = segment_files(model, [many_photos], out, SegmentOptions(size=24, batch_size=1), progress=False)
    assert summary.written == [f"im{i:02d}" for i in range(12, 20)] and len(summary.skipped) == 12
