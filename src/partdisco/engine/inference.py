"""Images in, part maps out: the one place that runs a segmenter for inference.

Used by the training pictures and diagnostics, the evaluator (:func:`network_logits`), ``partdisco segment``
(:mod:`partdisco.engine.segment`, the folder-in / files-out application on top of this module) and the
Python API (:func:`partdisco.segment`).

Pipeline of :func:`segment_images` per image (sizes H x W):

1. Resize so the shorter side is ``size`` (bilinear, area-aware when shrinking) -> (h', w')
   (:func:`processing_size`, :func:`image_to_tensor`), or crop around the object first (object-centric
   inference, :mod:`partdisco.engine.crop`).
2. ``model(preprocess(x))`` -> logits (B, C, h, w) at the output stride, C = K or K + 1
   (:func:`network_logits`); bilinear upsampling to (h', w') with ``ALIGN_TRAIN`` (the training
   convention, :mod:`partdisco.geometry.logits`), softmax -> probabilities (:func:`predict_probs`).
3. Labels at (h', w'): ``argmax + 1`` over the K parts, or ``argmax`` over K + 1 channels when the
   model's channel 0 is background (:func:`labels_from_probs`); then back to (H, W) by nearest (labels) and
   bilinear (probabilities, ``align_corners=RESIZE_ALIGN``: both resizes map pixel areas, as PIL does).
4. Background (0) from, in order: a mask, the model's background channel, the ``border`` heuristic on
   request; otherwise none (the reference model has no notion of background: every pixel is a part).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partdisco.config import ConfigError
from partdisco.data.transforms import RESIZE_ALIGN_CORNERS
from partdisco.engine import distributed as dist_utils
from partdisco.engine.crop import crop_input, object_crop, paste_probs
from partdisco.engine.refine import refine_probs
from partdisco.geometry.logits import ALIGN_TRAIN, upsample_logits
from partdisco.metrics.keypoints import part_centroids
from partdisco.visualise import resize_labels

logger = logging.getLogger(__name__)

RESIZE_ALIGN = RESIZE_ALIGN_CORNERS  # image <-> processing size: pixel-area mapping (PIL convention)
BACKGROUND_MODES = ("auto", "none", "border")
CROP_MODES = ("auto", "object", "none")
BORDER_RING = 0.05  # border heuristic: ring width as a fraction of the shorter side (at least 1 px)
BORDER_SHARE = 0.5  # ... a part covering more than this share of the ring is background
MAX_PARTS = 255  # labels are stored as uint8
BORDER_NOT_FOUND = "--background border found no part covering most of the image border: no background"
DEFAULT_IMAGE_SIZE = 256  # ref: input_size 256; used only when a model does not know its training size
DEFAULT_PADDING = 0.05  # ref: cub.py padding_frac; used only when a model does not know its training crop
DEFAULT_FG_REFINE = (0.0625, 0.001)  # eval.fg_refine_radius / _eps; for models that do not know theirs


@dataclass
class PartMaps:
    """The segmentation of one image, at the image's size (H, W).

    Attributes:
        labels: uint8 (H, W), 0 = background, 1..K = parts.
        probs: float32 (C, H, W) softmax over the model's C channels (C = K, or K + 1 with channel 0 =
            background when the model has a background channel), or None when not requested.
        centroids: float32 (K, 2) soft part centroids (x, y) in pixels of the image (foreground-weighted).
        background: where background came from: ``"mask"``, ``"model"``, ``"border"`` or ``"none"``.
        note: why the background is not what was asked for, e.g. ``--background border`` that found no part
            covering most of the border (then ``background`` is ``"none"``); empty otherwise.
    """

    labels: np.ndarray
    probs: np.ndarray | None
    centroids: np.ndarray
    background: str
    note: str = ""


def inference_size(model: nn.Module, size: int | None = None) -> int:
    """The shorter image side fed to the network: ``size`` when given, else the model's training size.

    The one place that picks the default, for :func:`partdisco.segment`, ``partdisco segment`` and
    :func:`segment_files`: ``model.inference_defaults`` (``data.image_size`` of its checkpoint's training),
    else :data:`DEFAULT_IMAGE_SIZE` (released checkpoints, fresh models).

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3)
        >>> inference_size(seg), inference_size(seg, 64)
        (256, 64)
        >>> from partdisco.models import InferenceDefaults
        >>> seg.inference_defaults = InferenceDefaults(image_size=96)
        >>> inference_size(seg)
        96
    """
    if size is not None:
        return int(size)
    trained = getattr(getattr(model, "inference_defaults", None), "image_size", None)
    return int(trained) if trained else DEFAULT_IMAGE_SIZE


def inference_padding(model: nn.Module, padding: float | None = None) -> float:
    """The object crop's padding per side: ``padding`` when given, else the model's training padding.

    The one place that picks the default, as :func:`inference_size` does for the size: the model's
    ``inference_defaults`` (the ``data.padding_frac`` of its checkpoint), else :data:`DEFAULT_PADDING`.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3)
        >>> inference_padding(seg), inference_padding(seg, 0.2)
        (0.05, 0.2)
        >>> from partdisco.models import InferenceDefaults
        >>> seg.inference_defaults = InferenceDefaults(crop_padding=0.1)
        >>> inference_padding(seg)
        0.1
    """
    if padding is not None:
        return float(padding)
    trained = getattr(getattr(model, "inference_defaults", None), "crop_padding", None)
    return float(trained) if trained is not None else DEFAULT_PADDING


def inference_fg_refine(
    model: nn.Module, radius: float | tuple[float, float] | None = None
) -> tuple[float, float]:
    """The predicted foreground's refinement ``(radius, eps)``: ``radius`` when given, else the model's.

    The one place that picks the default, as :func:`inference_padding` does for the crop: the model's
    ``inference_defaults`` (``eval.fg_refine_radius`` / ``eval.fg_refine_eps`` of its checkpoint), else
    :data:`DEFAULT_FG_REFINE`. A given radius keeps the model's ``eps`` (a given ``(radius, eps)`` pair
    replaces both); radius 0 turns the refinement off.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3, background_channel=True)
        >>> inference_fg_refine(seg), inference_fg_refine(seg, 0.0)
        ((0.0625, 0.001), (0.0, 0.001))
        >>> from partdisco.models import InferenceDefaults
        >>> seg.inference_defaults = InferenceDefaults(fg_refine=(0.1, 0.01))
        >>> inference_fg_refine(seg), inference_fg_refine(seg, (0.05, 0.002))
        ((0.1, 0.01), (0.05, 0.002))
    """
    trained = getattr(getattr(model, "inference_defaults", None), "fg_refine", None)
    default_radius, eps = trained if trained is not None else DEFAULT_FG_REFINE
    if isinstance(radius, (tuple, list)):
        radius, eps = radius
    radius = default_radius if radius is None else float(radius)
    if not 0.0 <= radius < 0.5:
        raise ValueError(f"fg_refine must be in [0, 0.5) (0 = off), got {radius}")
    if not eps > 0:
        raise ValueError(f"the foreground refinement's eps must be > 0, got {eps}")
    return float(radius), float(eps)


def _predict(
    model: nn.Module, x: torch.Tensor, refine: tuple[float, float], rows: Sequence[bool] | None = None
) -> torch.Tensor:
    """:func:`predict_probs`, with the predicted foreground refined (:func:`.refine.refine_probs`).

    Only a model with a background channel is refined, and only the ``rows`` whose background is the
    model's (all when None); ``x`` (B, 3, H, W) in [0, 1] is the guide.
    """
    probs = predict_probs(model, x)  # (B, C, H, W)
    if not bool(getattr(model, "background_channel", False)) or refine[0] <= 0:
        return probs
    keep = list(range(len(x))) if rows is None else [j for j, r in enumerate(rows) if r]
    if keep:
        idx = torch.tensor(keep, device=probs.device)
        probs[idx] = refine_probs(probs[idx], x[idx], *refine)
    return probs


MAX_ASPECT = 4  # the network input's longer side is at most MAX_ASPECT * size


def model_device(model: nn.Module) -> torch.device:
    """Where a segmenter's inputs go: its parameters' device (CPU for one without, e.g. an ONNX model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def processing_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The network input size: the shorter side becomes ``size``, the aspect ratio is kept.

    The longer side is at most ``MAX_ASPECT * size`` (then the shorter side is below ``size``), so memory
    stays bounded for extreme strips.

    Args:
        height: image height H >= 1.
        width: image width W >= 1.
        size: target of the shorter side, >= 1.

    Returns:
        (h', w') with ``min(h', w') == size`` (aspect ratios up to ``MAX_ASPECT``).

    Example:
        >>> processing_size(300, 400, 256), processing_size(100, 50, 64), processing_size(1, 5000, 256)
        ((256, 341), (128, 64), (1, 1024))
    """
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"processing_size: need positive sizes, got H={height}, W={width}, size={size}")
    # the longer side is capped: a 1 x 5000 strip would otherwise become a 256 x 1.28M input (gigabytes)
    scale = min(size / min(height, width), MAX_ASPECT * size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def image_to_tensor(
    image: np.ndarray, size: tuple[int, int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Resize a uint8 RGB image to the processing size as a float tensor.

    Args:
        image: uint8 (H, W, 3) RGB.
        size: (h', w').
        device: where to resize (the uint8 image is moved there first: 4x less to copy than floats).

    Returns:
        float32 (3, h', w') in [0, 1] on ``device`` (bilinear, antialiased when shrinking).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected image uint8 (H, W, 3), got {image.dtype} {tuple(image.shape)}")
    x = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(device)  # (H, W, 3) uint8
    x = x.permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    if tuple(x.shape[1:]) == tuple(size):
        return x
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=RESIZE_ALIGN, antialias=True)
    return x[0].clamp_(0.0, 1.0)  # (3, h', w')


def network_logits(model: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """The network's raw logits for RGB images: ``model(model.preprocess(x))`` in float32.

    Args:
        model: a segmenter (``preprocess`` attribute, ``forward -> (B, C, h, w)``).
        images01: float (B, 3, H, W) RGB in [0, 1] on the model's device.

    Returns:
        float32 (B, C, h, w) at the model's output grid (C = K, or K + 1 with channel 0 = background).
    """
    if images01.ndim != 4 or images01.shape[1] != 3:
        raise ValueError(f"expected images01 (B, 3, H, W), got {tuple(images01.shape)}")
    return model(model.preprocess(images01)).float()


@torch.no_grad()
def predict_probs(model: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """Part probabilities at the input size.

    Args:
        model: a Segmenter (``preprocess`` attribute, ``forward -> (B, C, h, w)`` logits).
        images01: float (B, 3, H, W) RGB in [0, 1] on the model's device.

    Returns:
        float32 (B, C, H, W): softmax over channels of the logits upsampled bilinearly with
        ``align_corners=ALIGN_TRAIN``.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3).eval()
        >>> p = predict_probs(seg, torch.rand(2, 3, 32, 48))
        >>> tuple(p.shape), bool(torch.allclose(p.sum(1), torch.ones(2, 32, 48)))
        ((2, 3, 32, 48), True)
    """
    logits = network_logits(model, images01)  # (B, C, h, w)
    return upsample_logits(logits, images01.shape[-2:], align_corners=ALIGN_TRAIN).softmax(dim=1)


def labels_from_probs(probs: torch.Tensor, background_channel: bool, use_background: bool) -> torch.Tensor:
    """Hard labels from probabilities (or from logits: only the argmax is taken).

    Args:
        probs: float (B, C, H, W) probabilities or logits.
        background_channel: channel 0 of ``probs`` is background (C = K + 1).
        use_background: let that channel win pixels (label 0); False labels every pixel with a part.

    Returns:
        int64 (B, H, W): ``argmax`` (0 = background) with a used background channel, else
        ``argmax over the K parts + 1``.

    Example:
        >>> p = torch.tensor([[0.6, 0.3, 0.1]]).view(1, 3, 1, 1)
        >>> labels_from_probs(p, True, True).item(), labels_from_probs(p, True, False).item()
        (0, 1)
    """
    if background_channel and use_background:
        return probs.argmax(dim=1)
    parts = probs[:, 1:] if background_channel else probs  # (B, K, H, W)
    return parts.argmax(dim=1) + 1


def border_background_parts(
    labels: np.ndarray, ring: float = BORDER_RING, share: float = BORDER_SHARE
) -> list[int]:
    """The ``border`` heuristic: parts that cover most of a ring along the image border are background.

    Objects are usually framed by background, so the part that fills the image border is taken to be it.
    With ``share >= 0.5`` at most one part qualifies; a centred object whose parts touch the border only
    a little keeps all its parts.

    Args:
        labels: (H, W) integer part labels (1..K).
        ring: ring width as a fraction of the shorter side (at least one pixel).
        share: a part covering more than this share of the ring's pixels is background, in (0, 1).

    Returns:
        The background part labels, sorted (possibly empty).

    Example:
        >>> lab = np.ones((10, 10), dtype=np.int64); lab[3:7, 3:7] = 2
        >>> border_background_parts(lab)
        [1]
    """
    if labels.ndim != 2:
        raise ValueError(f"border_background_parts: expected labels (H, W), got {labels.shape}")
    if not 0.0 < share < 1.0:
        raise ValueError(f"border_background_parts: share must be in (0, 1), got {share}")
    H, W = labels.shape
    width = max(1, round(ring * min(H, W)))
    ring_mask = np.ones((H, W), dtype=bool)
    ring_mask[width : H - width, width : W - width] = False
    counts = np.bincount(labels[ring_mask].ravel())
    total = int(ring_mask.sum())
    return [int(k) for k in np.nonzero(counts > share * total)[0] if k > 0]


def _background_mode(background: str, has_mask: bool, background_channel: bool) -> str:
    if has_mask:
        return "mask"
    if background == "border":
        return "border"
    if background == "auto" and background_channel:
        return "model"
    return "none"


def _own_background(
    background: str, masks: Sequence[np.ndarray | None] | None, i: int, background_channel: bool
) -> bool:
    """Whether image ``i``'s background is the model's prediction (then its foreground is refined)."""
    has_mask = masks is not None and masks[i] is not None
    return _background_mode(background, has_mask, background_channel) == "model"


def check_background(background: str) -> None:
    """Raise ValueError unless ``background`` is one of :data:`BACKGROUND_MODES`."""
    if background not in BACKGROUND_MODES:
        raise ValueError(f"background must be one of {BACKGROUND_MODES}, got {background!r}")


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
    parts = probs[1:] if background_channel else probs  # (K, h, w)
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
    squared: :mod:`partdisco.engine.crop`), the crop is segmented at ``size`` x ``size`` and the
    probabilities are pasted back at the image's size. The foreground is the mask when one is given, else
    the model's predicted foreground from a first pass on the whole image (two passes). Without either,
    or when it is empty, the whole image is segmented.

    Args:
        model: a Segmenter on its device; inputs follow its device.
        images: uint8 (H, W, 3) RGB arrays.
        masks: optional foreground per image, float (H, W) in [0, 1] (> 0.5 = foreground) or None.
        size: shorter side of the network input (see :func:`processing_size`); None = the model's
            training size (:func:`inference_size`).
        background: ``"auto"`` (mask, else the model's background channel, else none), ``"none"`` (every
            unmasked pixel is a part) or ``"border"`` (:func:`border_background_parts`); a mask always wins.
        batch_size: images per forward pass, >= 1.
        with_probs: also return probabilities at image size.
        crop: ``"auto"`` (object crop when a mask or a predicted foreground exists), ``"object"`` (the
            same) or ``"none"`` (always the whole image, shorter side resized to ``size``).
        padding: per-side padding of the object crop; None = the checkpoint's ``data.padding_frac``
            (:func:`inference_padding`).
        fg_refine: the model's predicted foreground is refined along the colour edges of the network input
            (guided filter, :mod:`partdisco.engine.refine`) with this window radius (fraction of the
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
    check_background(background)
    size = inference_size(model, size)
    padding = inference_padding(model, padding)
    refine = inference_fg_refine(model, fg_refine)
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    if not 0.0 <= padding < 1.0:
        raise ValueError(f"padding must be in [0, 1), got {padding}")
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got size={size}, batch_size={batch_size}")
    num_parts, background_channel = int(model.num_parts), bool(model.background_channel)
    if num_parts > MAX_PARTS:
        raise ValueError(f"the model has {num_parts} parts; label maps are uint8, so at most {MAX_PARTS}")
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
    device = model_device(model)
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
                own_bg = [_own_background(background, masks, i, background_channel) for i in chunk]
                probs = _predict(model, x, refine, own_bg)  # (B, C, h', w')
                for j, i in enumerate(chunk):
                    mask = None if masks is None else masks[i]
                    mode = _background_mode(background, mask is not None, background_channel)
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
    return [r for r in results if r is not None]


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
                mode = _background_mode(background, True, background_channel)
                results[i] = _postprocess(probs, image.shape[:2], mask, mode, background_channel, with_probs)
            continue
        jobs.append((i, box))
    outside = None
    if background_channel:
        outside = torch.zeros(int(model.num_parts) + 1, device=device)
        outside[0] = 1.0  # outside the object's crop is background
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        x = torch.stack([crop_input(images[i], box, size, device) for i, box in chunk])  # (B, 3, S, S)
        own_bg = [_own_background(background, masks, i, background_channel) for i, _ in chunk]
        probs = _predict(model, x, refine, own_bg)  # (B, C, S, S)
        for j, (i, box) in enumerate(chunk):
            H, W = images[i].shape[:2]
            mask = None if masks is None else masks[i]
            mode = _background_mode(background, mask is not None, background_channel)
            pasted = paste_probs(probs[j], box, (H, W), outside if mode == "model" else None)  # (C, H, W)
            results[i] = _postprocess(pasted, (H, W), mask, mode, background_channel, with_probs)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's CUDA device if available, else CPU; ``cuda`` -> this rank's CUDA device.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_utils.local_rank())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; use device=cpu or device=auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist_utils.local_rank())
    return device


@torch.no_grad()
def predict_labels(
    model: nn.Module, image: torch.Tensor, fg_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Part labels at input resolution: 0 = background (from the mask or channel), 1..K = parts.

    For batches already at the network's size (training pictures, diagnostics); whole files go through
    :func:`segment_images`.

    Args:
        model: segmenter (eval mode is set by the caller).
        image: (B, 3, H, W) RGB in [0, 1] on the model's device.
        fg_mask: optional (B, 1, H, W) foreground; pixels with mask <= 0.5 become 0.

    Returns:
        (B, H, W) int64 labels.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3).eval()
        >>> labels = predict_labels(seg, torch.rand(1, 3, 32, 32))
        >>> tuple(labels.shape), 1 <= int(labels.min()) and int(labels.max()) <= 3
        ((1, 32, 32), True)
    """
    logits = upsample_logits(network_logits(model, image), image.shape[-2:], align_corners=ALIGN_TRAIN)
    labels = labels_from_probs(logits, bool(model.background_channel), use_background=True)  # (B, H, W)
    if fg_mask is not None:
        labels = torch.where(fg_mask[:, 0] > 0.5, labels, torch.zeros_like(labels))
    return labels
