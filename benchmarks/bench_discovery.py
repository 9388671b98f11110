"""Foreground discovery's seeds and classifier, measured against a development set's masks (issue #21).

Training-free: no segmenter is trained. For ``--n`` evenly spaced *training* photos the installed ImageNet
EfficientNet-Lite0 gives dense stride-8 features and class logits (as ``partdisco.engine.discover`` does);
each variant picks seed locations, fits the linear classifier and is scored twice: on those training photos
(the masks discovery would write) and on the *test* photos (the classifier applied to photos it never saw,
as ``partdisco segment`` applies the classifier a model carries). IoU is pooled over the photos, at the
network input's resolution (shorter side ``--size``), against the masks (which discovery never reads).

Variants:

- ``footprint``: seeds from the class footprint (min-max per image, < 0.2 background, > 0.6 foreground),
  no self-training (discovery before this benchmark, ``data.discover_rounds=0``).
- ``rounds2``: the same plus two self-training rounds (the classifier's own locations above 0.7 / below
  0.3 as the next seeds): what ``data.foreground=discover`` does now.
- ``absolute``: seeds from the footprint's absolute probability mass (< 0.05 / > 0.5), two rounds.
- ``two_scales``: ``absolute`` with the footprint averaged over the input and the input at twice the size.
- ``rounds4`` ... ``rounds32``: ``rounds2`` with 4, 6, 8, 12, 16, 24, 32 self-training rounds.
- ``unbalanced2``, ``unbalanced8``, ``unbalanced16``: the self-training rounds fit without class
  balancing (every seed weighs the same, so the seeds' own foreground share is the prior).
- ``half8``, ``half16``: the rounds' class weights are the balanced ones' square roots.
- ``seedsLO-HI_bB_rN`` (any numbers, e.g. ``seeds0.1-0.4_b0.5_r16``): footprint seeds below ``LO`` / above
  ``HI``, ``N`` self-training rounds with ``data.discover_balance=B``.
- ``otsuM_bB_rN`` (e.g. ``otsu0.2_b0.5_r16``): the seeds' threshold chosen per photo (Otsu's threshold of
  its footprint, seeds below / above it by the margin ``M``), then as above.
- ``oracle``: the seeds are the masks themselves (every location): what the features allow a linear
  classifier at best, not a method.

    python benchmarks/bench_discovery.py /work/devsets/pets --n 200
    python benchmarks/bench_discovery.py /work/devsets/carparts --n 200
    python benchmarks/bench_discovery.py /work/devsets/pets_closeup --n 200 \
        --variants half16 seeds0.1-0.4_b0.5_r16
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from partdisco.data.io import read_image, read_mask
from partdisco.engine.discover import SEEDS_PER_IMAGE, fit_linear, footprint
from partdisco.engine.inference.discovered import (
    EfficientNetDiscovery,
    linear_probability,
    network_input,
)
from partdisco.engine.inference.refine import guided_filter, refine_radius

Labeler = Callable[[dict], torch.Tensor]  # one photo's record -> (h8, w8) labels: 1, 0 or nan (no seed)


def _records(
    root: Path, split: str, n: int, size: int, net: EfficientNetDiscovery, scales: bool
) -> list[dict]:
    """Features, logits (at 1x and, with ``scales``, 2x) and the mask at the input size of ``n`` photos."""
    names = (root / f"{split}.txt").read_text().split()
    picked = np.unique(np.linspace(0, len(names) - 1, min(n, len(names))).round().astype(int))
    out = []
    for i in picked:
        image = read_image(root / "images" / names[i])
        inp = network_input(image, size)
        dense, logits = net(inp)
        rec = {"inp": inp, "dense": dense[0].half(), "logits": logits}
        if scales:
            rec["logits2x"] = net(F.interpolate(inp, scale_factor=2, mode="bilinear", align_corners=False))[1]
        mask = read_mask(root / "masks" / f"{Path(names[i]).stem}.png")
        gt = F.interpolate(
            torch.from_numpy(np.asarray(mask)).float()[None, None], size=inp.shape[-2:], mode="area"
        )
        rec["gt"] = gt[0, 0] > 0.5
        out.append(rec)
    return out


def _grid(values: torch.Tensor, rec: dict) -> torch.Tensor:
    return F.interpolate(
        values[None, None], size=rec["dense"].shape[-2:], mode="bilinear", align_corners=False
    )[0, 0]


def _labels(score: torch.Tensor, low: float, high: float) -> torch.Tensor:
    lab = torch.full_like(score, float("nan"))
    lab[score > high] = 1.0
    lab[score < low] = 0.0
    return lab


def _otsu(values: torch.Tensor, bins: int = 64) -> float:
    """The threshold that maximises the between-class variance of ``values`` (in [0, 1])."""
    hist = torch.histc(values.flatten().float(), bins=bins, min=0.0, max=1.0).double()
    p = hist / hist.sum()
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    w0, m0 = p.cumsum(0), (p * centres).cumsum(0)
    between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    return float(centres[between[:-1].argmax()] + 0.5 / bins)


def _fit(
    records: list[dict], labeler: Labeler, per_image: int = SEEDS_PER_IMAGE, balance: float = 1.0
) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for rec in records:
        lab = labeler(rec).flatten()
        where = (~torch.isnan(lab)).nonzero()[:, 0]
        where = where[torch.randperm(len(where), generator=gen)[:per_image]]
        xs.append(rec["dense"].float().flatten(1)[:, where].T)
        ys.append(lab[where])
    return fit_linear(torch.cat(xs), torch.cat(ys), balance=balance)


def _self_train(
    records: list[dict], linear: tuple[torch.Tensor, ...], rounds: int, balance: float = 1.0
) -> tuple[torch.Tensor, ...]:
    for _ in range(rounds):

        def own(rec: dict, current: tuple[torch.Tensor, ...] = linear) -> torch.Tensor:
            return _labels(linear_probability(rec["dense"].float(), current), 0.3, 0.7)

        linear = _fit(records, own, balance=balance)
    return linear


def _iou(records: list[dict], linear: tuple[torch.Tensor, ...], otsu: bool = False) -> tuple[float, float]:
    """(pooled IoU, the masks' share of the pixels), both in %; ``otsu``: each photo's threshold is Otsu's."""
    inter = union = fg = pixels = 0
    for rec in records:
        prob = linear_probability(rec["dense"].float(), linear)
        inp = rec["inp"]
        prob = F.interpolate(prob[None, None], size=inp.shape[-2:], mode="bilinear", align_corners=False)
        prob = guided_filter(inp, prob, refine_radius(min(inp.shape[-2:]), 0.06), 1e-3)[0, 0]
        mask, gt = prob > (_otsu(prob.clamp(0, 1)) if otsu else 0.5), rec["gt"]
        inter += int((mask & gt).sum())
        union += int((mask | gt).sum())
        fg, pixels = fg + int(mask.sum()), pixels + mask.numel()
    return 100.0 * inter / max(union, 1), 100.0 * fg / max(pixels, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("devset", type=Path)
    parser.add_argument("--n", type=int, default=200, help="training photos (evenly spaced)")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--variants", nargs="+", default=None, help="only these variants (default: all)")
    parser.add_argument(
        "--otsu", action="store_true", help="also score test masks at each photo's Otsu threshold"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    net = EfficientNetDiscovery("cpu")
    train = _records(args.devset, "train", args.n, args.size, net, scales=True)
    test = _records(args.devset, "test", 10**9, args.size, net, scales=False)
    total = sum(r["logits"].mean(dim=(2, 3)).softmax(1)[0] for r in train)
    classes = total.argsort(descending=True)[: args.classes]

    def mass(rec: dict, keys: tuple[str, ...]) -> torch.Tensor:
        return sum(_grid(rec[k][0].softmax(0)[classes].sum(0), rec) for k in keys) / len(keys)

    variants: dict[str, tuple[Labeler, int]] = {
        "footprint": (lambda r: _labels(_grid(footprint(r["logits"], classes), r), 0.2, 0.6), 0),
        "rounds2": (lambda r: _labels(_grid(footprint(r["logits"], classes), r), 0.2, 0.6), 2),
        "absolute": (lambda r: _labels(mass(r, ("logits",)), 0.05, 0.5), 2),
        "two_scales": (lambda r: _labels(mass(r, ("logits", "logits2x")), 0.05, 0.5), 2),
        **{
            f"rounds{k}": (lambda r: _labels(_grid(footprint(r["logits"], classes), r), 0.2, 0.6), k)
            for k in (4, 6, 8, 12, 16, 24, 32)
        },
        **{
            f"unbalanced{k}": (lambda r: _labels(_grid(footprint(r["logits"], classes), r), 0.2, 0.6), k)
            for k in (2, 8, 16)
        },
        **{
            f"half{k}": (lambda r: _labels(_grid(footprint(r["logits"], classes), r), 0.2, 0.6), k)
            for k in (8, 16)
        },
        "oracle": (lambda r: _grid(r["gt"].float(), r).gt(0.5).float(), 0),
    }
    seconds = time.perf_counter() - start
    print(f"{args.devset.name}: {len(train)} train / {len(test)} test photos, features {seconds:.0f} s")
    share = 100.0 * sum(int(r["gt"].sum()) for r in test) / sum(r["gt"].numel() for r in test)
    otsu_head = f" {'Otsu IoU':>9} {'Otsu fg %':>9}" if args.otsu else ""
    head = f"{'variant':<12} {'train IoU':>9} {'test IoU':>9} {'test fg %':>9}{otsu_head}"
    print(f"{head} (masks: {share:.1f} %)")
    balances = {name: 0.0 if name.startswith("unbalanced") else 0.5 if name.startswith("half") else 1.0
                for name in variants}  # fmt: skip
    for name in args.variants or []:  # e.g. "seeds0.1-0.4_b0.5_r16": footprint seeds < 0.1 / > 0.4, 16 rounds
        if m := re.fullmatch(r"seeds([\d.]+)-([\d.]+)_b([\d.]+)_r(\d+)", name):
            low, high, balances[name] = float(m[1]), float(m[2]), float(m[3])
            variants[name] = (
                lambda r, lo=low, hi=high: _labels(_grid(footprint(r["logits"], classes), r), lo, hi),
                int(m[4]),
            )
        if m := re.fullmatch(r"otsu([\d.]+)_b([\d.]+)_r(\d+)", name):  # seeds: Otsu's threshold -/+ margin
            margin, balances[name] = float(m[1]), float(m[2])

            def otsu_labels(r: dict, margin: float = margin) -> torch.Tensor:
                grid = _grid(footprint(r["logits"], classes), r)
                t = _otsu(grid)
                return _labels(grid, t - margin, t + margin)

            variants[name] = (otsu_labels, int(m[3]))
    for name, (labeler, rounds) in variants.items():
        if args.variants and name not in args.variants:
            continue
        per_image = 10**9 if name == "oracle" else SEEDS_PER_IMAGE
        balance = balances[name]
        linear = _self_train(train, _fit(train, labeler, per_image), rounds, balance)
        (train_iou, _), (test_iou, test_fg) = _iou(train, linear), _iou(test, linear)
        line = f"{name:<12} {train_iou:9.1f} {test_iou:9.1f} {test_fg:9.1f}"
        if args.otsu:
            line += " {:9.1f} {:9.1f}".format(*_iou(test, linear, otsu=True))
        print(line, flush=True)


if __name__ == "__main__":
    main()
