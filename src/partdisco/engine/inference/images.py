"""Images in, part maps out: :func:`segment_images` (whole image or object crop, back to the image's size).

Pipeline per image (sizes H x W):

1. Resize so the shorter side is ``size`` (bilinear, area-aware when shrinking) -> (h', w')
   (:func:`.network.processing_size`, :func:`.network.image_to_tensor`), or crop around the object first
   (object-centric inference, :mod:`partdisco.engine.inference.crop`).
2. ``model(preprocess(x))`` -> logits (B, C, h, w) at the output stride, C = K or K + 1
   (:func:`.network.network_logits`); bilinear upsampling to (h', w') with ``ALIGN_TRAIN`` (the training
   convention, :mod:`partdisco.geometry.logits`), softmax -> probabilities (:func:`.network.predict_probs`).
3. Labels at (h', w'): ``argmax + 1`` over the K parts, or ``argmax`` over K + 1 channels when the
   model's channel 0 is background (:func:`.network.labels_from_probs`); then back to (H, W) by nearest
   (labels) and bilinear (probabilities, ``align_corners=RESIZE_ALIGN``: both resizes map pixel areas, as
   PIL does).
4. Background (0) from, in order: a mask, the discovered foreground when the model carries its
   classifier (``background="auto"``: :mod:`.discovered`, then handled as a mask), the model's background
   channel, the ``border`` heuristic on request (:mod:`.background`); otherwise none (the reference model
   has no notion of background: every pixel is a part).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partdisco.engine.inference.background import (
    BORDER_NOT_FOUND,
    background_mode,
    border_background_parts,
    own_background,
)
from partdisco.engine.inference.crop import crop_input, object_crop, paste_probs
from partdisco.engine.inference.discovered import discovered_masks
from partdisco.engine.inference.network import (
    BACKGROUND_CHANNEL,
    RESIZE_ALIGN,
    image_to_tensor,
    labels_from_probs,
    model_device,
    part_channels,
    predict_probs,
    predict_refined,
    processing_size,
    trained_default,
)
from partdisco.engine.inference.options import SegmentOptions
from partdisco.metrics.keypoints import part_centroids
from partdisco.visualise import resize_labels

logger = logging.getLogger(__name__)

MAX_PARTS = 255  # labels are stored as uint8


@dataclass
class PartMaps:
    """The segmentation of one image, at the image's size (H, W).

    Attributes:
        labels: uint8 (H, W), 0 = background, 1..K = parts.
        probs: float32 (C, H, W) softmax over the model's C channels (C = K, or K + 1 with channel 0 =
            background when the model has a background channel), or None when not requested.
        centroids: float32 (K, 2) soft part centroids (x, y) in pixels of the image (foreground-weighted).
        background: where background came from: ``"mask"``, ``"discovered"`` (the foreground classifier of
            discovery, ``model.inference_defaults.foreground``), ``"model"``, ``"border"`` or ``"none"``.
        note: why the background is not what was asked for, e.g. ``--background border`` that found no part
            covering most of the border (then ``background`` is ``"none"``); empty otherwise.
    """

    labels: np.ndarray
    probs: np.ndarray | None
    centroids: np.ndarray
    background: str
    note: str = ""


def _postprocess(
    probs: torch.Tensor,
    size: tuple[int, int],
    mask: np.ndarray | None,
    mode: str,
    background_channel: bool,
    with_probs: bool,
) -> PartMaps:
    """One image's (C, h', w') probabilities -> :class:`PartMaps` at (H, W)."""
    H, W = size
    C, h, w = probs.shape
    labels = labels_from_probs(probs[None], background_channel, use_background=mode == "model")[0]  # (h, w)
    parts = part_channels(probs, background_channel, dim=0)  # (K, h, w)
    fg = None
    note = ""
    if mode == "border":
        labels_np = labels.cpu().numpy()
        bg_parts = border_background_parts(labels_np)
        if bg_parts:
            bg = torch.from_numpy(np.isin(labels_np, bg_parts)).to(labels.device)  # (h, w)
            labels = labels.masked_fill(bg, 0)
            fg = (labels > 0).float()  # (h, w)
        else:  # say so rather than claim a border background that is not there
            mode, note = "none", BORDER_NOT_FOUND
    elif mode == "mask":
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(probs.device)  # (H, W)
        fg = F.interpolate(mask_t[None, None], size=(h, w), mode="bilinear", align_corners=RESIZE_ALIGN)[0, 0]
    centroids = part_centroids(parts[None], None if fg is None else fg[None, None])[0]  # (K, 2) at (h, w)
    centroids = centroids * torch.tensor([W / w, H / h], device=centroids.device)  # (K, 2) at (H, W)
    labels_full = resize_labels(labels.cpu().numpy(), (H, W)).astype(np.uint8)  # (H, W)
    if mode == "mask":
        labels_full[mask <= 0.5] = 0
    probs_full = None
    if with_probs:
        probs_full = F.interpolate(
            probs[None], size=(H, W), mode="bilinear", align_corners=RESIZE_ALIGN, antialias=H < h or W < w
        )[0]  # (C, H, W)
        probs_full = (probs_full / probs_full.sum(0, keepdim=True).clamp_min(1e-12)).cpu().numpy()
    return PartMaps(labels_full, probs_full, centroids.cpu().numpy().astype(np.float32), mode, note)


def segment_images(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    *,
    size: int | None = None,
    background: str = "auto",
    batch_size: int = 8,
    with_probs: bool = True,
    crop: str = "auto",
    padding: float | None = None,
    fg_refine: float | tuple[float, float] | None = None,
    names: Sequence[str] | None = None,
) -> list[PartMaps]:
    """Segment in-memory images of any sizes, batching those with the same processing size.

    Each image's result does not depend on the batch it ran in (no padding; the model runs in eval mode,
    restored afterwards).

    Object-centric inference (``crop="object"``, or ``"auto"`` when there is a foreground): the image is
    cropped around its foreground as training crops do (box of the foreground, ``padding`` per side,
    squared: :mod:`partdisco.engine.inference.crop`), the crop is segmented at ``size`` x ``size`` and the
    probabilities are pasted back at the image's size. The foreground is the mask when one is given, else
    the model's predicted foreground from a first pass on the whole image (two passes). Without either,
    or when it is empty, the whole image is segmented.

    Args:
        model: a Segmenter on its device; inputs follow its device.
        images: uint8 (H, W, 3) RGB arrays.
        masks: optional foreground per image, float (H, W) in [0, 1] (> 0.5 = foreground) or None.
        size: shorter side of the network input (see :func:`processing_size`); None = the model's
            training size (:func:`inference_size`).
        background: ``"auto"`` (mask, else the discovered foreground when the model carries the classifier
            of foreground discovery, else the model's background channel, else none), ``"model"`` (mask, else
            the model's background channel), ``"none"`` (every unmasked pixel is a part) or ``"border"``
            (:func:`border_background_parts`); a mask always wins.
        batch_size: images per forward pass, >= 1.
        with_probs: also return probabilities at image size.
        crop: ``"auto"`` (object crop when a mask or a predicted foreground exists), ``"object"`` (the
            same) or ``"none"`` (always the whole image, shorter side resized to ``size``).
        padding: per-side padding of the object crop; None = the checkpoint's ``data.padding_frac``
            (:func:`inference_padding`).
        fg_refine: the model's predicted foreground is refined along the colour edges of the network input
            (guided filter, :mod:`partdisco.engine.inference.refine`) with this window radius (fraction of the
            input's shorter side) in both passes; 0 = off; None = the checkpoint's
            ``eval.fg_refine_radius`` (:func:`inference_fg_refine`; a ``(radius, eps)`` pair sets the
            filter's ridge too). Only models with a background channel, only images whose background is
            the model's.
        names: what to call the images in warnings (file names); None = ``image INDEX``.

    Returns:
        One :class:`PartMaps` per image, in input order.

    Raises:
        ValueError: bad arguments, a non-RGB image, a mask of another size, or K > 255.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3)
        >>> out = segment_images(seg, [np.zeros((20, 30, 3), np.uint8)], size=32)
        >>> out[0].labels.shape, out[0].labels.dtype, out[0].probs.shape, out[0].background
        ((20, 30), dtype('uint8'), (3, 20, 30), 'none')
    """
    opts = SegmentOptions(size, background, batch_size, crop, padding, fg_refine).resolved(model)
    size, padding, refine = int(opts.size), float(opts.padding), opts.fg_refine  # type: ignore[arg-type]
    num_parts, background_channel = int(model.num_parts), bool(model.background_channel)
    if num_parts > MAX_PARTS:
        raise ValueError(f"the model has {num_parts} parts; label maps are uint8, so at most {MAX_PARTS}")
    _check_images(images, masks)
    device = model_device(model)
    masks, discovered = _with_discovered(model, images, masks, background, device, batch_size)
    object_crops = crop != "none"
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        if object_crops and masks is not None and masks[i] is not None:
            continue  # the mask gives the crop: no whole-image pass needed
        groups[processing_size(image.shape[0], image.shape[1], size)].append(i)
    results: list[PartMaps | None] = [None] * len(images)
    was_training = model.training
    model.eval()
    try:
        for proc_size, indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                x = torch.stack([image_to_tensor(images[i], proc_size, device) for i in chunk])
                own_bg = [own_background(background, masks, i, background_channel) for i in chunk]
                probs = predict_refined(model, x, refine, own_bg)  # (B, C, h', w')
                for j, i in enumerate(chunk):
                    mask = None if masks is None else masks[i]
                    mode = background_mode(background, mask is not None, background_channel)
                    results[i] = _postprocess(
                        probs[j], images[i].shape[:2], mask, mode, background_channel, with_probs
                    )
        if object_crops:
            _object_pass(
                model, images, masks, results, size, background, batch_size, with_probs, padding, device,
                refine, names,
            )  # fmt: skip
    finally:
        model.train(was_training)
    return [
        replace(r, background="discovered") if i in discovered else r
        for i, r in enumerate(results)
        if r is not None
    ]


def _with_discovered(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None,
    background: str,
    device: torch.device,
    batch_size: int,
) -> tuple[Sequence[np.ndarray | None] | None, set[int]]:
    """``masks`` completed with the discovered foreground, and the indices that got it.

    Only with ``background="auto"`` and a model that carries the classifier of foreground discovery.
    """
    clf = trained_default(model, "foreground")
    if clf is None or background != "auto":
        return masks, set()
    filled = list(masks) if masks is not None else [None] * len(images)
    todo = [i for i, m in enumerate(filled) if m is None]
    batch = batch_size if device.type == "cuda" else 1  # one image at a time is faster on a CPU
    for i, mask in zip(todo, discovered_masks(clf, [images[i] for i in todo], device, batch_size=batch)):
        filled[i] = mask
    return filled, set(todo)


def _check_images(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None) -> None:
    """Refuse anything but uint8 (H, W, 3) images, and masks of another count or size (ValueError)."""
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"got {len(masks)} masks for {len(images)} images")
    for i, image in enumerate(images):
        if not (
            isinstance(image, np.ndarray)
            and image.ndim == 3
            and image.shape[2] == 3
            and image.dtype == np.uint8
        ):
            raise ValueError(
                f"image {i}: expected uint8 (H, W, 3), got {getattr(image, 'dtype', type(image))} "
                f"{tuple(getattr(image, 'shape', ()))}"
            )
        mask = None if masks is None else masks[i]
        if mask is not None and tuple(mask.shape) != tuple(image.shape[:2]):
            raise ValueError(
                f"image {i}: mask {tuple(mask.shape)} must have the image's size {image.shape[:2]}"
            )


def _object_pass(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None,
    results: list[PartMaps | None],
    size: int,
    background: str,
    batch_size: int,
    with_probs: bool,
    padding: float,
    device: torch.device,
    refine: tuple[float, float] = (0.0, 1.0),
    names: Sequence[str] | None = None,
) -> None:
    """Second pass of object-centric inference: replace ``results[i]`` by the crop-and-paste maps."""
    background_channel = bool(model.background_channel)
    jobs: list[tuple[int, np.ndarray]] = []
    for i, image in enumerate(images):
        mask = None if masks is None else masks[i]
        if mask is not None:
            fg = mask
        elif results[i] is not None and results[i].background == "model":  # type: ignore[union-attr]
            fg = results[i].labels > 0  # type: ignore[union-attr]
        else:
            continue
        box = object_crop(fg, padding)
        if box is None:  # an empty foreground: keep the whole-image maps
            if mask is not None:
                shown = names[i] if names is not None else f"image {i}"
                logger.warning("%s: its mask is empty (no foreground pixel): all background", shown)
                groups_size = processing_size(image.shape[0], image.shape[1], size)
                probs = predict_probs(model, image_to_tensor(image, groups_size, device)[None])[0]
                mode = background_mode(background, True, background_channel)
                results[i] = _postprocess(probs, image.shape[:2], mask, mode, background_channel, with_probs)
            continue
        jobs.append((i, box))
    outside = None
    if background_channel:
        outside = torch.zeros(int(model.num_parts) + 1, device=device)
        outside[BACKGROUND_CHANNEL] = 1.0  # outside the object's crop is background
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        x = torch.stack([crop_input(images[i], box, size, device) for i, box in chunk])  # (B, 3, S, S)
        own_bg = [own_background(background, masks, i, background_channel) for i, _ in chunk]
        probs = predict_refined(model, x, refine, own_bg)  # (B, C, S, S)
        for j, (i, box) in enumerate(chunk):
            H, W = images[i].shape[:2]
            mask = None if masks is None else masks[i]
            mode = background_mode(background, mask is not None, background_channel)
            pasted = paste_probs(probs[j], box, (H, W), outside if mode == "model" else None)  # (C, H, W)
            results[i] = _postprocess(pasted, (H, W), mask, mode, background_channel, with_probs)
