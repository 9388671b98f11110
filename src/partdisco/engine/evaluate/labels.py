"""The labels each protocol scores, from a model's logits: FG / Full / predicted-background labels.

Also :func:`iterate_batches`, the evaluation batches (equal image sizes, sharded over ranks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from partdisco.data import Batch, PartsDataset, collate
from partdisco.engine import distributed as dist_utils
from partdisco.engine.inference.network import network_logits, part_channels
from partdisco.engine.inference.refine import refine_probs
from partdisco.geometry.logits import ALIGN_KEYPOINTS, upsample_logits
from partdisco.metrics.keypoints import (
    logits_to_labels,
)

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


def fg_and_full_labels(
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
    edges of ``image`` (B, 3, H, W in [0, 1]; :func:`partdisco.engine.inference.refine.refine_probs`)
    before the argmax over the K + 1 channels.
    """
    if refine[0] <= 0:
        return logits_to_labels(all_logits, size, align_corners=align_corners)
    up = upsample_logits(all_logits, size, align_corners=align_corners)  # (B, K + 1, H, W)
    probs = refine_probs(torch.softmax(up, dim=1), image.float(), *refine)  # (B, K + 1, H, W)
    return probs.max(dim=1).indices  # == argmax(dim=1), much faster on the CPU (labels_from_probs)


def split_part_logits(
    model: torch.nn.Module, image: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(K part logits, all K + 1 logits or None): the network's logits without its background channel."""
    logits = network_logits(model, image)  # (B, K(+1), h, w)
    if model.background_channel:
        return part_channels(logits, True), logits
    return logits, None


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
