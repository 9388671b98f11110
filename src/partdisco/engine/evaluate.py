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
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from partdisco.config import EvalConfig
from partdisco.data import Batch, PartsDataset, collate
from partdisco.engine import distributed as dist_utils
from partdisco.engine.inference import network_logits
from partdisco.engine.refine import refine_probs
from partdisco.geometry.logits import ALIGN_KEYPOINTS, ALIGN_PIXELS, upsample_logits
from partdisco.metrics.baselines import assign_to_centers, bbox_normalized_grid, kmeans
from partdisco.metrics.clustering import ContingencyTable, clustering_scores
from partdisco.metrics.keypoints import (
    KeypointRegressor,
    labels_at_keypoints,
    logits_to_labels,
    normalize_by_bbox,
    part_centroids,
    three_class_protocol,
)
from partdisco.metrics.matching import hungarian_miou

log = logging.getLogger("partdisco.evaluate")


def iterate_batches(
    dataset: PartsDataset, batch_size: int, max_images: int | None = None
) -> Iterator[Batch]:
    """Batches of consecutive samples of equal image size, sharded over ranks (rank r takes r::world)."""
    n = len(dataset)  # type: ignore[arg-type]
    if max_images is not None:
        n = min(n, max_images)
    indices = range(dist_utils.rank(), n, dist_utils.world_size())
    buffer: list[dict[str, Any]] = []
    for i in indices:
        sample = dataset[i]
        if buffer and (len(buffer) == batch_size or sample["image"].shape != buffer[0]["image"].shape):
            yield collate(buffer)
            buffer = []
        buffer.append(sample)
    if buffer:
        yield collate(buffer)


def _fg_and_full_labels(
    part_logits: torch.Tensor,
    all_logits: torch.Tensor | None,
    fg_mask: torch.Tensor | None,
    size: tuple[int, int],
    align_corners: bool,
    image: torch.Tensor,
    refine: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """FG labels (argmax of the K parts, in [0, K)) and Full labels (or None).

    Full labels are 0 = background, from the mask when there is one, else from the model's background
    channel (refined along ``image``'s colour edges with ``refine``, :func:`predicted_background_labels`);
    None when neither exists.
    """
    fg = logits_to_labels(part_logits, size, align_corners=align_corners)  # (B, H, W)
    if fg_mask is not None:
        full = logits_to_labels(
            part_logits, size, align_corners=align_corners, fg_mask=fg_mask, background="mask"
        )
    elif all_logits is not None:
        full = predicted_background_labels(all_logits, image, size, align_corners, refine)
    else:
        full = None
    return fg, full


def predicted_background_labels(
    all_logits: torch.Tensor,
    image: torch.Tensor,
    size: tuple[int, int],
    align_corners: bool,
    refine: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Labels with the model's own background (0) from (B, K + 1, h, w) logits, as ``partdisco segment``.

    Upsampled bilinearly to ``size`` and, when ``refine[0] > 0``, the foreground is refined along the colour
    edges of ``image`` (B, 3, H, W in [0, 1]; :func:`partdisco.engine.refine.refine_probs`) before the
    argmax over the K + 1 channels.
    """
    if refine[0] <= 0:
        return logits_to_labels(all_logits, size, align_corners=align_corners)
    up = upsample_logits(all_logits, size, align_corners=align_corners)  # (B, K + 1, H, W)
    probs = refine_probs(torch.softmax(up, dim=1), image.float(), *refine)  # (B, K + 1, H, W)
    return probs.argmax(dim=1)


def _part_logits(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = network_logits(model, image)  # (B, K(+1), h, w)
    if model.background_channel:
        return logits[:, 1:], logits
    return logits, None


class _Accumulator:
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
        for table in (self.kp_fg, self.kp_full, self.px_fg, self.px_full):
            if table is not None:
                table.all_reduce()

    def results(self, part_names: list[str] | None, has_full: bool) -> dict[str, Any]:
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


class _PredictedBackground:
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
        ``partdisco segment`` (pooled / mean per image, :func:`.evaluate_full.whole_image_fg_iou`) when the
        data set has whole images, and ``fg_iou_crops`` the IoU on the pipeline's (mask-box) crops.
    """
    from tqdm.auto import tqdm

    model.eval()
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
    model_acc = _Accumulator(k, num_keypoints, num_gt_parts)
    base_acc = _Accumulator(k, num_keypoints, num_gt_parts) if cfg.baseline else None
    centers = fit_xy_baseline(baseline_dataset or dataset, k) if cfg.baseline else None
    has_bg_channel = bool(model.background_channel)
    predicted_bg = (
        _PredictedBackground(k, num_keypoints, num_gt_parts, device) if has_bg_channel and has_mask else None
    )

    test_centroids: list[np.ndarray] = []
    test_keypoints: list[np.ndarray] = []
    test_classes: list[np.ndarray] = []
    test_indices: list[np.ndarray] = []
    images = 0
    total = len(dataset) if cfg.max_images is None else min(len(dataset), cfg.max_images)  # type: ignore[arg-type]
    bar = tqdm(total=total, desc="evaluate", disable=not progress, dynamic_ncols=True, leave=False)
    for batch in iterate_batches(dataset, cfg.batch_size, cfg.max_images):
        image = batch.image.to(device)
        fg_mask = batch.fg_mask.to(device)
        H, W = image.shape[-2:]
        part_logits, all_logits = _part_logits(model, image)
        mask = fg_mask if has_mask else None
        refine = (cfg.fg_refine_radius, cfg.fg_refine_eps)  # as `partdisco segment` refines the foreground
        fg_labels, full_labels = _fg_and_full_labels(
            part_logits, all_logits, mask, (H, W), ALIGN_KEYPOINTS, image, refine
        )
        pixel_labels = None
        if num_gt_parts:  # the pixel protocol upsamples with its own align_corners
            pixel_labels = _fg_and_full_labels(
                part_logits, all_logits, mask, (H, W), ALIGN_PIXELS, image, refine
            )
        model_acc.update(fg_labels, full_labels, batch.keypoints, batch.parts, pixel_labels)
        if level_table is not None:
            level_table.update(
                mask_level_labels(part_logits, batch.mask_levels.to(device)), batch.parts.to(device)
            )
        if predicted_bg is not None and all_logits is not None:
            # labels with the predicted background (0)
            kp_pred = predicted_background_labels(all_logits, image, (H, W), ALIGN_KEYPOINTS, refine)
            px_pred = predicted_background_labels(all_logits, image, (H, W), ALIGN_PIXELS, refine)
            predicted_bg.update(kp_pred, px_pred, fg_mask, batch)
        if base_acc is not None and centers is not None:
            grid = bbox_normalized_grid(batch.bbox.to(device), (H, W))  # (B, H, W, 2)
            base_fg = assign_to_centers(grid, centers).to(device)  # (B, H, W)
            base_full = torch.where(fg_mask[:, 0] > 0, base_fg + 1, torch.zeros_like(base_fg))
            base_acc.update(base_fg, base_full if has_mask else None, batch.keypoints, batch.parts)
        if regression_dataset is not None and num_keypoints:
            up = upsample_logits(part_logits, (H, W), align_corners=ALIGN_KEYPOINTS)
            cents = part_centroids(torch.softmax(up, 1), fg_mask if has_mask else None)  # (B, K, 2)
            test_centroids.append(
                normalize_by_bbox(cents.cpu(), batch.bbox).reshape(len(cents), -1).numpy()
            )
            kps = batch.keypoints
            norm = normalize_by_bbox(kps[..., :2], batch.bbox).numpy()
            test_keypoints.append(np.concatenate([norm, kps[..., 2:].numpy()], -1))
            test_classes.append(batch.class_id.numpy())
            test_indices.append(batch.index.numpy())
        images += image.shape[0]
        bar.update(image.shape[0])
    bar.close()

    model_acc.reduce()
    if level_table is not None:
        level_table.all_reduce()
    counts = torch.tensor([images], dtype=torch.long, device=device)
    dist_utils.all_reduce_sum_(counts)
    results: dict[str, Any] = {"images": int(counts.item()), "num_parts": k}
    has_full = has_mask or bool(model.background_channel)
    suffix = dataset.full_metrics_suffix or ""
    results.update(_suffixed(model_acc.results(part_names, has_full), suffix))
    if level_table is not None and level_table.count > 0:
        s = clustering_scores(level_table.table)
        results.update(px_nmi=s["nmi"], px_ari=s["ari"], full_pixels=int(s["count"]))
    if predicted_bg is not None:
        results.update(_foreground_ious(model, dataset, cfg, predicted_bg.results(), size, padding, progress))
    if regression_dataset is not None and num_keypoints:  # the same on every rank (collective below)
        results.update(
            _regression_errors(
                model,
                regression_dataset,
                cfg,
                device,
                has_mask,
                (test_centroids, test_keypoints, test_classes, test_indices),
            )
        )
    if base_acc is not None:
        base_acc.reduce()
        base = _suffixed(base_acc.results(part_names, has_mask), suffix)
        base.pop("miou_matching", None)
        results["baseline_xy_kmeans"] = base
    results["protocol"] = {
        "keypoint_labels": "CUB keypoint-label protocol (ref §5.1): argmax of bilinearly upsampled logits "
        "(align_corners=False) at visible keypoints; FG = K part labels, Full = K+1 with mask background",
        "pixels": "pixel protocol (ref §5.3): bilinear upsampling with align_corners=True, argmax; FG over "
        "GT-foreground pixels, Full over all pixels with mask background",
        "miou": "Hungarian one-to-one matching of discovered to GT parts on GT-foreground pixels",
        "baseline_xy_kmeans": "k-means (K clusters) on bbox-normalised (x, y) of foreground pixels",
        "full": _full_protocol_text(dataset, suffix, level_table is not None),
    }
    if predicted_bg is not None:
        results["protocol"]["predicted_background"] = (
            "fg_iou / fg_iou_mean: IoU of the foreground `partdisco segment` predicts on the whole images "
            "(no mask; whole image, then the crop around the predicted foreground) with the masks, pooled "
            "over the split's pixels / mean per image, as benchmarks/score_segment.py; fg_iou_crops: the "
            "same IoU on the evaluation crops around the masks' boxes (not what segment sees); *_predbg: "
            "the Full protocols with the model's predicted background instead of the mask, on those crops"
        )
    return results


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
    photos. Data sets without whole images (:func:`.evaluate_full.has_whole_images`) report only
    ``fg_iou_crops``.
    """
    from partdisco.engine.evaluate_full import has_whole_images, whole_image_fg_iou
    from partdisco.engine.inference import inference_padding, inference_size

    out = dict(crop_scores)
    out["fg_iou_crops"] = out.pop("fg_iou")
    if has_whole_images(dataset):
        if size is None and getattr(getattr(model, "inference_defaults", None), "image_size", None) is None:
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


def mask_level_labels(part_logits: torch.Tensor, mask_levels: torch.Tensor) -> torch.Tensor:
    """The reference's DeepFashion Full labels: ``mask level * (argmax + 1)``.

    ref: ``DeepFashion eval.ipynb get_full_nmi_ari``: ``fg_mask * (pred + 1)`` with the raw (0..255, not
    divided by 255) resized mask, logits upsampled bilinearly with ``align_corners=False``. With a 0/255
    mask a pixel of part k gets ``255 * (k + 1)``, a boundary pixel of level 128 ``128 * (k + 1)``: distinct
    labels, as in the reference; with a 0/1 mask, labels 0..K.

    Args:
        part_logits: (B, K, h, w) float logits of the K parts.
        mask_levels: (B, 1, H, W) integer-valued levels in 0..255.

    Returns:
        (B, H, W) int64 labels in [0, 255 K].

    Example:
        >>> logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2): parts 1, 0
        >>> mask_level_labels(logits, torch.tensor([[[[255.0, 1.0]]]])).tolist()
        [[[510, 1]]]
    """
    H, W = mask_levels.shape[-2:]
    parts = logits_to_labels(part_logits, (H, W), align_corners=ALIGN_KEYPOINTS)  # (B, H, W) in [0, K)
    return mask_levels[:, 0].round().long() * (parts + 1)


def _gather_in_sample_order(columns: list[list[np.ndarray]], indices: list[np.ndarray]) -> list[np.ndarray]:
    """Concatenate per-batch arrays over batches and ranks, rows sorted by sample index."""
    order = np.argsort(dist_utils.gather_concat(indices), kind="stable")
    return [dist_utils.gather_concat(column)[order] for column in columns]


def _regression_errors(
    model: torch.nn.Module,
    regression_dataset: PartsDataset,
    cfg: EvalConfig,
    device: torch.device,
    has_mask: bool,
    test: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]],
) -> dict[str, float]:
    """Keypoint regression (§5.2): all classes, plus CUB-001/002/003 when classes 1-3 are present."""
    train_x, train_y, train_c, train_i = [], [], [], []
    for batch in iterate_batches(regression_dataset, cfg.batch_size, cfg.max_images):
        image = batch.image.to(device)
        H, W = image.shape[-2:]
        part_logits, _ = _part_logits(model, image)
        up = upsample_logits(part_logits, (H, W), align_corners=ALIGN_KEYPOINTS)
        cents = part_centroids(torch.softmax(up, 1), batch.fg_mask.to(device) if has_mask else None)
        train_x.append(normalize_by_bbox(cents.cpu(), batch.bbox).reshape(len(cents), -1).numpy())
        kps = batch.keypoints
        norm = normalize_by_bbox(kps[..., :2], batch.bbox).numpy()
        train_y.append(np.concatenate([norm, kps[..., 2:].numpy()], -1))
        train_c.append(batch.class_id.numpy())
        train_i.append(batch.index.numpy())
    # every rank saw its share (r::world) of both splits: fit and score on all of them, in sample order, so
    # the number equals a one-process run's
    x_tr, y_tr, c_tr = _gather_in_sample_order([train_x, train_y, train_c], train_i)
    x_te, y_te, c_te = _gather_in_sample_order(list(test[:3]), test[3])
    reg = KeypointRegressor().fit(x_tr, y_tr[..., :2], y_tr[..., 2] > 0.5)
    out = {"kp_regression_error": float(reg.error(x_te, y_te[..., :2], y_te[..., 2] > 0.5))}
    if all((c_tr == c).any() and (c_te == c).any() for c in (1, 2, 3)):
        per_class = three_class_protocol(
            x_tr, y_tr[..., :2], y_tr[..., 2] > 0.5, c_tr, x_te, y_te[..., :2], y_te[..., 2] > 0.5, c_te
        )
        out.update({f"kp_regression_error_cub{c:03d}": float(v) for c, v in per_class.items()})
    return out


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
