"""Score ``partdisco segment`` output against a development set, beside baselines that learn nothing.

The development set is a folder in the layout of docs/DATA.md ("Your own folder"), e.g. one written by
``benchmarks/devsets.py`` or ``partdisco data synth``: ``images/``, ``masks/`` (foreground > 0), optional
``parts/`` (0 = unlabelled, 1..P) and ``keypoints.json``, and ``train.txt`` / ``test.txt``. The prediction is
what ``partdisco segment`` writes (docs/SEGMENT.md): ``labels/NAME.png``, 0 = background, 1..K = parts, at
the input image's size (a label map of another size is resized to the mask's, nearest, and counted).

Scores, over the images of ``--split`` (default ``test``):

- ``fg_iou``: predicted foreground (label > 0) against the masks, as one dataset-level IoU (all pixels
  pooled) and as the mean of per-image IoUs (an image where both are empty counts 1).
- ``parts_nmi`` / ``parts_ari`` (with ``parts/``): predicted label against the part label on the pixels
  that have a part label (> 0); the predicted background is one more cluster, so a part lost to the
  background costs. ``fg_nmi`` / ``fg_ari``: the same on every foreground pixel of the masks (a foreground
  pixel without a part label is class 0). ``full_nmi`` / ``full_ari``: every pixel, background = class 0.
- ``kp_nmi`` / ``kp_ari`` (with ``keypoints.json``): the label under each visible keypoint against the
  keypoint's index (the CUB keypoint-label protocol, ``partdisco.metrics.labels_at_keypoints``).

NMI and ARI are x100 over the pooled contingency table of the split (``partdisco.metrics``).

Baselines (always, no prediction needed):

- ``all_fg``: every pixel foreground.
- ``centre_box`` / ``centre_ellipse``: foreground = the centred box covering fraction s of each side (or
  the ellipse inscribed in it), with s in 0.3, 0.4, ..., 0.9 chosen on the *train* split by dataset IoU.
- ``grid2x2`` / ``grid3x3``: a fixed grid over the whole image as part labels (scored on the same pixels
  and keypoints as the prediction; the foreground IoU of a grid is ``all_fg``'s).

    python benchmarks/score_segment.py --devset /work/devsets/carparts               # baselines only
    python benchmarks/score_segment.py --devset /work/devsets/carparts --pred out/parts --json scores.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from partdisco.data.folder import list_images, read_keypoints_json, split_files
from partdisco.data.io import read_label_map, read_mask
from partdisco.metrics import ari_from_table, labels_at_keypoints, nmi_from_table

SCALES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class GroundTruth:
    """One image's annotations: ``mask`` bool (H, W), ``parts`` int64 (H, W), ``keypoints`` (N, 3), or None.

    ``shape`` is the image's (H, W).
    """

    name: str
    shape: tuple[int, int]
    mask: np.ndarray | None
    parts: np.ndarray | None
    keypoints: np.ndarray | None


@dataclass
class Tally:
    """Pooled counts of one labelling: IoU sums and contingency tables (rows = prediction, cols = truth)."""

    inter: int = 0
    union: int = 0
    per_image: list[float] = field(default_factory=list)
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    resized: int = 0

    def add_table(self, key: str, pred: np.ndarray, truth: np.ndarray) -> None:
        pred = pred.astype(np.int64).ravel()
        truth = truth.astype(np.int64).ravel()
        if pred.size == 0:
            self.tables.setdefault(key, np.zeros((1, 1), dtype=np.int64))
            return
        rows, cols = int(pred.max()) + 1, int(truth.max()) + 1
        counts = np.bincount(pred * cols + truth, minlength=rows * cols).reshape(rows, cols)
        old = self.tables.get(key, np.zeros((1, 1), dtype=np.int64))
        shape = (max(old.shape[0], rows), max(old.shape[1], cols))
        merged = np.zeros(shape, dtype=np.int64)
        merged[: old.shape[0], : old.shape[1]] += old
        merged[:rows, :cols] += counts
        self.tables[key] = merged

    def add(self, labels: np.ndarray, gt: GroundTruth, with_fg: bool = True) -> None:
        """Count one image's label map (int (H, W), 0 = background) against its annotations."""
        if with_fg and gt.mask is not None:
            pred_fg = labels > 0
            inter = int((pred_fg & gt.mask).sum())
            union = int((pred_fg | gt.mask).sum())
            self.inter += inter
            self.union += union
            self.per_image.append(inter / union if union else 1.0)
        if gt.parts is not None:
            labelled = gt.parts > 0
            self.add_table("parts", labels[labelled], gt.parts[labelled])
            mask = gt.mask if gt.mask is not None else labelled
            self.add_table("fg", labels[mask], gt.parts[mask])
            self.add_table("full", labels, np.where(mask, gt.parts, 0))
        if gt.keypoints is not None:
            pred, index = labels_at_keypoints(
                torch.from_numpy(labels.astype(np.int64))[None], torch.from_numpy(gt.keypoints).float()[None]
            )
            self.add_table("kp", pred.numpy(), index.numpy())

    def scores(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.per_image:
            out["fg_iou"] = 100.0 * self.inter / max(self.union, 1)
            out["fg_iou_mean"] = 100.0 * float(np.mean(self.per_image))
        for key, table in self.tables.items():
            out[f"{key}_nmi"] = nmi_from_table(table)
            out[f"{key}_ari"] = ari_from_table(table)
        return out


def load_devset(root: Path, split: str) -> list[GroundTruth]:
    """The annotations of the images of ``split`` (clear errors naming a missing file)."""
    names = split_files(root, split, list_images(root))
    with_masks = (root / "masks").is_dir()
    if not with_masks and not (root / "parts").is_dir() and not (root / "keypoints.json").is_file():
        raise FileNotFoundError(f"{root}: no masks/, parts/ or keypoints.json: nothing to score against")
    keypoints, num_keypoints = None, 0
    if (root / "keypoints.json").is_file():
        kp_names, keypoints, _ = read_keypoints_json(root / "keypoints.json")
        num_keypoints = len(kp_names)
    with_parts = (root / "parts").is_dir()
    out = []
    for name in names:
        stem = Path(name).stem
        mask = read_mask(root / "masks" / f"{stem}.png") > 0 if with_masks else None
        parts = read_label_map(root / "parts" / f"{stem}.png") if with_parts else None
        if mask is not None:
            shape = mask.shape
        elif parts is not None:
            shape = parts.shape
        else:
            with Image.open(root / "images" / name) as image:
                shape = (image.height, image.width)
        if parts is not None and parts.shape != shape:
            raise ValueError(
                f"{root / 'parts' / (stem + '.png')}: size {parts.shape} differs from its mask's"
            )
        kps = None
        if keypoints is not None:
            kps = keypoints.get(name, np.zeros((num_keypoints, 3)))  # no entry: nothing visible
        out.append(GroundTruth(name, shape, mask, parts, kps))
    if not out:
        raise ValueError(f"{root}: split {split!r} has no images")
    return out


def prediction_path(pred: Path, name: str) -> Path:
    """``labels/STEM.png`` of an image (``labels/NAME.png`` when segment kept the suffix)."""
    if not (pred / "labels").is_dir() and (pred / "parts" / "labels").is_dir():
        pred = pred / "parts"
    for candidate in (pred / "labels" / f"{Path(name).stem}.png", pred / "labels" / f"{name}.png"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{pred / 'labels'}: no label map for {name} (expected {Path(name).stem}.png)")


def read_prediction(path: Path, shape: tuple[int, int], tally: Tally) -> np.ndarray:
    labels = read_label_map(path)
    if labels.shape != shape:
        tally.resized += 1
        labels = np.asarray(
            Image.fromarray(labels.astype(np.int32)).resize(shape[::-1], Image.Resampling.NEAREST)
        )
    return labels.astype(np.int64)


def centre_region(shape: tuple[int, int], scale: float, ellipse: bool) -> np.ndarray:
    """bool (H, W): the centred box covering ``scale`` of each side, or the ellipse inscribed in it."""
    H, W = shape
    y = (np.arange(H) + 0.5) / H - 0.5
    x = (np.arange(W) + 0.5) / W - 0.5
    ny, nx = np.abs(y)[:, None] / (scale / 2), np.abs(x)[None, :] / (scale / 2)
    if ellipse:
        return ny**2 + nx**2 <= 1.0
    return (ny <= 1.0) & (nx <= 1.0)


def grid_labels(shape: tuple[int, int], n: int) -> np.ndarray:
    """int64 (H, W): an n x n grid over the image, labels 1..n^2 row by row."""
    H, W = shape
    row = np.minimum((np.arange(H) * n) // H, n - 1)
    col = np.minimum((np.arange(W) * n) // W, n - 1)
    return (row[:, None] * n + col[None, :] + 1).astype(np.int64)


def fit_scale(train: list[GroundTruth], ellipse: bool) -> float:
    """The centred-region scale with the best dataset IoU on the train split."""
    best, best_iou = SCALES[0], -1.0
    for scale in SCALES:
        inter = union = 0
        for gt in train:
            assert gt.mask is not None
            region = centre_region(gt.shape, scale, ellipse)
            inter += int((region & gt.mask).sum())
            union += int((region | gt.mask).sum())
        if inter / max(union, 1) > best_iou:
            best, best_iou = scale, inter / max(union, 1)
    return best


def score(devset: Path, pred: Path | None = None, split: str = "test") -> dict:
    """Scores of a prediction folder (when given) and of the baselines on ``split`` of ``devset``."""
    items = load_devset(devset, split)
    baselines: dict[str, Callable[[tuple[int, int]], np.ndarray]] = {
        "all_fg": lambda shape: np.ones(shape, dtype=np.int64),
        "grid2x2": lambda shape: grid_labels(shape, 2),
        "grid3x3": lambda shape: grid_labels(shape, 3),
    }
    with_masks = items[0].mask is not None
    scales = {}
    if with_masks:  # the centred regions only score a foreground
        try:  # train.txt, or the images test.txt does not list
            train_items = load_devset(devset, "train")
        except ValueError:  # no train image: fit on the scored split itself
            train_items = items
        for kind, ellipse in (("centre_box", False), ("centre_ellipse", True)):
            scales[kind] = fit_scale(train_items, ellipse)
            baselines[kind] = lambda shape, s=scales[kind], e=ellipse: centre_region(shape, s, e).astype(
                np.int64
            )
    tallies = {name: Tally() for name in baselines}
    prediction = Tally() if pred is not None else None
    for gt in items:
        for name, make in baselines.items():
            # a grid's foreground is everything: its IoU is all_fg's, so only its part scores are reported
            tallies[name].add(make(gt.shape), gt, with_fg=not name.startswith("grid"))
        if prediction is not None and pred is not None:
            prediction.add(read_prediction(prediction_path(pred, gt.name), gt.shape, prediction), gt)
    result: dict = {
        "devset": str(devset),
        "split": split,
        "images": len(items),
        "pixels": int(sum(gt.shape[0] * gt.shape[1] for gt in items)),
        "fg_fraction": (
            100.0 * sum(int(gt.mask.sum()) for gt in items) / sum(gt.mask.size for gt in items)
            if with_masks
            else None
        ),
        "baselines": {name: tally.scores() for name, tally in tallies.items()},
        "centre_scale": scales,
    }
    if prediction is not None:
        result["prediction"] = {"folder": str(pred), "resized": prediction.resized, **prediction.scores()}
    return result


def format_table(result: dict) -> str:
    rows = dict(result["baselines"])
    if "prediction" in result:
        rows = {"prediction": {k: v for k, v in result["prediction"].items() if isinstance(v, float)}, **rows}
    keys = [
        k
        for k in (
            "fg_iou",
            "fg_iou_mean",
            "parts_nmi",
            "parts_ari",
            "fg_nmi",
            "fg_ari",
            "full_nmi",
            "full_ari",
            "kp_nmi",
            "kp_ari",
        )
        if any(k in r for r in rows.values())
    ]
    fg = result["fg_fraction"]
    what = (
        f"foreground {fg:.1f} % of the pixels; centre scales {result['centre_scale']}" if fg else "no masks"
    )
    lines = [
        f"{result['devset']} split {result['split']}: {result['images']} images, {what}",
        "| row | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, scores in rows.items():
        if not any(k in scores for k in keys):
            continue
        cells = [f"{scores[k]:.2f}" if k in scores else "" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devset", type=Path, required=True, help="development set folder (folder layout)")
    parser.add_argument(
        "--pred", type=Path, default=None, help="partdisco segment output folder (has labels/)"
    )
    parser.add_argument("--split", default="test", help="split to score (default test)")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    try:
        result = score(args.devset, args.pred, args.split)
    except (FileNotFoundError, ValueError) as err:
        print(f"score_segment: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
