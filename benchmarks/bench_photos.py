"""Parts on real photos (issue #21): train each variant on each development set, segment, score.

Every number of docs/EXPERIMENTS.md "Parts on real photos" comes from one run of this script. For each
development set (a folder in the layout of docs/DATA.md with ``train.txt`` / ``test.txt`` and masks, parts
or keypoints that training never reads: the variants all train mask-free, ``data.masks=ignore``) and each
variant (a list of ``key=value`` overrides on top of ``recipe=cpu``):

1. ``partdisco train dataset=folder data.root=SET recipe=cpu data.masks=ignore VARIANT... out=OUT/...``
2. ``partdisco segment OUT/SET/VARIANT SET/images/<test images> --out .../segment`` (whole test photos)
3. ``benchmarks/score_segment.py --devset SET --pred .../segment`` (foreground IoU, part / keypoint NMI)

plus, for variants with ``data.foreground=discover``, the IoU of the discovered training masks against the
set's training masks (how good the masks are that the model learns from). Results: ``OUT/results.json``
and a Markdown table on stdout. Jobs run ``--jobs`` at a time (each a fresh process per command).

    python benchmarks/bench_photos.py --sets /work/devsets/pets /work/devsets/carparts --out /tmp/photos
    python benchmarks/bench_photos.py --sets DIR --variants priors lite --steps 400 --device cuda --jobs 3

Synthetic stress sets are made with ``partdisco data synth OUT --split both --test-fraction 0.2 --n 500
--stress all`` (docs/DATA.md); ``--synth NAME=VARIANT`` makes them here first (into ``OUT/sets/NAME``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
THREADS = "2"  # torch threads per job (set from --threads): parallel jobs must not oversubscribe the cores

VARIANTS: dict[str, list[str]] = {
    # recipe=cpu before issue #21: random ResNet-18, texture phi, per-image priors
    "priors": ["model.arch=resnet18", "model.features=texture", "data.foreground=priors"],
    # the same network, foreground from discovery
    "discover": ["model.arch=resnet18", "model.features=texture", "data.foreground=discover"],
    # pretrained EfficientNet-Lite0 trunk and phi, foreground from discovery
    "lite": ["model.arch=efficientnet_lite0", "model.features=efficientnet", "data.foreground=discover"],
    # pretrained trunk, texture phi, foreground from discovery
    "lite_tex": ["model.arch=efficientnet_lite0", "model.features=texture", "data.foreground=discover"],
    # recipe=cpu as shipped (whatever it is now)
    "recipe": [],
}


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output appended to ``log``; return the seconds it took (raises on failure)."""
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": THREADS},
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}); see {log}")
    return time.perf_counter() - start


def split_names(root: Path, split: str) -> list[str]:
    return [line.strip() for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()]


def discovered_iou(root: Path, run_dir: Path) -> float | None:
    """Dataset-level IoU of the discovered training masks against the set's training masks (x100)."""
    found = run_dir / "foreground" / "masks"
    if not found.is_dir() or not (root / "masks").is_dir():
        return None
    inter = union = 0
    for name in split_names(root, "train"):
        stem = Path(name).stem
        gt_path, pred_path = root / "masks" / f"{stem}.png", found / f"{stem}.png"
        if not gt_path.is_file() or not pred_path.is_file():
            continue
        gt = np.asarray(Image.open(gt_path).convert("L")) > 0
        pred = np.asarray(Image.open(pred_path).convert("L")) > 0
        inter += int((gt & pred).sum())
        union += int((gt | pred).sum())
    return 100.0 * inter / max(union, 1)


def job(root: Path, variant: str, args: argparse.Namespace) -> dict:
    out = args.out / root.name / variant
    out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out / f"{root.name}.{variant}.log"
    py = [sys.executable, "-m", "partdisco"]
    result: dict = {"set": root.name, "variant": variant, "overrides": VARIANTS[variant]}
    if not (out / "model.pt").is_file():
        train = [*py, "train", "dataset=folder", f"data.root={root}", "recipe=cpu", "data.masks=ignore"]
        train += [
            *VARIANTS[variant],
            f"device={args.device}",
            f"data.num_workers={args.workers}",
            f"out={out}",
        ]
        if args.steps:
            train.append(f"train.steps={args.steps}")
        result["train_s"] = round(run(train + args.extra, log), 1)
    test_images = [str(root / "images" / n) for n in split_names(root, "test")]
    seg = out / "segment"
    result["segment_s"] = round(
        run(
            [*py, "segment", str(out), *test_images, "--out", str(seg), "--device", args.device, "--quiet"],
            log,
        ),
        1,
    )
    scores = out / "scores.json"
    run(
        [
            sys.executable,
            str(HERE / "score_segment.py"),
            "--devset",
            str(root),
            "--pred",
            str(seg),
            "--json",
            str(scores),
        ],
        log,
    )
    result["scores"] = json.loads(scores.read_text())
    result["discovered_train_iou"] = discovered_iou(root, out)
    print(f"done {root.name} {variant}", flush=True)
    return result


def flat(scores: dict) -> dict[str, float]:
    """The prediction's headline numbers out of score_segment's JSON."""
    pred = scores.get("prediction", scores)
    keep = {}
    for key in ("fg_iou", "fg_iou_mean", "parts_nmi", "parts_ari", "fg_nmi", "kp_nmi", "kp_ari"):
        if key in pred and pred[key] is not None:
            keep[key] = pred[key]
    return keep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", type=Path, nargs="*", default=[], help="development set folders")
    p.add_argument(
        "--synth", nargs="*", default=[], help="NAME=STRESS synthetic sets to make first (e.g. synth_all=all)"
    )
    p.add_argument("--variants", nargs="+", default=["priors", "lite"], choices=sorted(VARIANTS))
    p.add_argument("--steps", type=int, default=0, help="train.steps (0: the recipe's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="data.num_workers")
    p.add_argument("--jobs", type=int, default=1, help="jobs at a time")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("extra", nargs="*", help="more key=value overrides for every training")
    p.add_argument("--threads", type=int, default=2, help="torch threads per job")
    args = p.parse_args()
    global THREADS
    THREADS = str(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    sets = list(args.sets)
    for item in args.synth:
        name, stress = item.split("=")
        root = args.out / "sets" / name
        if not root.is_dir():
            cmd = [sys.executable, "-m", "partdisco", "data", "synth", str(root), "--split", "both"]
            run(cmd + ["--test-fraction", "0.2", "--n", "500", "--stress", stress], args.out / "synth.log")
        sets.append(root)
    todo = [(root, v) for root in sets for v in args.variants]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(job, root, v, args) for root, v in todo]
        results = []
        for f in as_completed(futures):
            try:
                results.append(f.result())
            except Exception as err:  # one failed job must not lose the others' numbers
                print(f"FAILED: {err}", flush=True)
            (args.out / "results.json").write_text(json.dumps(results, indent=1))  # kept if stopped
    print(f"\n{len(results)} jobs in {time.perf_counter() - start:.0f} s, device {args.device}\n")
    head = ["set", "variant", "train s", "fg IoU", "fg IoU (mean/img)", "part NMI", "fg NMI", "kp NMI"]
    print("| " + " | ".join([*head, "discovered-mask IoU (train)"]) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = flat(r["scores"])

        def f(k: str, s: dict = s) -> str:
            return f"{s[k]:.1f}" if k in s else "-"

        d = r.get("discovered_train_iou")
        print(
            f"| {r['set']} | {r['variant']} | {r.get('train_s', '-')} | {f('fg_iou')} | {f('fg_iou_mean')} | "
            f"{f('parts_nmi')} | {f('fg_nmi')} | {f('kp_nmi')} | {'-' if d is None else f'{d:.1f}'} |"
        )


if __name__ == "__main__":
    main()
