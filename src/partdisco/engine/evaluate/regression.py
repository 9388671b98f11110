"""Keypoint regression (ref §5.2): part centroids -> keypoints, fitted on one split, scored on another."""

from __future__ import annotations

import logging

import numpy as np
import torch

from partdisco.config import EvalConfig
from partdisco.data import Batch, PartsDataset
from partdisco.engine import distributed as dist_utils
from partdisco.engine.evaluate.labels import iterate_batches, split_part_logits
from partdisco.geometry.logits import ALIGN_KEYPOINTS, upsample_logits
from partdisco.metrics.keypoints import (
    KeypointRegressor,
    normalize_by_bbox,
    part_centroids,
    three_class_protocol,
)

log = logging.getLogger("partdisco.evaluate")


Columns = tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]
"""Per-batch centroids (x), keypoints with visibility (y), class ids and sample indices of one split."""


def new_columns() -> Columns:
    """Empty :data:`Columns`, filled batch by batch with :func:`add_columns`."""
    return [], [], [], []


def add_columns(
    columns: Columns, part_logits: torch.Tensor, batch: Batch, fg_mask: torch.Tensor | None
) -> None:
    """Append one batch: bbox-normalised part centroids (of the upsampled softmax) and keypoints."""
    up = upsample_logits(part_logits, tuple(batch.image.shape[-2:]), align_corners=ALIGN_KEYPOINTS)
    cents = part_centroids(torch.softmax(up, 1), fg_mask)  # (B, K, 2)
    columns[0].append(normalize_by_bbox(cents.cpu(), batch.bbox).reshape(len(cents), -1).numpy())
    kps = batch.keypoints
    norm = normalize_by_bbox(kps[..., :2], batch.bbox).numpy()
    columns[1].append(np.concatenate([norm, kps[..., 2:].numpy()], -1))
    columns[2].append(batch.class_id.numpy())
    columns[3].append(batch.index.numpy())


def _gather_in_sample_order(columns: list[list[np.ndarray]], indices: list[np.ndarray]) -> list[np.ndarray]:
    """Concatenate per-batch arrays over batches and ranks, rows sorted by sample index."""
    order = np.argsort(dist_utils.gather_concat(indices), kind="stable")
    return [dist_utils.gather_concat(column)[order] for column in columns]


def regression_errors(
    model: torch.nn.Module,
    regression_dataset: PartsDataset,
    cfg: EvalConfig,
    device: torch.device,
    has_mask: bool,
    test: Columns,
) -> dict[str, float]:
    """Keypoint regression (§5.2): all classes, plus CUB-001/002/003 when classes 1-3 are present."""
    train = new_columns()
    for batch in iterate_batches(regression_dataset, cfg.batch_size, cfg.max_images):
        image = batch.image.to(device)
        part_logits, _ = split_part_logits(model, image)
        add_columns(train, part_logits, batch, batch.fg_mask.to(device) if has_mask else None)
    # every rank saw its share (r::world) of both splits: fit and score on all of them, in sample order, so
    # the number equals a one-process run's
    x_tr, y_tr, c_tr = _gather_in_sample_order(list(train[:3]), train[3])
    x_te, y_te, c_te = _gather_in_sample_order(list(test[:3]), test[3])
    reg = KeypointRegressor().fit(x_tr, y_tr[..., :2], y_tr[..., 2] > 0.5)
    out = {"kp_regression_error": float(reg.error(x_te, y_te[..., :2], y_te[..., 2] > 0.5))}
    if all((c_tr == c).any() and (c_te == c).any() for c in (1, 2, 3)):
        per_class = three_class_protocol(
            x_tr, y_tr[..., :2], y_tr[..., 2] > 0.5, c_tr, x_te, y_te[..., :2], y_te[..., 2] > 0.5, c_te
        )
        out.update({f"kp_regression_error_cub{c:03d}": float(v) for c, v in per_class.items()})
    return out
