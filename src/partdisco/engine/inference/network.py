"""The network side of inference: its defaults and input size; tensors in, logits / probabilities / labels.

What a model runs with when not told (:func:`inference_size`, :func:`inference_padding`,
:func:`inference_fg_refine`, :func:`resolve_device`), the processing size and input tensor
(:func:`processing_size`, :func:`image_to_tensor`), and the network's outputs (:func:`network_logits`,
:func:`predict_probs`, :func:`labels_from_probs`, :func:`predict_labels`). With a background channel the
model has C = K + 1 outputs and channel :data:`BACKGROUND_CHANNEL` (0) is background: :func:`part_channels`
takes the K parts. Used by training pictures, diagnostics, the evaluator and :mod:`.images`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partdisco.config import ConfigError
from partdisco.data.transforms import RESIZE_ALIGN_CORNERS
from partdisco.engine import distributed as dist_utils
from partdisco.engine.inference.refine import refine_probs
from partdisco.geometry.logits import ALIGN_TRAIN, upsample_logits

logger = logging.getLogger(__name__)

RESIZE_ALIGN = RESIZE_ALIGN_CORNERS  # image <-> processing size: pixel-area mapping (PIL convention)
DEFAULT_IMAGE_SIZE = 256  # ref: input_size 256; used only when a model does not know its training size
DEFAULT_PADDING = 0.05  # ref: cub.py padding_frac; used only when a model does not know its training crop
DEFAULT_FG_REFINE = (0.0625, 0.001)  # eval.fg_refine_radius / _eps; for models that do not know theirs
BACKGROUND_CHANNEL = 0  # with a background channel (C = K + 1 outputs), channel 0 is background


def trained_default(model: nn.Module, name: str) -> Any:
    """The model's own inference default ``name`` (``InferenceDefaults`` field), None when it has none."""
    return getattr(getattr(model, "inference_defaults", None), name, None)


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
    trained = trained_default(model, "image_size")
    return int(trained) if trained else DEFAULT_IMAGE_SIZE


def inference_padding(model: nn.Module, padding: float | None = None) -> float:
    """The object crop's padding per side: ``padding`` when given, else the model's training padding.

    The one place that picks the default, as :func:`inference_size` does for the size: the model's
    ``inference_defaults`` (the ``data.padding_frac`` of its checkpoint), else :data:`DEFAULT_PADDING`.

    Example (any module; one without ``inference_defaults`` gets the default):
        >>> import torch
        >>> from partdisco.models import InferenceDefaults
        >>> plain, trained = torch.nn.Module(), torch.nn.Module()
        >>> trained.inference_defaults = InferenceDefaults(crop_padding=0.1)
        >>> [inference_padding(m) for m in (plain, trained)], inference_padding(trained, 0.2)
        ([0.05, 0.1], 0.2)
    """
    if padding is not None:
        return float(padding)
    trained = trained_default(model, "crop_padding")
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
    trained = trained_default(model, "fg_refine")
    default_radius, eps = trained if trained is not None else DEFAULT_FG_REFINE
    if isinstance(radius, (tuple, list)):
        radius, eps = radius
    radius = default_radius if radius is None else float(radius)
    if not 0.0 <= radius < 0.5:
        raise ValueError(f"fg_refine must be in [0, 0.5) (0 = off), got {radius}")
    if not eps > 0:
        raise ValueError(f"the foreground refinement's eps must be > 0, got {eps}")
    return float(radius), float(eps)


def predict_refined(
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


def part_channels(x: torch.Tensor, background_channel: bool, dim: int = 1) -> torch.Tensor:
    """The K part channels of ``x`` along ``dim``: all channels, or all but :data:`BACKGROUND_CHANNEL`.

    Example:
        >>> x = torch.arange(3.0).view(1, 3, 1, 1)
        >>> part_channels(x, True).flatten().tolist(), part_channels(x[0], False, dim=0).flatten().tolist()
        ([1.0, 2.0], [0.0, 1.0, 2.0])
    """
    return x.narrow(dim, BACKGROUND_CHANNEL + 1, x.shape[dim] - 1) if background_channel else x


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
    # max(dim).indices == argmax(dim) (the first maximal index), and is ~20x faster for a few channels on
    # the CPU (argmax over a non-innermost dim was 0.05 s of a 512-px image's 0.1 s in segment, issue #24).
    if background_channel and use_background:
        return probs.max(dim=1).indices
    parts = part_channels(probs, background_channel)  # (B, K, H, W)
    return parts.max(dim=1).indices + 1


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
