"""``partdisco segment`` on 2 ranks (gloo, CPU) equals one process byte for byte and resumes (issue #24)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

N_IMAGES = 11  # + 1 unreadable: 6 per rank, 2 chunks of (at most) 4 at batch 1
SEGMENT_ARGS = ["--size", "32", "--batch-size", "2", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from partdisco.models import create_segmenter, export_checkpoint

    root = tmp_path_factory.mktemp("ddp_segment")
    photos = root / "photos"
    (photos / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        h, w = (40, 56) if i % 3 else (48, 36)  # two processing sizes
        folder = photos / "sub" if i == 3 else photos
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (photos / "broken.png").write_bytes(b"not a png")  # listed as failed, once
    torch.manual_seed(0)
    ckpt = export_checkpoint(
        create_segmenter("resnet18", num_parts=3, background_channel=True), root / "model.pt"
    )
    return ckpt, photos


def _single(ckpt: Path, photos: Path, out: Path) -> None:
    from partdisco.cli import main

    torch.set_num_threads(1)  # the ranks run one thread each: the same convolution arithmetic
    assert main(["segment", str(ckpt), str(photos), "--out", str(out), *SEGMENT_ARGS]) == 0


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_torchrun_two_ranks_write_what_one_process_writes(tmp_path, inputs):
    ckpt, photos = inputs
    _single(ckpt, photos, tmp_path / "one" / "parts")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    out = tmp_path / "two" / "parts"  # one folder name: index.html shows it
    cmd += ["partdisco", "segment", str(ckpt), str(photos), "--out", str(out), *SEGMENT_ARGS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("segmented") == 1, done.stdout  # rank 0 reports, for both ranks
    assert f"{N_IMAGES + 1} images: {N_IMAGES} segmented, 0 already done, 1 unreadable" in done.stdout
    one, two = _files(tmp_path / "one" / "parts"), _files(out)
    assert sorted(one) == sorted(two)
    differ = [name for name in one if one[name] != two[name]]
    assert differ == [], differ  # labels, colour, overlays, thumbnails, parts.json and index.html


def _worker(rank: int, init_file: str, ckpt: str, photos: str, out: str, kill: bool) -> None:
    import time

    import torch.distributed as dist

    import partdisco.engine.segment.run as engine_segment  # the run merges the ledger after each chunk
    from partdisco.api import open_checkpoint, segment_files

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    if rank == 1 and kill:  # rank 1 is killed after its first chunk, once rank 0 has done its share
        real = engine_segment.merge_and_write

        def merge_then_die(*args, **kwargs):
            result = real(*args, **kwargs)
            if len(args[2]) < 4:  # this rank's first chunk is not listed yet (args: out, data, written)
                return result
            for _ in range(600):
                data = json.loads(Path(out, "parts.json").read_text())
                if len(data["images"]) + len(data["failed"]) == 4 + (N_IMAGES + 1) // 2:
                    break
                time.sleep(0.1)
            os._exit(9)

        engine_segment.merge_and_write = merge_then_die
    model = open_checkpoint(ckpt).segmenter
    summary = segment_files(model, [photos], out, size=32, batch_size=1, progress=False)  # chunks of 4
    Path(out, f"summary{rank}.json").write_text(json.dumps({"written": summary.written}))
    dist.destroy_process_group()


def test_rerun_after_a_killed_rank_finishes_only_what_is_missing(tmp_path, inputs):
    ckpt, photos = inputs
    _single(ckpt, photos, tmp_path / "one" / "parts")
    out = tmp_path / "two" / "parts"  # one folder name: index.html shows it
    with pytest.raises(Exception):  # noqa: B017 (rank 1 dies; spawn reports it however it can)
        mp.spawn(_worker, args=(str(tmp_path / "init1"), str(ckpt), str(photos), str(out), True), nprocs=2)
    entries = json.loads((out / "parts.json").read_text())["images"]
    done_before = set(entries)
    assert len(done_before) == N_IMAGES - 2  # rank 0's 5 images and rank 1's first chunk of 4
    mp.spawn(_worker, args=(str(tmp_path / "init2"), str(ckpt), str(photos), str(out), False), nprocs=2)
    written = json.loads((out / "summary0.json").read_text())["written"]
    assert written == json.loads((out / "summary1.json").read_text())["written"]  # gathered on both
    assert set(written) == {f"img{i}" if i != 3 else "sub/img3" for i in range(N_IMAGES)} - done_before
    for name in ("summary0.json", "summary1.json"):
        (out / name).unlink()
    one, two = _files(tmp_path / "one" / "parts"), _files(out)
    assert sorted(one) == sorted(two)
    assert [n for n in one if n.startswith("labels/") and one[n] != two[n]] == []
    assert json.loads(one["parts.json"])["images"] == json.loads(two["parts.json"])["images"]


def test_torchrun_eval_writes_one_metrics_file_equal_to_one_process(tmp_path, inputs):
    from partdisco.cli import main

    ckpt, _ = inputs
    args = ["dataset=synthetic", "data.image_size=32", "data.synthetic_test=6", "eval.baseline=false"]
    torch.set_num_threads(1)
    assert main(["eval", str(ckpt), *args, "--quiet", "--out", str(tmp_path / "one.json")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    cmd += ["partdisco", "eval", str(ckpt), *args, "--quiet", "--out", str(tmp_path / "two.json")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1, done.stdout  # rank 0 reports
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one.keys() == two.keys()
    for key, value in one.items():
        if isinstance(value, float):
            assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
