"""The discovered foreground with the exact and the fast (subsampled) guided filter, on held-out photos.

For each development set and a run trained on it (a model that carries discovery's classifier, e.g. from
``benchmarks/bench_photos.py --variants recipe``), every test photo's discovered foreground
(:func:`partdisco.engine.inference.discovered.discovered_mask`) is computed with the guided filter at
subsampling 1 (exact), 2, 4 and 8 and scored against the set's true masks (dataset-level IoU, all pixels
pooled), against the exact filter's masks (mean per-photo IoU) and timed (ms per photo, whole call:
resize, EfficientNet-Lite0, classifier, filter, upsampling). Issue #24: segment uses
``REFINE_SUBSAMPLE``; this is the measurement behind it (docs/EXPERIMENTS.md).

    python benchmarks/bench_fast_filter.py --sets /work/devsets/pets /work/devsets/carparts \\
        --runs /tmp/exp3/pets/recipe /tmp/exp3/carparts/recipe
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import cpu_model  # noqa: E402
from score_segment import load_devset  # noqa: E402

from partdisco.api import open_checkpoint  # noqa: E402
from partdisco.data.io import read_image  # noqa: E402
from partdisco.engine.inference.discovered import discovered_mask, discovery_network  # noqa: E402


def run_set(devset: Path, run: Path, subsamples: list[int]) -> list[tuple[int, float, float, float]]:
    """(subsample, IoU vs the true masks, mean IoU vs the exact filter's masks, ms per photo) rows."""
    model = run / "model.pt" if (run / "model.pt").is_file() else run
    clf = open_checkpoint(model).segmenter.inference_defaults.foreground
    if clf is None:
        raise SystemExit(f"{model}: carries no discovered-foreground classifier (train with discovery)")
    truth = [gt for gt in load_devset(devset, "test") if gt.mask is not None]
    images = [read_image(devset / "images" / gt.name) for gt in truth]
    discovered_mask(clf, images[0])  # loads the network once, outside the timing
    exact: list[np.ndarray] = []
    rows = []
    for sub in [1] + [s for s in subsamples if s != 1]:
        inter = union = 0
        agree, seconds = [], 0.0
        for k, (gt, image) in enumerate(zip(truth, images)):
            start = time.perf_counter()
            mask = discovered_mask(clf, image, subsample=sub) > 0.5
            seconds += time.perf_counter() - start
            inter += int((mask & gt.mask).sum())
            union += int((mask | gt.mask).sum())
            if sub == 1:
                exact.append(mask)
            both = (mask | exact[k]).sum()
            agree.append(float((mask & exact[k]).sum() / both) if both else 1.0)
        rows.append(
            (sub, 100.0 * inter / max(union, 1), 100.0 * float(np.mean(agree)), 1000 * seconds / len(truth))
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", type=Path, required=True, help="development sets")
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="one trained run per set")
    parser.add_argument("--subsamples", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if len(args.sets) != len(args.runs):
        parser.error("give one --runs entry per --sets entry")
    torch.set_num_threads(args.threads)
    discovery_network("cpu")
    load = os.getloadavg()[0]
    print(
        f"{datetime.datetime.now().isoformat(timespec='minutes')}, {cpu_model()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}, load average {load:.1f} at the start\n"
    )
    print("| set | guided filter | fg IoU vs true masks | IoU with the exact filter's masks | ms / photo |")
    print("|---|---|---:|---:|---:|")
    for devset, run in zip(args.sets, args.runs):
        for sub, iou, agree, ms in run_set(devset, run, args.subsamples):
            kind = "exact" if sub == 1 else f"fast, subsample {sub}"
            print(f"| {devset.name} | {kind} | {iou:.1f} | {agree:.2f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
