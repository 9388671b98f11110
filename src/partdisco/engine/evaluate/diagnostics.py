"""Unsupervised diagnostics: what a run's parts look like when the data set has no labels to score.

For each discovered part k over the held-out images (foreground only, from the masks when there are
any): its share of all foreground pixels, the number of images it appears in (at least
``PRESENT_SHARE`` of that image's foreground), and how consistent it is across those images: the spread
(standard deviation across images, mean over L, a, b) of its mean CIE-Lab colour, and the spread of its
centroid position in image-normalised coordinates (x100, i.e. % of the image side). A part that keeps one
colour and one place relative to the image is a consistent part; a part that covers everything or
appears in few images is suspect. These are descriptions, not accuracy: look at ``parts.png`` too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from partdisco.engine.evaluate.labels import iterate_batches
from partdisco.engine.inference.network import predict_labels
from partdisco.imaging.color import rgb_to_lab
from partdisco.models import Segmenter

PRESENT_SHARE = 0.01  # a part "appears" in an image when it covers >= 1 % of that image's foreground
LABEL_KEYS = ("kp_", "px_", "miou")  # metric-name prefixes that need ground-truth labels


def has_label_metrics(metrics: dict[str, Any]) -> bool:
    """Whether an evaluation produced any score against ground truth (keypoints, part maps)."""
    return any(str(k).startswith(LABEL_KEYS) for k in metrics)


@torch.no_grad()
def part_diagnostics(
    model: Segmenter, dataset: Dataset, device: torch.device, batch_size: int = 8, max_images: int = 200
) -> dict[str, Any]:
    """Per-part foreground share, presence and colour / position consistency (module docstring).

    Args:
        model: the segmenter (switched to eval mode).
        dataset: samples with ``image`` (3, H, W) in [0, 1] and ``fg_mask`` (1, H, W).
        device: where to run the model.
        batch_size: images per forward pass.
        max_images: at most this many images.

    Returns:
        ``{"images": n, "parts": [{"part", "fg_share", "images", "color_spread_lab", "position_spread"}]}``;
        ``fg_share`` in % of all foreground pixels, spreads None for a part present in fewer than 2 images.
    """
    model.eval()
    K = model.num_parts
    pixels = torch.zeros(K, dtype=torch.float64)
    present: list[list[int]] = [[] for _ in range(K)]
    colours: list[list[torch.Tensor]] = [[] for _ in range(K)]
    positions: list[list[torch.Tensor]] = [[] for _ in range(K)]
    n = 0
    for batch in iterate_batches(dataset, batch_size, max_images):
        image = batch.image.to(device)  # (B, 3, H, W)
        fg = batch.fg_mask.to(device)  # (B, 1, H, W)
        labels = predict_labels(model, image, fg)  # (B, H, W), 0 = background
        lab = rgb_to_lab(image)  # (B, 3, H, W)
        B, H, W = labels.shape
        ys = (torch.arange(H, device=device, dtype=torch.float32) + 0.5) / H
        xs = (torch.arange(W, device=device, dtype=torch.float32) + 0.5) / W
        for b in range(B):
            fg_count = float((labels[b] > 0).sum())
            for k in range(K):
                sel = labels[b] == k + 1  # (H, W)
                count = float(sel.sum())
                pixels[k] += count
                if fg_count == 0 or count < PRESENT_SHARE * fg_count:
                    continue
                present[k].append(n + b)
                colours[k].append(lab[b][:, sel].mean(1).cpu())  # (3,)
                yy, xx = torch.nonzero(sel, as_tuple=True)
                positions[k].append(torch.stack([xs[xx].mean(), ys[yy].mean()]).cpu())  # (2,)
        n += B
    total = float(pixels.sum()) or 1.0
    parts = []
    for k in range(K):
        enough = len(present[k]) >= 2
        colour = torch.stack(colours[k]).std(0).mean().item() if enough else None
        position = (torch.stack(positions[k]).var(0).sum().sqrt() * 100).item() if enough else None
        parts.append(
            {
                "part": k + 1,
                "fg_share": 100.0 * float(pixels[k]) / total,
                "images": len(present[k]),
                "color_spread_lab": colour,
                "position_spread": position,
            }
        )
    return {"images": n, "parts": parts}


def format_diagnostics(diagnostics: dict[str, Any]) -> str:
    """A plain-text table of :func:`part_diagnostics`, one row per part, 1 decimal."""
    n = diagnostics["images"]
    rows = [("part", "% of fg", f"images (of {n})", "colour spread (Lab)", "position spread (%)")]
    for p in diagnostics["parts"]:

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        rows.append(
            (
                str(p["part"]),
                fmt(p["fg_share"]),
                str(p["images"]),
                fmt(p["color_spread_lab"]),
                fmt(p["position_spread"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
