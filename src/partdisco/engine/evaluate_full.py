"""Evaluation on whole, uncropped folder images, through the same inference as ``partdisco segment``.

``partdisco eval CKPT eval.full_images=mask|predicted`` scores what ``partdisco segment`` writes: each test
image is read at its own size, segmented by :func:`partdisco.engine.inference.segment_images` (object crop
around the mask, or around the model's predicted foreground in two passes, at the training size, pasted
back), and the maps are scored at the image's resolution against ``parts/``, ``keypoints.json`` and
``masks/`` in the image's own pixels. The default evaluation instead scores the data pipeline's crops
(``engine/evaluate.py``); the two agree within about a point for ``mask`` (tested).

Metric names: with ``full_images=mask`` the same keys as the default evaluation (the background is the
mask). With ``full_images=predicted`` the background is the model's own: ``fg_iou`` (predicted foreground
vs the mask) and the Full protocols ``px_nmi_predbg`` / ``kp_nmi_predbg`` (and ARI); the FG protocols
(``px_fg_*``, ``kp_fg_*``, ``miou``) still score the K part labels on ground-truth foreground pixels. The
predicted foreground is refined as ``partdisco segment`` refines it (``eval.fg_refine_radius`` /
``eval.fg_refine_eps``, :mod:`partdisco.engine.refine`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from partdisco.config import EvalConfig
from partdisco.data.folder import FolderDataset
from partdisco.data.io import read_image, read_label_map, read_mask
from partdisco.engine.evaluate import _Accumulator
from partdisco.engine.inference import segment_images

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

    if mode not in ("mask", "predicted"):
        raise ValueError(f"eval.full_images must be 'mask' or 'predicted' here, got {mode!r}")
    if not isinstance(dataset, FolderDataset):
        raise ValueError("eval.full_images works on folder data sets only (dataset=folder data.root=DIR)")
    mask_paths = dataset.mask_paths
    if mode == "mask" and mask_paths is None:
        raise ValueError(
            f"eval.full_images=mask needs {dataset.root / 'masks'}; use eval.full_images=predicted"
        )
    if mode == "predicted" and not model.background_channel:
        raise ValueError("eval.full_images=predicted needs a model with a background channel")
    part_paths = dataset.part_paths
    k = int(model.num_parts)
    names = list(dataset.files)
    if cfg.max_images is not None:
        names = names[: cfg.max_images]
    num_keypoints = len(dataset.keypoint_names) if dataset.keypoint_names is not None else 0
    part_names = dataset.part_names
    num_gt_parts = 0
    if part_paths is not None:
        num_gt_parts = (
            len(part_names)
            if part_names
            else int(max(read_label_map(part_paths[n]).max() for n in names[:50]))
        )
    acc = _Accumulator(k, num_keypoints, num_gt_parts)
    inter = union = 0
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
            assert result.probs is not None
            probs = torch.from_numpy(result.probs)  # (C, H, W)
            parts = probs[1:] if model.background_channel else probs
            fg_labels = parts.argmax(0)[None]  # (1, H, W) in [0, K)
            full_labels = torch.from_numpy(result.labels.astype(np.int64))[None]  # (1, H, W), 0 = bg
            keypoints = parts_gt = None
            if num_keypoints:
                kps = dataset._keypoints(name)
                keypoints = torch.from_numpy(np.asarray(kps, dtype=np.float32))[None]  # (1, N, 3)
            if part_paths is not None:
                parts_gt = torch.from_numpy(read_label_map(part_paths[name]).astype(np.int64))[None]
            acc.update(fg_labels, full_labels, keypoints, parts_gt)
            if mode == "predicted" and masks is not None:
                gt = masks[j] > 0.5
                pred = result.labels > 0
                inter += int((gt & pred).sum())
                union += int((gt | pred).sum())
        bar.update(len(chunk))
    bar.close()
    results: dict[str, Any] = {"images": len(names), "num_parts": k, "full_images": mode}
    scores = acc.results(part_names, has_full=True)
    if mode == "predicted":
        for key in ("kp_nmi", "kp_ari", "px_nmi", "px_ari"):
            if key in scores:
                scores[f"{key}_predbg"] = scores.pop(key)
        if masks is not None or mask_paths is not None:
            scores["fg_iou"] = 100.0 * inter / union if union > 0 else float("nan")
    results.update(scores)
    results["protocol"] = {
        "full_images": f"whole images segmented as `partdisco segment` does (object crop, background from "
        f"{'the mask' if mode == 'mask' else 'the prediction'}), scored at each image's own resolution",
    }
    return results


__all__ = ["FULL_IMAGE_MODES", "evaluate_full_images"]
