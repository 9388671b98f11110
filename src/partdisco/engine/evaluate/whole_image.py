"""Evaluation on whole, uncropped folder images, through the same inference as ``partdisco segment``.

``partdisco eval CKPT eval.full_images=mask|predicted`` scores what ``partdisco segment`` writes: each test
image is read at its own size, segmented by :func:`partdisco.engine.inference.segment_images` (object crop
around the mask, or around the model's predicted foreground in two passes, at the training size, pasted
back), and the maps are scored at the image's resolution against ``parts/``, ``keypoints.json`` and
``masks/`` in the image's own pixels. The default evaluation instead scores the data pipeline's crops
(:mod:`partdisco.engine.evaluate.protocols`); the two agree within about a point for ``mask`` (tested).

Metric names: with ``full_images=mask`` the same keys as the default evaluation (the background is the
mask). With ``full_images=predicted`` the background is the model's own (the discovered foreground when it
carries the classifier of foreground discovery, else its background channel, exactly as ``partdisco
segment``): ``fg_iou`` (predicted foreground vs the mask) and the Full protocols ``px_nmi_predbg`` /
``kp_nmi_predbg`` (and ARI); the FG protocols
(``px_fg_*``, ``kp_fg_*``, ``miou``) still score the K part labels on ground-truth foreground pixels. The
predicted foreground is refined as ``partdisco segment`` refines it (``eval.fg_refine_radius`` /
``eval.fg_refine_eps``, :mod:`partdisco.engine.inference.refine`).

The foreground IoU of a mask-free model (:func:`whole_image_fg_iou`, also what the default evaluation and
the end of training print as ``fg_iou``) is defined as ``benchmarks/score_segment.py`` defines it on a
``partdisco segment`` output folder: ``fg_iou`` = one IoU over all pixels of all images (pooled),
``fg_iou_mean`` = the mean of the per-image IoUs (an image where neither is foreground counts 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from partdisco.config import EvalConfig
from partdisco.data.folder import FolderDataset
from partdisco.data.io import read_image, read_label_map, read_mask
from partdisco.engine import distributed as dist_utils
from partdisco.engine.evaluate.accumulators import Accumulator
from partdisco.engine.inference.images import segment_images
from partdisco.engine.inference.network import part_channels

FULL_IMAGE_MODES = ("off", "mask", "predicted")


@torch.no_grad()
def evaluate_full_images(
    model: torch.nn.Module,
    dataset: FolderDataset,
    cfg: EvalConfig,
    *,
    size: int,
    padding: float,
    mode: str = "mask",
    progress: bool = False,
) -> dict[str, Any]:
    """Score whole folder images segmented as ``partdisco segment`` does.

    Args:
        model: segmenter on its device.
        dataset: a :class:`partdisco.data.folder.FolderDataset` (its ``files``, ``mask_paths``,
            ``part_paths`` and keypoints are read at the images' own size).
        cfg: the ``eval`` slice (``batch_size``, ``max_images``).
        size: network input side (the training ``data.image_size``).
        padding: object crop padding (the training ``data.padding_frac``).
        mode: ``"mask"`` (crop around and background from ``masks/``) or ``"predicted"`` (the model's
            foreground, two passes).
        progress: show a progress bar.

    Returns:
        JSON-serialisable metrics (x100), see the module docstring for the names.

    Raises:
        ValueError: not a folder data set, no ``masks/`` for ``mask``, no background channel for
            ``predicted``.
    """
    from tqdm.auto import tqdm

    _check_mode(model, dataset, mode)
    mask_paths = dataset.mask_paths
    k = int(model.num_parts)
    names = list(dataset.files)
    if cfg.max_images is not None:
        names = names[: cfg.max_images]
    num_keypoints = len(dataset.keypoint_names) if dataset.keypoint_names is not None else 0
    part_names = dataset.part_names
    acc = Accumulator(k, num_keypoints, _num_gt_parts(dataset, names))
    fg_tally = ForegroundIoU()
    bar = tqdm(total=len(names), desc="evaluate (full images)", disable=not progress, leave=False)
    for start in range(0, len(names), cfg.batch_size):
        chunk = names[start : start + cfg.batch_size]
        images = [read_image(dataset.image_dir / n) for n in chunk]
        masks = [read_mask(mask_paths[n], mode="binary") for n in chunk] if mask_paths is not None else None
        maps = segment_images(
            model,
            images,
            masks if mode == "mask" else None,
            size=size,
            batch_size=cfg.batch_size,
            with_probs=True,
            crop="object",
            padding=padding,
            fg_refine=(cfg.fg_refine_radius, cfg.fg_refine_eps),
        )
        for j, (name, result) in enumerate(zip(chunk, maps)):
            _count_image(acc, dataset, name, result, bool(model.background_channel), num_keypoints)
            if mode == "predicted" and masks is not None:
                fg_tally.add(result.labels > 0, masks[j] > 0.5)
        bar.update(len(chunk))
    bar.close()
    results: dict[str, Any] = {"images": len(names), "num_parts": k, "full_images": mode}
    scores = acc.results(part_names, has_full=True)
    if mode == "predicted":
        for key in ("kp_nmi", "kp_ari", "px_nmi", "px_ari"):
            if key in scores:
                scores[f"{key}_predbg"] = scores.pop(key)
        if mask_paths is not None:
            scores.update(fg_tally.results())
    results.update(scores)
    results["protocol"] = {
        "full_images": f"whole images segmented as `partdisco segment` does (object crop, background from "
        f"{'the mask' if mode == 'mask' else 'the prediction'}), scored at each image's own resolution",
    }
    return results


def _check_mode(model: torch.nn.Module, dataset: Any, mode: str) -> None:
    """Refuse a mode the model or the data set cannot serve (ValueError, one line)."""
    if mode not in ("mask", "predicted"):
        raise ValueError(f"eval.full_images must be 'mask' or 'predicted' here, got {mode!r}")
    if not isinstance(dataset, FolderDataset):
        raise ValueError("eval.full_images works on folder data sets only (dataset=folder data.root=DIR)")
    if mode == "mask" and dataset.mask_paths is None:
        raise ValueError(
            f"eval.full_images=mask needs {dataset.root / 'masks'}; use eval.full_images=predicted"
        )
    if mode == "predicted" and not model.background_channel:
        raise ValueError("eval.full_images=predicted needs a model with a background channel")


def _num_gt_parts(dataset: FolderDataset, names: list[str]) -> int:
    """Ground-truth part labels: the named parts, else the largest label in the first 50 maps (0: none)."""
    if dataset.part_paths is None:
        return 0
    if dataset.part_names:
        return len(dataset.part_names)
    return int(max(read_label_map(dataset.part_paths[n]).max() for n in names[:50]))


def _count_image(
    acc: Accumulator,
    dataset: FolderDataset,
    name: str,
    result: Any,
    background_channel: bool,
    num_keypoints: int,
) -> None:
    """Count one segmented image (its probabilities and labels) against its keypoints and part map."""
    assert result.probs is not None
    probs = torch.from_numpy(result.probs)  # (C, H, W)
    parts = part_channels(probs, background_channel, dim=0)
    fg_labels = parts.argmax(0)[None]  # (1, H, W) in [0, K)
    full_labels = torch.from_numpy(result.labels.astype(np.int64))[None]  # (1, H, W), 0 = bg
    keypoints = parts_gt = None
    if num_keypoints:
        kps = dataset._keypoints(name)
        keypoints = torch.from_numpy(np.asarray(kps, dtype=np.float32))[None]  # (1, N, 3)
    if dataset.part_paths is not None:
        parts_gt = torch.from_numpy(read_label_map(dataset.part_paths[name]).astype(np.int64))[None]
    acc.update(fg_labels, full_labels, keypoints, parts_gt)


class ForegroundIoU:
    """Predicted foreground vs mask, as ``benchmarks/score_segment.py`` scores a segment output folder.

    ``fg_iou``: 100 x (intersection / union) summed over every pixel of every image (pooled over the split);
    ``fg_iou_mean``: 100 x the mean over images of each image's IoU (1 when neither has foreground);
    ``fg_iou_images``: how many images. Summed over ranks by :meth:`all_reduce`.

    Example:
        >>> tally = ForegroundIoU()
        >>> tally.add(np.array([[True, True]]), np.array([[True, False]]))
        >>> tally.add(np.array([[False, False]]), np.array([[False, False]]))
        >>> {k: round(v, 1) for k, v in tally.results().items()}
        {'fg_iou': 50.0, 'fg_iou_mean': 75.0, 'fg_iou_images': 2}
    """

    def __init__(self) -> None:
        self.counts = torch.zeros(4, dtype=torch.float64)  # intersection, union, sum of IoUs, images

    def add(self, pred_fg: np.ndarray, gt_fg: np.ndarray) -> None:
        """Count one image: boolean (H, W) predicted foreground and mask."""
        inter, union = int((pred_fg & gt_fg).sum()), int((pred_fg | gt_fg).sum())
        self.counts += torch.tensor([inter, union, inter / union if union else 1.0, 1.0], dtype=torch.float64)

    def all_reduce(self, device: torch.device | str = "cpu") -> None:
        """Sum the counts over ranks (``device``: where the collective runs, the model's for NCCL)."""
        if dist_utils.is_initialized():
            self.counts = dist_utils.all_reduce_sum_(self.counts.to(device)).cpu()

    def results(self) -> dict[str, Any]:
        """``fg_iou``, ``fg_iou_mean`` (x100; NaN without pixels / images) and ``fg_iou_images``."""
        inter, union, iou_sum, images = self.counts.tolist()
        return {
            "fg_iou": 100.0 * inter / union if union > 0 else float("nan"),
            "fg_iou_mean": 100.0 * iou_sum / images if images > 0 else float("nan"),
            "fg_iou_images": int(images),
        }


def has_whole_images(dataset: Any) -> bool:
    """Whether ``dataset`` can hand out its whole source images and masks (``whole_image(i)``)."""
    return callable(getattr(dataset, "whole_image", None)) and bool(getattr(dataset, "has_masks", False))


@torch.no_grad()
def whole_image_fg_iou(
    model: torch.nn.Module,
    dataset: Any,
    *,
    size: int,
    padding: float,
    fg_refine: tuple[float, float],
    batch_size: int = 8,
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The mask-free foreground IoU of ``partdisco segment`` on a split's whole images (module docstring).

    Every image goes through :func:`partdisco.engine.inference.segment_images` exactly as ``partdisco
    segment`` runs it without ``--masks`` (whole image, then the crop around the predicted foreground at
    ``size`` with ``padding``, pasted back, refined with ``fg_refine``); label > 0 is scored against the
    mask at the image's own resolution. Ranks take images r::world; the counts are summed.

    Args:
        model: segmenter with a background channel, on its device.
        dataset: has ``whole_image(i) -> (uint8 (H, W, 3), bool (H, W) mask)`` (:func:`has_whole_images`).
        size: network input side (the checkpoint's ``data.image_size``, as segment's default).
        padding: object crop padding (the checkpoint's ``data.padding_frac``).
        fg_refine: ``(eval.fg_refine_radius, eval.fg_refine_eps)``.
        batch_size: images per forward pass (the result does not depend on it).
        max_images: score only the first images of the split.
        progress: show a progress bar.

    Returns:
        :meth:`ForegroundIoU.results`: ``fg_iou`` (pooled), ``fg_iou_mean`` (per image), ``fg_iou_images``.
    """
    if not model.background_channel:
        raise ValueError("the whole-image foreground IoU needs a model with a background channel")
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    indices = list(range(dist_utils.rank(), n, dist_utils.world_size()))
    from tqdm.auto import tqdm

    tally = ForegroundIoU()
    bar = tqdm(total=len(indices), desc="fg IoU (whole images)", disable=not progress, leave=False)
    for start in range(0, len(indices), batch_size):
        pairs = [dataset.whole_image(i) for i in indices[start : start + batch_size]]
        maps = segment_images(
            model,
            [image for image, _ in pairs],
            size=size,
            batch_size=batch_size,
            with_probs=False,
            crop="auto",
            padding=padding,
            fg_refine=fg_refine,
        )
        for (_, mask), result in zip(pairs, maps):
            tally.add(result.labels > 0, mask)
        bar.update(len(pairs))
    bar.close()
    tally.all_reduce(next(model.parameters()).device)
    return tally.results()


__all__ = [
    "FULL_IMAGE_MODES",
    "ForegroundIoU",
    "evaluate_full_images",
    "has_whole_images",
    "whole_image_fg_iou",
]
