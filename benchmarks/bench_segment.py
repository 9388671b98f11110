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

``--floor``: ``segment`` against its floor, the network's forward alone, on a folder of synthetic 512-px
JPEG photos (``--photos``): the forward on the very tensors segment feeds it (decoded, resized, normalised
beforehand, untimed) vs ``segment_files`` end to end (decode, resize, forward, labels, PNG / JPEG files,
parts.json, index.html), for PyTorch and onnxruntime (``--runtimes``). Run it under torchrun for more
processes: each rank takes its share of the images, with cores / ranks threads.

``--discovered``: the model carries a discovered-foreground classifier (as models trained by ``recipe=cpu``
on photos without masks do), so segment runs EfficientNet-Lite0 once more per photo; the floor then counts
that pass too.

    python benchmarks/bench_segment.py --floor                                  # 1 process
    python benchmarks/bench_segment.py --floor --discovered --runtimes torch
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_segment.py --floor  # 2 processes
"""

from __future__ import annotations

import argparse
import dataclasses
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
from partdisco.engine.segment import SegmentOptions, segment_files
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
        segment_files(
            model, [warm], Path(out) / "warm", SegmentOptions(size=size, batch_size=batch), progress=False
        )
        for r in range(repeats):
            start = time.perf_counter()
            segment_files(
                model,
                [folder],
                Path(out) / f"run{r}",
                SegmentOptions(size=size, batch_size=batch),
                progress=False,
            )
            rates.append(count / (time.perf_counter() - start))
    return rates


def random_classifier():
    """A discovered-foreground classifier of the right shape (its values do not change the cost)."""
    from partdisco.models.foreground import ForegroundClassifier

    rng = np.random.default_rng(0)
    channels = 152  # EfficientNet-Lite0 stages 3 + 4
    return ForegroundClassifier(
        mean=tuple(rng.normal(0, 0.05, channels).tolist()),
        std=tuple(rng.uniform(0.05, 0.1, channels).tolist()),
        weight=tuple(rng.normal(0, 1, channels).tolist()),
        bias=0.0,
    )


def make_photos(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` smooth random side x side JPEGs (photo-like: they compress like photos, not like noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"photo{i:04d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def floor_main(args: argparse.Namespace) -> None:
    """``--floor``: segment's images/s against the forward-only images/s on the same tensors."""
    import shutil

    from partdisco.data.io import read_image
    from partdisco.engine import distributed as dist_utils
    from partdisco.engine.inference import image_to_tensor, processing_size
    from partdisco.engine.inference.discovered import discovery_network, network_input

    dist_utils.init_from_env(torch.device("cpu"))
    rank, world = dist_utils.rank(), dist_utils.world_size()
    threads = args.threads[0] if args.threads else max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    work = Path(args.workdir)
    if rank == 0:
        make_photos(work / "photos", args.photos, args.photo_size)
    dist_utils.barrier()
    files = sorted((work / "photos").glob("*.jpg"))[: args.photos]
    torch.manual_seed(0)
    background = args.background or args.discovered
    seg = create_segmenter(args.archs[0], num_parts=args.parts, background_channel=background).eval()
    if args.discovered:  # a model trained with foreground discovery carries its classifier
        seg.inference_defaults = dataclasses.replace(seg.inference_defaults, foreground=random_classifier())
    # the forward's inputs: exactly what segment feeds the network(s) (untimed)
    mine = files[rank::world]
    tensors, discovery_inputs = [], []
    for path in mine:
        image = read_image(path)
        size = processing_size(image.shape[0], image.shape[1], args.size)
        tensors.append(seg.preprocess(image_to_tensor(image, size)))
        if args.discovered:
            discovery_inputs.append(network_input(image, seg.inference_defaults.foreground.size))
    batch = args.batches[0]
    batches = [torch.stack(tensors[i : i + batch]) for i in range(0, len(tensors), batch)]
    discovery = discovery_network("cpu") if args.discovered else None
    load_before = os.getloadavg()[0]
    rows = []
    for runtime in args.runtimes:
        if runtime == "onnx":
            from partdisco.models.onnx_model import OnnxSegmenter, export_onnx

            if rank == 0:
                export_onnx(seg, work / "model.onnx")
            dist_utils.barrier()
            model = OnnxSegmenter(work / "model.onnx", threads=threads)
        else:
            model = seg
        with torch.no_grad():
            model(batches[0])  # warm-up
        forward, end_to_end = [], []
        for r in range(args.repeats):
            dist_utils.barrier()
            start = time.perf_counter()
            with torch.no_grad():
                for x in batches:
                    model(x)
                for x in discovery_inputs:  # the discovered foreground: one pass per photo, as segment does
                    discovery(x, with_logits=False)
            dist_utils.barrier()
            forward.append(len(files) / (time.perf_counter() - start))
            out = work / f"out-{runtime}-{r}"
            if rank == 0:
                shutil.rmtree(out, ignore_errors=True)
            dist_utils.barrier()
            start = time.perf_counter()
            segment_files(
                model,
                [work / "photos"],
                out,
                SegmentOptions(size=args.size, batch_size=batch),
                progress=False,
            )
            dist_utils.barrier()
            end_to_end.append(len(files) / (time.perf_counter() - start))
        rows.append((runtime, max(forward), max(end_to_end)))
        if rank == 0:
            print(f"{runtime}: forward {max(forward):.2f} img/s, segment {max(end_to_end):.2f} img/s")
    if rank != 0:
        return
    load_after = os.getloadavg()[0]
    discovered_note = (
        " + the discovered foreground (a classifier on EfficientNet-Lite0 stride-8 features at "
        f"{seg.inference_defaults.foreground.size} px, one pass per photo, counted in the forward too)"
        if args.discovered
        else ""
    )
    import partdisco.engine.segment as engine_segment

    overlap = (
        f"{getattr(engine_segment, 'IO_THREADS', 0)} I/O threads"
        if hasattr(engine_segment, "IO_THREADS")
        else "sequential (no I/O threads)"
    )
    versions = f"torch {torch.__version__}"
    if "onnx" in args.runtimes:
        import onnxruntime

        versions += f", onnxruntime {onnxruntime.__version__}"
    lines = [
        "",
        f"## `partdisco segment` vs its forward-only floor, {args.photo_size}-px photos, {world} "
        f"process{'es' if world > 1 else ''} (benchmarks/bench_segment.py --floor)",
        "",
        f"{datetime.datetime.now().isoformat(timespec='minutes')}, {cpu_model()}, {os.cpu_count()} cores, "
        f"{world} process(es) x {threads} thread(s), {versions}, Python {platform.python_version()}, "
        f"load average {load_before:.1f} before / {load_after:.1f} after (other agents share the machine).",
        f"{args.archs[0]}, K = {args.parts}{' + background' if background else ''}"
        f"{discovered_note if args.discovered else ''}, {len(files)} JPEG "
        f"photos {args.photo_size}x{args.photo_size} -> network input {args.size} px, batch {batch}, segment "
        f"{overlap}; best of {args.repeats}. *Forward*: the network alone on the tensors segment feeds it. "
        "*Segment*: `segment_files` end to end (decode, resize, forward, labels, thumbnail, 2 PNGs and an "
        "overlay JPEG per image, parts.json, index.html).",
        "",
        "| runtime | forward images/s | segment images/s | segment / forward |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {rt} | {f:.2f} | {e:.2f} | {100 * e / f:.0f} % |" for rt, f, e in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_append:
        with (ROOT / "BENCHMARKS.md").open("a", encoding="utf-8") as f:
            f.write(text)
        print(f"appended to {ROOT / 'BENCHMARKS.md'}")


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
    parser.add_argument("--floor", action="store_true", help="segment vs forward-only on 512-px photos")
    parser.add_argument("--photos", type=int, default=32, help="--floor: number of photos")
    parser.add_argument("--photo-size", type=int, default=512, help="--floor: photo side")
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    parser.add_argument("--background", action="store_true", help="--floor: a background channel")
    parser.add_argument(
        "--discovered",
        action="store_true",
        help="--floor: the model carries a (random) discovered-foreground classifier, as recipe=cpu's do",
    )
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "partdisco-bench-segment"))
    args = parser.parse_args()
    if args.floor:
        if args.batches == [1, 16]:
            args.batches = [8]  # segment's default batch size
        floor_main(args)
        return
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
