"""Streaming counts of the evaluation protocols: contingency tables per labelling, summed over ranks.

:class:`Accumulator` (keypoint and pixel protocols, for the model or the baseline) and
:class:`PredictedBackground` (the model's own background channel against the masks).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from partdisco.data import Batch
from partdisco.engine import distributed as dist_utils
from partdisco.metrics.clustering import ContingencyTable, clustering_scores
from partdisco.metrics.keypoints import (
    labels_at_keypoints,
)
from partdisco.metrics.matching import hungarian_miou

log = logging.getLogger("partdisco.evaluate")


class Accumulator:
    """Contingency tables for one labelling (the model, or the baseline)."""

    def __init__(self, k: int, num_keypoints: int, num_gt_parts: int) -> None:
        self.kp_fg = ContingencyTable(k, num_keypoints) if num_keypoints else None
        self.kp_full = ContingencyTable(k + 1, num_keypoints) if num_keypoints else None
        self.px_fg = ContingencyTable(k, num_gt_parts + 1) if num_gt_parts else None
        self.px_full = ContingencyTable(k + 1, num_gt_parts + 1) if num_gt_parts else None

    def update(
        self,
        fg_labels: torch.Tensor,
        full_labels: torch.Tensor | None,
        keypoints: torch.Tensor | None,
        parts: torch.Tensor | None,
        pixel_labels: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> None:
        """Count one batch.

        fg_labels: (B, H, W) in [0, K); full_labels: (B, H, W) in [0, K] with 0 = background (keypoint
        protocol); keypoints: (B, N, 3) when keypoints are scored; parts: (B, H, W) GT labels when pixels
        are scored; pixel_labels: the (fg, full) pair for the pixel protocol when it upsamples differently.
        """
        device = fg_labels.device
        if self.kp_fg is not None:
            assert keypoints is not None
            kps = keypoints.to(device)
            pred, kp_index = labels_at_keypoints(fg_labels, kps)
            self.kp_fg.update(pred, kp_index)
            if full_labels is not None and self.kp_full is not None:
                pred, kp_index = labels_at_keypoints(full_labels, kps)
                self.kp_full.update(pred, kp_index)
        if self.px_fg is not None and self.px_full is not None:
            if pixel_labels is not None:
                fg_labels, full_labels = pixel_labels
            assert parts is not None
            gt = parts.to(device)
            self.px_fg.update(fg_labels, gt)
            if full_labels is not None:
                self.px_full.update(full_labels, gt)

    def reduce(self) -> None:
        """Sum the tables over ranks."""
        for table in (self.kp_fg, self.kp_full, self.px_fg, self.px_full):
            if table is not None:
                table.all_reduce()

    def results(self, part_names: list[str] | None, has_full: bool) -> dict[str, Any]:
        """NMI / ARI of the keypoint and pixel protocols and the Hungarian mIoU (x100)."""
        out: dict[str, Any] = {}
        if self.kp_fg is not None and self.kp_fg.count > 0:
            s = clustering_scores(self.kp_fg.table)
            out.update(kp_fg_nmi=s["nmi"], kp_fg_ari=s["ari"], keypoints_used=int(s["count"]))
            if has_full and self.kp_full is not None:
                s = clustering_scores(self.kp_full.table)
                out.update(kp_nmi=s["nmi"], kp_ari=s["ari"])
        if self.px_fg is not None and self.px_fg.count > 0:
            table = self.px_fg.table  # (K, P + 1), column 0 = GT background
            fg = clustering_scores(table[:, 1:])
            out.update(px_fg_nmi=fg["nmi"], px_fg_ari=fg["ari"], fg_pixels=int(fg["count"]))
            if has_full and self.px_full is not None and self.px_full.count > 0:
                s = clustering_scores(self.px_full.table)
                out.update(px_nmi=s["nmi"], px_ari=s["ari"])
            matching = hungarian_miou(table, part_names=part_names, ignore_background=True)
            out["miou"] = float(matching["miou"])
            out["miou_matching"] = _plain(matching)
        return out


class PredictedBackground:
    """Scores of the model's own background channel against the data set's masks (mask-free models).

    ``fg_iou``: IoU of the predicted foreground (background channel loses the argmax) with the mask;
    ``px_nmi_predbg`` / ``kp_nmi_predbg`` (and ARI): the Full protocols with the background taken from the
    model's prediction instead of the mask (the paper's Full protocol used a separately trained
    segmenter's masks; here the model's own).
    """

    def __init__(self, k: int, num_keypoints: int, num_gt_parts: int, device: torch.device) -> None:
        self.kp = ContingencyTable(k + 1, num_keypoints) if num_keypoints else None
        self.px = ContingencyTable(k + 1, num_gt_parts + 1) if num_gt_parts else None
        self.inter_union = torch.zeros(2, dtype=torch.float64, device=device)

    def update(
        self, kp_labels: torch.Tensor, px_labels: torch.Tensor, fg_mask: torch.Tensor, batch: Batch
    ) -> None:
        """kp_labels / px_labels: (B, H, W) in [0, K], 0 = predicted background; fg_mask: (B, 1, H, W)."""
        device = px_labels.device
        pred_fg = px_labels > 0  # (B, H, W)
        gt_fg = fg_mask[:, 0].to(device) > 0.5  # (B, H, W)
        self.inter_union += torch.stack(
            [(pred_fg & gt_fg).sum(), (pred_fg | gt_fg).sum()]
        ).to(self.inter_union)
        if self.kp is not None:
            pred, kp_index = labels_at_keypoints(kp_labels, batch.keypoints.to(device))
            self.kp.update(pred, kp_index)
        if self.px is not None:
            self.px.update(px_labels, batch.parts.to(device))

    def results(self) -> dict[str, float]:
        """Sum over ranks; ``fg_iou`` and the predicted-background Full protocols (x100)."""
        for table in (self.kp, self.px):
            if table is not None:
                table.all_reduce()
        dist_utils.all_reduce_sum_(self.inter_union)
        inter, union = self.inter_union.tolist()
        out = {"fg_iou": 100.0 * inter / union if union > 0 else float("nan")}
        if self.kp is not None and self.kp.count > 0:
            s = clustering_scores(self.kp.table)
            out.update(kp_nmi_predbg=s["nmi"], kp_ari_predbg=s["ari"])
        if self.px is not None and self.px.count > 0:
            s = clustering_scores(self.px.table)
            out.update(px_nmi_predbg=s["nmi"], px_ari_predbg=s["ari"])
        return out


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
