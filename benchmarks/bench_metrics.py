"""Benchmark the streaming FG NMI/ARI pipeline: logits -> labels -> contingency update -> compute.

Fake data shaped like the DeepFashion FG evaluation (unsup-parts-method.md §5.3): 256x256 logits with K
parts, a 16-label ground truth (0 = background), pixels with GT != 0 counted. Only the metric work is timed
(argmax, mask, ContingencyTable.update, the final compute); generating the fake data is not.

    python benchmarks/bench_metrics.py                 # 10,000 images, batches of 100
    python benchmarks/bench_metrics.py --images 500    # quick run
    python benchmarks/bench_metrics.py --device cuda --append bench.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

from partdisco.geometry.logits import ALIGN_PIXELS
from partdisco.metrics import ContingencyTable, logits_to_labels


def make_chunk(
    batch: int, parts: int, gt_labels: int, size: int, logit_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky GT (16x16 cells) and logits that prefer part (gt % K), so the scores are not trivial."""
    cells = torch.randint(0, gt_labels, (batch, 1, 16, 16), generator=generator)
    gt = torch.nn.functional.interpolate(cells.float(), size=(size, size), mode="nearest").long()[:, 0]
    preferred = torch.nn.functional.interpolate(
        (cells % parts).float(), size=(logit_size, logit_size), mode="nearest"
    ).long()  # (B, 1, h, w)
    logits = torch.randn(batch, parts, logit_size, logit_size, generator=generator)
    logits.scatter_add_(1, preferred, torch.full(preferred.shape, 1.0))
    return logits, gt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--parts", type=int, default=4)
    parser.add_argument("--gt-labels", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="image (and label) size")
    parser.add_argument("--logit-size", type=int, default=256, help="logit grid; < size adds the upsampling")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--append", default=None, help="also append the JSON record to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    # The machine may be shared: record its load so that numbers from a busy machine can be recognised.
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    generator = torch.Generator().manual_seed(args.seed)
    table = ContingencyTable(args.parts, args.gt_labels, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {"labels": 0.0, "update": 0.0, "compute": 0.0}
    generate_s = 0.0
    done = 0
    while done < args.images:
        n = min(args.batch, args.images - done)
        t0 = time.perf_counter()
        logits, gt = make_chunk(n, args.parts, args.gt_labels, args.size, args.logit_size, generator)
        logits, gt = logits.to(device), gt.to(device)
        sync()
        t1 = time.perf_counter()
        labels = logits_to_labels(logits, (args.size, args.size), align_corners=ALIGN_PIXELS)
        sync()
        t2 = time.perf_counter()
        table.update(labels, gt, valid=gt != 0)  # FG protocol: GT-foreground pixels only
        sync()
        t3 = time.perf_counter()
        generate_s += t1 - t0
        times["labels"] += t2 - t1
        times["update"] += t3 - t2
        done += n
    t0 = time.perf_counter()
    scores = table.compute()
    times["compute"] = time.perf_counter() - t0
    total = sum(times.values())

    record = {
        "benchmark": "bench_metrics",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "images": args.images,
        "batch": args.batch,
        "size": args.size,
        "logit_size": args.logit_size,
        "parts": args.parts,
        "gt_labels": args.gt_labels,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "labels_s": round(times["labels"], 3),
        "update_s": round(times["update"], 3),
        "compute_s": round(times["compute"], 4),
        "total_metric_s": round(total, 3),
        "images_per_s": round(args.images / total, 1),
        "pixels_counted": scores["count"],
        "nmi": round(scores["nmi"], 4),
        "ari": round(scores["ari"], 4),
        "generate_s_untimed": round(generate_s, 3),
        "loadavg_1min_start": load_start,
        "loadavg_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    rows = [
        ("images", f"{args.images} x {args.size}x{args.size}, K={args.parts}, {args.gt_labels} GT labels"),
        ("device", f"{device} | {record['gpu'] or record['cpu']} | {record['torch_threads']} threads"),
        ("torch", record["torch"]),
        ("load average start/end", f"{record['loadavg_1min_start']} / {record['loadavg_1min_end']}"),
        ("argmax (labels) s", f"{times['labels']:.3f}"),
        ("contingency update s", f"{times['update']:.3f}"),
        ("compute s", f"{times['compute']:.4f}"),
        ("total metric s", f"{total:.3f}"),
        ("images/s", f"{record['images_per_s']:.1f}"),
        ("FG pixels counted", f"{scores['count']:,}"),
        ("FG NMI / ARI", f"{scores['nmi']:.2f} / {scores['ari']:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("streaming FG NMI/ARI metric pipeline")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    line = json.dumps(record)
    print(line)
    if args.append:
        with open(args.append, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
