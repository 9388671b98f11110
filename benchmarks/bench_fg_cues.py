"""How well does each training-free foreground cue find the object? (issue #21, docs/EXPERIMENTS.md)

Scores three "what recurs" cues against a development set's masks, on its first ``--n`` training images,
before any training:

- ``cam``: the class footprint that ``data.foreground=discover`` seeds from (the probability mass of the
  data set's 30 most probable ImageNet classes at every stride-32 location,
  :func:`engine.discover.footprint`);
- ``feature recurrence``: class-agnostic co-segmentation: a location is object-like when every other photo
  holds a location with a similar EfficientNet-Lite0 stride-8 feature (the mean, or the lower quartile, of
  the best cosine similarity in ``--others`` other photos), optionally minus the share of its own photo that
  looks the same (large background regions repeat inside a photo);
- ``colour recurrence``: a pixel is object-like when its colour (``--levels`` levels per channel) occurs in
  many photos (a procedural object with a fixed palette would light up).

Per cue: the pooled ROC AUC of the per-image min-max map against the mask, the precision of the seeds
discovery would take (map > 0.6 foreground, < 0.2 background) and the IoU of map > 0.5.

    python benchmarks/bench_fg_cues.py /work/devsets/synth_all --n 200
    python benchmarks/bench_fg_cues.py /work/devsets/pets --n 100 --size 320
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from partdisco.data.io import read_image
from partdisco.engine.discover import EfficientNetDiscovery, footprint, network_input


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean ``labels`` (rank statistic, ties broken by order).

    Example:
        >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
        0.75
    """
    ranks = np.empty(len(scores))
    ranks[scores.argsort(kind="stable")] = np.arange(len(scores))
    pos = int(labels.sum())
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos - 1) / 2) / max(pos * neg, 1))


def report(name: str, maps: list[np.ndarray], masks: list[np.ndarray]) -> dict[str, float]:
    """Print and return AUC, seed precisions and IoU@0.5 of per-image min-max ``maps`` against ``masks``."""
    scores, labels, prec_fg, prec_bg = [], [], [], []
    inter = union = 0
    for m, g in zip(maps, masks, strict=True):
        m = (m - m.min()) / max(float(m.max() - m.min()), 1e-6)
        scores.append(m.ravel())
        labels.append(g.ravel())
        hi, lo = m > 0.6, m < 0.2
        if hi.any():
            prec_fg.append(float(g[hi].mean()))
        if lo.any():
            prec_bg.append(float((~g[lo]).mean()))
        inter += int((g & (m > 0.5)).sum())
        union += int((g | (m > 0.5)).sum())
    row = {
        "auc": auc(np.concatenate(scores), np.concatenate(labels)),
        "fg_seed_precision": float(np.mean(prec_fg)) if prec_fg else float("nan"),
        "bg_seed_precision": float(np.mean(prec_bg)) if prec_bg else float("nan"),
        "iou": 100.0 * inter / max(union, 1),
    }
    print(
        f"| {name} | {row['auc']:.3f} | {row['fg_seed_precision']:.3f} | {row['bg_seed_precision']:.3f} "
        f"| {row['iou']:.1f} |",
        flush=True,
    )
    return row


def mask_at(root: Path, name: str, shape: tuple[int, int]) -> np.ndarray:
    """The set's mask of image ``name``, area-resized to ``shape`` (h, w), > 0.5 = foreground."""
    mask = np.asarray(Image.open(root / "masks" / f"{Path(name).stem}.png").convert("L")) > 0
    small = F.interpolate(torch.from_numpy(mask).float()[None, None], size=shape, mode="area")
    return small[0, 0].numpy() > 0.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="a development set folder (images/, masks/, train.txt)")
    p.add_argument("--n", type=int, default=200, help="training images scored")
    p.add_argument("--size", type=int, default=256, help="shorter side of the network input")
    p.add_argument("--others", type=int, default=60, help="feature recurrence: photos compared with")
    p.add_argument("--levels", type=int, default=8, help="colour recurrence: levels per channel")
    p.add_argument("--classes", type=int, default=30, help="cam: recurring ImageNet classes")
    args = p.parse_args()
    torch.manual_seed(0)
    names = (args.root / "train.txt").read_text().split()[: args.n]
    net = EfficientNetDiscovery("cpu")
    start = time.perf_counter()
    dense, logits, images = [], [], []
    for name in names:
        image = read_image(args.root / "images" / name)
        d, lg = net(network_input(image, args.size))
        dense.append(d[0])
        logits.append(lg)
        images.append(image)
    print(f"{len(names)} images of {args.root} in {time.perf_counter() - start:.0f} s\n")
    print("| cue | AUC | fg-seed precision | bg-seed precision | IoU@0.5 |\n|---|---:|---:|---:|---:|")
    grids = [tuple(d.shape[-2:]) for d in dense]
    masks = [mask_at(args.root, n, g) for n, g in zip(names, grids, strict=True)]

    share = torch.stack([lg.mean(dim=(2, 3)).softmax(1)[0] for lg in logits]).sum(0)
    top = share.argsort(descending=True)[: args.classes]
    cams = [
        F.interpolate(footprint(lg, top)[None, None], size=g, mode="bilinear", align_corners=False)[0, 0]
        for lg, g in zip(logits, grids, strict=True)
    ]
    report(
        f"cam (top {args.classes} classes hold {100 * float(share[top].sum() / share.sum()):.0f} %)",
        [c.numpy() for c in cams],
        masks,
    )

    flat = [d.flatten(1).T.contiguous() for d in dense]
    gen = torch.Generator().manual_seed(0)
    for variant in ("mean", "q25"):
        rec, rel = [], []
        for i, f in enumerate(flat):
            others = [
                j for j in torch.randperm(len(flat), generator=gen)[: args.others + 1].tolist() if j != i
            ]
            best = torch.stack([(f @ flat[j].T).max(dim=1).values for j in others[: args.others]])
            r = best.mean(0) if variant == "mean" else best.quantile(0.25, dim=0)
            own = ((f @ f.T) > 1.5).float().mean(1)  # share of the own photo with a similar feature
            rec.append(r.view(grids[i]).numpy())
            rel.append((r - 0.5 * own).view(grids[i]).numpy())
        report(f"feature recurrence ({variant})", rec, masks)
        report(f"feature recurrence ({variant}) - own share", rel, masks)

    levels = args.levels
    pixel_masks, bins = [], []
    for name, image in zip(names, images, strict=True):
        q = image.astype(np.int64) * levels // 256
        bins.append(q[..., 0] * levels * levels + q[..., 1] * levels + q[..., 2])
        pixel_masks.append(mask_at(args.root, name, image.shape[:2]))
    present = np.stack([np.bincount(b.ravel(), minlength=levels**3) >= 0.002 * b.size for b in bins])
    recurrence = present.mean(0)
    report(
        f"colour recurrence ({levels} levels)", [recurrence[b].astype(np.float32) for b in bins], pixel_masks
    )


if __name__ == "__main__":
    main()
