"""Can a label-free statistic pick discovery's self-training balance per folder? (issue #21, negative result)

Discovery's self-training rounds weigh the classes ``balanced ** data.discover_balance``: balanced (1) suits
large objects, unbalanced (0) small ones (docs/EXPERIMENTS.md). For each balance in 0, 0.5, 1 (16 rounds,
as ``benchmarks/bench_discovery.py``'s ``unbalanced16`` / ``half16`` / ``rounds16``) this prints the test IoU
against the masks (which nothing here may use to choose) next to statistics computed without any mask, on
the ``--n`` training photos, at stride 8:

- ``foot-gap``: mean class footprint inside the predicted foreground minus outside it;
- ``fg-consistency`` / ``bg``: mean cosine similarity between the photos' foreground (background)
  descriptors (mean unit feature inside / outside the prediction): "the object is what recurs";
- ``diff``: the two consistencies' difference.

A useful statistic would rank the balances as the test IoU does on every set.

    python benchmarks/bench_balance_criteria.py /work/devsets/pets /work/devsets/carparts \\
        /work/devsets/pets_on_cars
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_discovery as bd  # noqa: E402

from partdisco.engine.discover import footprint  # noqa: E402
from partdisco.engine.inference.discovered import EfficientNetDiscovery, linear_probability  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("devsets", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=200, help="training photos (evenly spaced)")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = EfficientNetDiscovery("cpu")
    print("| set | balance | test IoU | test fg % | foot-gap | fg-consistency | bg | diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for root in args.devsets:
        train = bd._records(root, "train", args.n, 320, net, scales=False)
        test = bd._records(root, "test", 10**9, 320, net, scales=False)
        total = sum(r["logits"].mean(dim=(2, 3)).softmax(1)[0] for r in train)
        classes = total.argsort(descending=True)[:30]

        def seeds(rec: dict, classes: torch.Tensor = classes) -> torch.Tensor:
            return bd._labels(bd._grid(footprint(rec["logits"], classes), rec), 0.2, 0.6)

        first = bd._fit(train, seeds)
        for balance in (0.0, 0.5, 1.0):
            linear = bd._self_train(train, first, args.rounds, balance)
            test_iou, share = bd._iou(test, linear)
            gaps, fg_desc, bg_desc = [], [], []
            for rec in train:
                mask = linear_probability(rec["dense"].float(), linear) > 0.5  # (h8, w8)
                foot = bd._grid(footprint(rec["logits"], classes), rec)
                unit = F.normalize(rec["dense"].float(), dim=0)  # (D, h8, w8)
                if mask.any() and (~mask).any():
                    gaps.append(float(foot[mask].mean() - foot[~mask].mean()))
                if mask.any():
                    fg_desc.append(F.normalize(unit[:, mask].mean(1), dim=0))
                if (~mask).any():
                    bg_desc.append(F.normalize(unit[:, ~mask].mean(1), dim=0))
            fg_c = float((torch.stack(fg_desc) @ torch.stack(fg_desc).T).mean())
            bg_c = float((torch.stack(bg_desc) @ torch.stack(bg_desc).T).mean())
            print(
                f"| {root.name} | {balance:g} | {test_iou:.1f} | {share:.1f} | {np.mean(gaps):.3f} | "
                f"{fg_c:.3f} | {bg_c:.3f} | {fg_c - bg_c:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
