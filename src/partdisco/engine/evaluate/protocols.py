"""Streaming evaluation of a segmenter on a data set split.

Everything is accumulated in fixed-size contingency tables (memory does not grow with the number of
pixels) and summed over ranks. Which numbers are produced depends on what the data set provides:

- keypoints -> the CUB keypoint-label protocol (§5.1): ``kp_fg_nmi/ari`` (K part labels at visible
  keypoints) and, with a foreground mask, ``kp_nmi/ari`` ("Full": K + 1 labels, background from the mask);
  plus ``kp_regression_error`` (§5.2) when a regression split is given.
- ground-truth part maps -> the DeepFashion pixel protocol (§5.3): ``px_fg_nmi/ari`` over GT-foreground
  pixels, ``px_nmi/ari`` over all pixels with the background from the mask, and Hungarian ``miou``.
- ``baseline``: the same numbers for k-means on bbox-normalised (x, y) pixel positions.

"Full" keys without a suffix are the published Full protocol where a data set has one: CUB with
``data.cub_variant=full data.cub_mask=sup`` (``kp_nmi/ari``), DeepFashion with
``data.deepfashion_variant=full`` (``px_nmi/ari``, labels ``mask level * (argmax + 1)`` as the reference's
``get_full_nmi_ari``). Other combinations carry the data set's ``full_metrics_suffix`` naming what they are
(e.g. ``kp_nmi_bbox_gtmask``: box crops with GT masks; ``px_nmi_padded_gtmask``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from partdisco.config import EvalConfig
from partdisco.data import Batch, PartsDataset
from partdisco.engine import distributed as dist_utils
from partdisco.engine.evaluate.accumulators import Accumulator, PredictedBackground
from partdisco.engine.evaluate.labels import (
    fg_and_full_labels,
    iterate_batches,
    mask_level_labels,
    predicted_background_labels,
    split_part_logits,
)
from partdisco.engine.evaluate.regression import Columns, add_columns, new_columns, regression_errors
from partdisco.engine.evaluate.whole_image import has_whole_images, whole_image_fg_iou
from partdisco.engine.inference.network import inference_padding, inference_size, trained_default
from partdisco.geometry.logits import ALIGN_KEYPOINTS, ALIGN_PIXELS
from partdisco.metrics.baselines import assign_to_centers, bbox_normalized_grid, kmeans
from partdisco.metrics.clustering import ContingencyTable, clustering_scores

log = logging.getLogger("partdisco.evaluate")


@torch.no_grad()
def fit_xy_baseline(
    dataset: PartsDataset, k: int, seed: int = 0, images: int = 200, per_image: int = 256
) -> torch.Tensor:
    """k-means centres of bbox-normalised foreground pixel positions, sampled from a data set split."""
    gen = torch.Generator().manual_seed(seed)
    points = []
    n = min(len(dataset), images)  # type: ignore[arg-type]
    for i in range(n):
        s = dataset[i]
        H, W = s["image"].shape[-2:]
        grid = bbox_normalized_grid(s["bbox"].view(1, 4), (H, W))[0]  # (H, W, 2)
        fg = s["fg_mask"][0] > 0.5
        pts = grid[fg]
        if pts.shape[0] == 0:
            continue
        pick = torch.randint(pts.shape[0], (min(per_image, pts.shape[0]),), generator=gen)
        points.append(pts[pick])
    if not points:
        raise ValueError("no foreground pixels to fit the (x, y) k-means baseline")
    return kmeans(torch.cat(points), k, gen)


@dataclass
class _Scorers:
    """What :func:`evaluate` counts into, batch by batch (built by :func:`_scorers`)."""

    k: int
    num_keypoints: int
    num_gt_parts: int
    has_mask: bool
    refine: tuple[float, float]  # as `partdisco segment` refines the foreground
    model_acc: Accumulator
    level_table: ContingencyTable | None  # DeepFashion's published Full protocol
    base_acc: Accumulator | None
    centers: torch.Tensor | None  # the (x, y) k-means baseline's
    predicted_bg: PredictedBackground | None
    regression: Columns | None  # the test split's columns for keypoint regression
    images: int = 0


def _scorers(
    model: torch.nn.Module,
    dataset: PartsDataset,
    cfg: EvalConfig,
    device: torch.device,
    baseline_dataset: PartsDataset | None,
    with_regression: bool,
) -> _Scorers:
    """The tables for what the data set provides (keypoints, part maps, mask levels, masks)."""
    k = int(model.num_parts)
    first = dataset[0]
    num_keypoints = int(first["keypoints"].shape[0]) if "keypoints" in first else 0
    part_names = dataset.part_names
    num_gt_parts = len(part_names) if "parts" in first and part_names else 0
    if "parts" in first and not num_gt_parts:
        num_gt_parts = int(max(int(dataset[i]["parts"].max()) for i in range(min(len(dataset), 50))))  # type: ignore[arg-type]
    has_mask = dataset.has_masks
    # DeepFashion's published Full protocol: labels = mask level * (argmax + 1) over every pixel (ref
    # get_full_nmi_ari); it replaces the pixel protocol's FG / mIoU numbers on those unpadded images
    level_table = None
    if dataset.full_labels == "mask_levels" and num_gt_parts:
        level_table = ContingencyTable(255 * k + 1, num_gt_parts + 1, device=device)
        num_gt_parts = 0
    with_bg = bool(model.background_channel) and has_mask
    return _Scorers(
        k=k,
        num_keypoints=num_keypoints,
        num_gt_parts=num_gt_parts,
        has_mask=has_mask,
        refine=(cfg.fg_refine_radius, cfg.fg_refine_eps),
        model_acc=Accumulator(k, num_keypoints, num_gt_parts),
        level_table=level_table,
        base_acc=Accumulator(k, num_keypoints, num_gt_parts) if cfg.baseline else None,
        centers=fit_xy_baseline(baseline_dataset or dataset, k) if cfg.baseline else None,
        predicted_bg=PredictedBackground(k, num_keypoints, num_gt_parts, device) if with_bg else None,
        regression=new_columns() if with_regression and num_keypoints else None,
    )


def _score_batch(s: _Scorers, model: torch.nn.Module, batch: Batch, device: torch.device) -> None:
    """Count one batch into every table of ``s``."""
    image = batch.image.to(device)
    fg_mask = batch.fg_mask.to(device)
    H, W = image.shape[-2:]
    part_logits, all_logits = split_part_logits(model, image)
    mask = fg_mask if s.has_mask else None
    fg_labels, full_labels = fg_and_full_labels(
        part_logits, all_logits, mask, (H, W), ALIGN_KEYPOINTS, image, s.refine
    )
    pixel_labels = None
    if s.num_gt_parts:  # the pixel protocol upsamples with its own align_corners
        pixel_labels = fg_and_full_labels(
            part_logits, all_logits, mask, (H, W), ALIGN_PIXELS, image, s.refine
        )
    s.model_acc.update(fg_labels, full_labels, batch.keypoints, batch.parts, pixel_labels)
    if s.level_table is not None:
        levels = mask_level_labels(part_logits, batch.mask_levels.to(device))
        s.level_table.update(levels, batch.parts.to(device))
    if s.predicted_bg is not None and all_logits is not None:
        # labels with the predicted background (0)
        kp_pred = predicted_background_labels(all_logits, image, (H, W), ALIGN_KEYPOINTS, s.refine)
        px_pred = predicted_background_labels(all_logits, image, (H, W), ALIGN_PIXELS, s.refine)
        s.predicted_bg.update(kp_pred, px_pred, fg_mask, batch)
    if s.base_acc is not None and s.centers is not None:
        grid = bbox_normalized_grid(batch.bbox.to(device), (H, W))  # (B, H, W, 2)
        base_fg = assign_to_centers(grid, s.centers).to(device)  # (B, H, W)
        base_full = torch.where(fg_mask[:, 0] > 0, base_fg + 1, torch.zeros_like(base_fg))
        s.base_acc.update(base_fg, base_full if s.has_mask else None, batch.keypoints, batch.parts)
    if s.regression is not None:
        add_columns(s.regression, part_logits, batch, mask)
    s.images += image.shape[0]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: PartsDataset,
    cfg: EvalConfig,
    device: torch.device,
    *,
    regression_dataset: PartsDataset | None = None,
    baseline_dataset: PartsDataset | None = None,
    progress: bool = False,
    size: int | None = None,
    padding: float | None = None,
) -> dict[str, Any]:
    """Evaluate a segmenter on a data set split.

    Args:
        model: segmenter with ``preprocess`` and ``num_parts`` (put in eval mode here).
        dataset: evaluation split (sample dicts).
        cfg: the ``eval`` slice (batch size, max images, baseline).
        device: where to run the model.
        regression_dataset: split to fit the keypoint regressor on (the train split, evaluation pipeline);
            None skips keypoint regression.
        baseline_dataset: split to fit the (x, y) k-means baseline on (default: ``dataset``).
        progress: show a progress bar.
        size: network input side of the whole-image foreground IoU (``partdisco segment``'s default: the
            training ``data.image_size``); None = the model's ``image_size``, else the data set's.
        padding: its object crop padding (the training ``data.padding_frac``); None = the model's.

    Returns:
        A JSON-serialisable dict of metrics (x100 for NMI/ARI/mIoU/regression error) and counts. With a
        background channel and masks: ``fg_iou`` / ``fg_iou_mean`` are the whole-image foreground IoU of
        ``partdisco segment`` (pooled / mean per image, :func:`.whole_image.whole_image_fg_iou`) when the
        data set has whole images, and ``fg_iou_crops`` the IoU on the pipeline's (mask-box) crops.
    """
    from tqdm.auto import tqdm

    model.eval()
    s = _scorers(model, dataset, cfg, device, baseline_dataset, regression_dataset is not None)
    total = len(dataset) if cfg.max_images is None else min(len(dataset), cfg.max_images)  # type: ignore[arg-type]
    bar = tqdm(total=total, desc="evaluate", disable=not progress, dynamic_ncols=True, leave=False)
    for batch in iterate_batches(dataset, cfg.batch_size, cfg.max_images):
        _score_batch(s, model, batch, device)
        bar.update(batch.image.shape[0])
    bar.close()

    s.model_acc.reduce()
    if s.level_table is not None:
        s.level_table.all_reduce()
    counts = torch.tensor([s.images], dtype=torch.long, device=device)
    dist_utils.all_reduce_sum_(counts)
    results: dict[str, Any] = {"images": int(counts.item()), "num_parts": s.k}
    has_full = s.has_mask or bool(model.background_channel)
    suffix = dataset.full_metrics_suffix or ""
    results.update(_suffixed(s.model_acc.results(dataset.part_names, has_full), suffix))
    if s.level_table is not None and s.level_table.count > 0:
        scores = clustering_scores(s.level_table.table)
        results.update(px_nmi=scores["nmi"], px_ari=scores["ari"], full_pixels=int(scores["count"]))
    if s.predicted_bg is not None:
        crop_scores = s.predicted_bg.results()
        results.update(_foreground_ious(model, dataset, cfg, crop_scores, size, padding, progress))
    if regression_dataset is not None and s.regression is not None:  # the same on every rank (collective)
        results.update(regression_errors(model, regression_dataset, cfg, device, s.has_mask, s.regression))
    if s.base_acc is not None:
        s.base_acc.reduce()
        base = _suffixed(s.base_acc.results(dataset.part_names, s.has_mask), suffix)
        base.pop("miou_matching", None)
        results["baseline_xy_kmeans"] = base
    levels, predicted_bg = s.level_table is not None, s.predicted_bg is not None
    results["protocol"] = _protocol_texts(dataset, suffix, levels, predicted_bg)
    return results


def _protocol_texts(dataset: PartsDataset, suffix: str, levels: bool, predicted_bg: bool) -> dict[str, str]:
    """``metrics["protocol"]``: how each group of numbers was measured."""
    texts = {
        "keypoint_labels": "CUB keypoint-label protocol (ref §5.1): argmax of bilinearly upsampled logits "
        "(align_corners=False) at visible keypoints; FG = K part labels, Full = K+1 with mask background",
        "pixels": "pixel protocol (ref §5.3): bilinear upsampling with align_corners=True, argmax; FG over "
        "GT-foreground pixels, Full over all pixels with mask background",
        "miou": "Hungarian one-to-one matching of discovered to GT parts on GT-foreground pixels",
        "baseline_xy_kmeans": "k-means (K clusters) on bbox-normalised (x, y) of foreground pixels",
        "full": _full_protocol_text(dataset, suffix, levels),
    }
    if predicted_bg:
        texts["predicted_background"] = (
            "fg_iou / fg_iou_mean: IoU of the foreground `partdisco segment` predicts on the whole images "
            "(no mask; whole image, then the crop around the predicted foreground) with the masks, pooled "
            "over the split's pixels / mean per image, as benchmarks/score_segment.py; fg_iou_crops: the "
            "same IoU on the evaluation crops around the masks' boxes (not what segment sees); *_predbg: "
            "the Full protocols with the model's predicted background instead of the mask, on those crops"
        )
    return texts


def _foreground_ious(
    model: torch.nn.Module,
    dataset: PartsDataset,
    cfg: EvalConfig,
    crop_scores: dict[str, float],
    size: int | None,
    padding: float | None,
    progress: bool = False,
) -> dict[str, Any]:
    """Predicted-background scores: ``fg_iou`` from whole images as segment does, ``fg_iou_crops`` on crops.

    The crops are cut around the masks' boxes, so the mask tells the model where the object is and the
    background is a thin frame: their IoU is not what a user gets from ``partdisco segment`` on the
    photos. Data sets without whole images (:func:`.whole_image.has_whole_images`) report only
    ``fg_iou_crops``.
    """
    out = dict(crop_scores)
    out["fg_iou_crops"] = out.pop("fg_iou")
    if has_whole_images(dataset):
        if size is None and trained_default(model, "image_size") is None:
            size = getattr(dataset, "size", None) or getattr(dataset, "image_size", None)
        out.update(
            whole_image_fg_iou(
                model,
                dataset,
                size=inference_size(model, size),
                padding=inference_padding(model, padding),
                fg_refine=(cfg.fg_refine_radius, cfg.fg_refine_eps),
                batch_size=cfg.batch_size,
                max_images=cfg.max_images,
                progress=progress,
            )
        )
    return out


FULL_KEYS = ("kp_nmi", "kp_ari", "px_nmi", "px_ari")


def _suffixed(metrics: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Rename the Full keys ``kp_nmi`` ... to ``kp_nmi<suffix>`` (not the published Full protocol)."""
    return {(f"{k}{suffix}" if k in FULL_KEYS else k): v for k, v in metrics.items()}


def _full_protocol_text(dataset: PartsDataset, suffix: str, levels: bool) -> str:
    if levels:
        return (
            "px_nmi/px_ari: the published DeepFashion Full protocol (ref get_full_nmi_ari): shorter side "
            "resized, no padding, supervisedlabels masks, GT labels resized bilinearly, logits upsampled "
            "with align_corners=False, label = mask level * (argmax + 1) over all pixels"
        )
    if suffix == "_padded_gtmask":
        return (
            "px_nmi_padded_gtmask: not the published Full protocol: padded squares, GT mask, align_corners="
            "True (use data.deepfashion_variant=full for the paper's)"
        )
    if suffix.startswith(("_bbox", "_whole")):
        return (
            f"kp_nmi{suffix}: not the published Full protocol (whole images with supervisedlabels masks: "
            "data.cub_variant=full data.cub_mask=sup); K+1 labels with this variant's images and masks"
        )
    if dataset.full_metrics_suffix == "":
        return "kp_nmi/kp_ari: the published CUB Full protocol (whole images, supervisedlabels masks)"
    return "kp_nmi/px_nmi: K+1 labels with the background from this data set's foreground mask"


MIN_KEYPOINTS = 20  # keypoint scores from fewer visible keypoints are flagged as not meaningful
MIN_FG_PIXELS = 500  # ... and pixel scores from fewer foreground pixels


def metric_warnings(metrics: dict[str, Any]) -> dict[str, str]:
    """Metric-name prefixes whose scores rest on too few samples -> why (for the printed table and logs)."""
    out = {}
    used = metrics.get("keypoints_used")
    if isinstance(used, int) and used < MIN_KEYPOINTS:
        out["kp_"] = f"kp_* from only {used} keypoint(s) (< {MIN_KEYPOINTS}): not a meaningful score"
    pixels = metrics.get("fg_pixels")
    if isinstance(pixels, int) and pixels < MIN_FG_PIXELS:
        note = (
            f"px_* / miou from only {pixels} foreground pixel(s) (< {MIN_FG_PIXELS}): not a meaningful score"
        )
        out["px_"] = out["miou"] = note
    return out
