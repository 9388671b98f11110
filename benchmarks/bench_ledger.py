"""What ``parts.json`` costs a large ``partdisco segment`` run (issue #24): rewrites vs the folder's size.

``parts.json`` (the ledger: one entry per image, the files segment owns) is rewritten whole, under the
folder lock, merged with what is on disk. This script measures one such rewrite
(:func:`partdisco.engine.segment.ledger.merge_and_write`) for ledgers of ``--sizes`` images, with entries
of the real shape (taken from a real segment run on two photos, renamed), and then computes what the
ledger costs a whole run of ``--images`` photos at ``--rate`` images/s (the run's own rate, BENCHMARKS.md)
in chunks of ``--chunk`` images under two policies:

- ``every chunk, twice``: the policy before this change (claim the chunk's paths, then list its images);
- ``when due``: the policy now (``partdisco.engine.segment.run``: all paths claimed once at the start;
  after a chunk the ledger is rewritten only when ``FLUSH_COST_RATIO`` times its last rewrite's duration
  has passed, every chunk while a rewrite costs under ``FLUSH_FREE_S``).

The per-rewrite costs are measured; the run totals are computed from them (interpolated linearly in the
number of entries), not timed: the old policy's total on 200,000 photos would take hours to time.

    python benchmarks/bench_ledger.py
    python benchmarks/bench_ledger.py --images 200000 --rate 20
"""

from __future__ import annotations

import argparse
import datetime
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

from partdisco.engine.segment import SegmentOptions, segment_files
from partdisco.engine.segment.ledger import PARTS_JSON, merge_and_write, read_parts_json
from partdisco.engine.segment.run import FLUSH_COST_RATIO, FLUSH_FREE_S
from partdisco.models import create_segmenter


def template_ledger(work: Path) -> dict:
    """A real parts.json: a random ResNet-18 segmenter on two random photos."""
    photos = work / "photos"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photos / f"im{i}.jpg")
    torch.manual_seed(0)
    model = create_segmenter("resnet18", num_parts=4).eval()
    segment_files(model, [photos], work / "out", SegmentOptions(size=32), progress=False)
    data = read_parts_json(work / "out" / PARTS_JSON)
    assert data is not None
    return data


def ledger_of(template: dict, n: int) -> tuple[dict, list[str]]:
    """The template's first entry renamed ``n`` times: (ledger, names), owned files for every image."""
    name0, entry0 = next(iter(template["images"].items()))
    data = {k: v for k, v in template.items() if k not in ("images", "owned_files")}
    data["images"], owned = {}, set()
    for i in range(n):
        name = f"photos/{i // 1000:04d}/img_{i:06d}"
        entry = dict(entry0, source=f"/data/{name}.jpg")
        entry["files"] = {k: v.replace(name0, name) for k, v in entry0["files"].items()}
        data["images"][name] = entry
        owned.update(entry["files"].values())
    data["owned_files"] = owned
    return data, list(data["images"])


def rewrite_seconds(template: dict, n: int, work: Path, repeats: int) -> float:
    """Best of ``repeats`` rewrites of an ``n``-image ledger (one run's merge with an equal one on disk)."""
    out = work / f"ledger{n}"
    out.mkdir()
    data, names = ledger_of(template, n)
    merge_and_write(out, data, names)  # the file on disk: what the previous rewrite left
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        merge_and_write(out, data, names)
        best = min(best, time.perf_counter() - t0)
    return best


def run_totals(costs: dict[int, float], images: int, rate: float, chunk: int) -> tuple[float, float, int]:
    """(old policy seconds, new policy seconds, new policy rewrites) for one run, from the measured costs."""
    sizes = sorted(costs)

    def cost(n: int) -> float:
        return float(np.interp(n, sizes, [costs[s] for s in sizes]))

    old = sum(2 * cost(done) for done in range(chunk, images + chunk, chunk))
    new, clock, flushed_at, last, rewrites = cost(images), 0.0, 0.0, 0.0, 1  # the claim at the start
    for done in range(chunk, images + chunk, chunk):
        clock += chunk / rate
        if last < FLUSH_FREE_S or clock - flushed_at >= FLUSH_COST_RATIO * last:
            last = cost(min(done, images))
            new, clock, rewrites = new + last, clock + last, rewrites + 1
            flushed_at = clock
    return old, new + cost(images), rewrites + 1  # and the final rewrite


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 50000, 200000])
    parser.add_argument("--images", type=int, default=200000, help="the run whose totals are computed")
    parser.add_argument("--rate", type=float, default=10.0, help="the run's images/s")
    parser.add_argument("--chunk", type=int, default=32, help="images per chunk (4 batches of 8)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template = template_ledger(work / "template")
        costs = {}
        for n in args.sizes:
            costs[n] = rewrite_seconds(template, n, work, args.repeats)
            size_mb = (work / f"ledger{n}" / PARTS_JSON).stat().st_size / 1e6
            print(
                f"parts.json of {n:>7} images: {size_mb:7.1f} MB, one rewrite {costs[n]:7.3f} s", flush=True
            )
    old, new, rewrites = run_totals(costs, args.images, args.rate, args.chunk)
    run = args.images / args.rate
    print(
        f"\n{datetime.date.today()}, {cpu_model()}, {platform.python_version()}, torch {torch.__version__}\n"
        f"a run of {args.images} photos at {args.rate:g} img/s ({run / 3600:.1f} h of segmenting), "
        f"chunks of {args.chunk}:\n"
        f"  every chunk, twice (before): {old / 3600:8.2f} h of parts.json rewrites "
        f"({100 * old / run:.0f} % of the segmenting)\n"
        f"  when due (now):              {new / 3600:8.2f} h ({rewrites} rewrites, {100 * new / run:.1f} %)"
    )


if __name__ == "__main__":
    main()
