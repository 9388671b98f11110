"""Benchmark ``partdisco segment``: images per second at 256x256, batch 1 and batch 16.

Two randomly initialised segmenters (``resnet18`` and the reference ``deeplab_r50_2branch``, K = 4) on
random 256x256 RGB images. Two numbers per row:

- ``in memory``: :func:`partdisco.engine.inference.segment_images` on uint8 arrays (resize, network, logit
  upsampling, softmax, labels, centroids), what ``partdisco.segment()`` costs;
- ``end to end``: :func:`partdisco.engine.segment.segment_files` on a folder of PNGs: reading, the above,
  and writing labels / colour / overlay PNGs, ``parts.json`` and ``index.html`` (what the command costs,
  without loading the checkpoint).

One warm-up batch is not timed; each row is timed ``--repeats`` times and the best and median rates are
reported (the best is the least disturbed by other processes on a shared machine; the load average is
recorded). Rows are timed with 1 torch thread and with torch's default: on a busy 2-core machine two
threads can be several times slower than one (the threads wait for each other), so both are shown.
The table is printed and appended to BENCHMARKS.md in the repo root.

    python benchmarks/bench_segment.py                      # CPU, the defaults below
    python benchmarks/bench_segment.py --device cuda --images 64
    python benchmarks/bench_segment.py --no-append          # print only
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

from partdisco.engine.inference import segment_images
from partdisco.engine.segment import segment_files
from partdisco.models import create_segmenter

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Benchmarks\n\nTimings recorded by the scripts in `benchmarks/`; newest sections last.\n"


def sync(model) -> None:
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def time_in_memory(model, images: list[np.ndarray], batch: int, size: int, repeats: int) -> list[float]:
    segment_images(model, images[:batch], size=size, batch_size=batch, with_probs=False)  # warm-up
    rates = []
    for _ in range(repeats):
        sync(model)
        start = time.perf_counter()
        segment_images(model, images, size=size, batch_size=batch, with_probs=False)
        sync(model)
        rates.append(len(images) / (time.perf_counter() - start))
    return rates


def time_end_to_end(model, folder: Path, warm: Path, batch: int, size: int, repeats: int) -> list[float]:
    count = len(list(folder.iterdir()))
    rates = []
    with tempfile.TemporaryDirectory() as out:
        segment_files(model, [warm], Path(out) / "warm", size=size, batch_size=batch, progress=False)
        for r in range(repeats):
            start = time.perf_counter()
            segment_files(model, [folder], Path(out) / f"run{r}", size=size, batch_size=batch, progress=False)
            rates.append(count / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "deeplab_r50_2branch"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--images", type=int, default=16, help="timed images per row (a multiple of 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per row; best and median kept")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads",
        nargs="+",
        type=int,
        default=None,
        help="torch thread counts to time (default: 1 and torch's)",
    )
    parser.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
    args = parser.parse_args()
    thread_counts = list(dict.fromkeys(args.threads or [1, torch.get_num_threads()]))
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, warm = Path(tmp) / "images", Path(tmp) / "warm"
        for i, image in enumerate(images):
            folder.mkdir(exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:04d}.png")
        warm.mkdir()
        for i in range(max(args.batches)):
            Image.fromarray(images[i % len(images)]).save(warm / f"{i:04d}.png")
        for arch in args.archs:
            torch.manual_seed(0)
            model = create_segmenter(arch, num_parts=args.parts).to(device).eval()
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for batch in args.batches:
                    in_memory = time_in_memory(model, images, batch, args.size, args.repeats)
                    end_to_end = time_end_to_end(model, folder, warm, batch, args.size, args.repeats)
                    rows.append((arch, threads, batch, in_memory, end_to_end))
                    print(
                        f"{arch:22s} {threads} threads, batch {batch:3d}: {max(in_memory):7.2f} img/s in "
                        f"memory, {max(end_to_end):7.2f} end to end (best of {args.repeats})"
                    )
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    info = (
        f"{datetime.date.today().isoformat()}, {device_name}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, "
        f"Python {platform.python_version()}, "
        f"load average {load_before:.1f} before / {load_after:.1f} after"
    )
    lines = [
        "",
        f"## `partdisco segment` at {args.size}x{args.size} on {args.device} (benchmarks/bench_segment.py)",
        "",
        info + ".",
        f"Randomly initialised models, K = {args.parts}, {len(images)} images timed {args.repeats} times "
        "per row after one warm-up batch; best (median) images/s. *In memory*: `segment_images` on uint8 "
        "arrays (resize, network, upsampling, labels, centroids). *End to end*: `segment_files` on a "
        "folder of PNGs, writing labels / colour / overlay "
        "PNGs, parts.json and index.html.",
        "",
        "| model | torch threads | batch | images/s in memory | images/s end to end |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {arch} | {t} | {b} | {max(m):.2f} ({np.median(m):.2f}) | {max(e):.2f} ({np.median(e):.2f}) |"
        for arch, t, b, m, e in rows
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        path = ROOT / "BENCHMARKS.md"
        if not path.exists():
            path.write_text(HEADER, encoding="utf-8")
        with path.open("a", encoding="utf-8") as f:
            f.write(text)
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
