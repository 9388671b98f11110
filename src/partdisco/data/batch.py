"""Typed batches and what a data set declares about itself.

A data set returns one sample dict per index (keys in docs/ARCHITECTURE.md); :func:`collate` stacks
samples into a :class:`Batch`, whose optional fields are None when the data set does not provide them.
Every data set derives from :class:`PartsDataset`, whose class attributes say what it provides, so the
engine reads ``dataset.has_masks`` instead of probing with ``getattr``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ["Batch", "PartsDataset", "collate"]


class PartsDataset(torch.utils.data.Dataset):
    """What every partdisco data set declares (class attributes; instances may override them).

    Attributes:
        keypoint_names: names of the N keypoints (samples carry ``keypoints``), or None.
        part_names: names of ground-truth labels 1..P (samples carry ``parts``), or None.
        has_masks: whether ``fg_mask`` comes from annotations (False: all ones).
        flip_permutation: keypoint row order after a horizontal flip (N ints), or None.
        full_labels: how the Full protocol labels pixels: None (the K + 1 labels with the mask's
            background) or ``"mask_levels"`` (DeepFashion's published protocol, samples carry
            ``mask_levels``).
        full_metrics_suffix: None when the data set has no published Full protocol (the Full metrics
            use its own masks), ``""`` for the published protocol, else the suffix appended to the Full
            metric names of a variant that is not the published one (e.g. ``"_padded_gtmask"``).
        skipped: names of samples skipped because a file could not be read (set per instance).
    """

    keypoint_names: list[str] | None = None
    part_names: list[str] | None = None
    has_masks: bool = True
    flip_permutation: list[int] | None = None
    full_labels: str | None = None
    full_metrics_suffix: str | None = None
    skipped: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.skipped = []

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, item: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_sample(self, index: int, rng: Any = None) -> dict[str, Any]:
        """Sample ``index`` read directly, unaugmented when ``rng`` is None (errors are not skipped).

        File-backed sets override it (``data.io.SampleDataset``); the default indexes the data set.
        """
        return self[index]


@dataclass
class Batch:
    """B samples stacked (shapes in docs/ARCHITECTURE.md); optional fields are None when not provided.

    Attributes:
        image: float32 (B, 3, H, W) in [0, 1].
        fg_mask: float32 (B, 1, H, W) in [0, 1].
        bbox: float32 (B, 4), (x0, y0, x1, y1) in pixels.
        class_id: int64 (B,).
        index: int64 (B,).
        name: B names.
        parts: int64 (B, H, W) ground-truth part labels, or None.
        keypoints: float32 (B, N, 3) (x, y, visible), or None.
        mask_levels: float32 (B, 1, H, W) raw mask levels (DeepFashion Full protocol), or None.

    ``batch["image"]`` and ``"parts" in batch`` work too (None fields are absent), for code written
    against the sample dicts.

    Example:
        >>> s = {"image": torch.zeros(3, 2, 2), "fg_mask": torch.ones(1, 2, 2), "bbox": torch.zeros(4),
        ...      "class_id": torch.tensor(0), "index": torch.tensor(7), "name": "a"}
        >>> b = collate([s, s])
        >>> tuple(b.image.shape), b.name, b.parts is None, "parts" in b, len(b)
        ((2, 3, 2, 2), ['a', 'a'], True, False, 2)
    """

    image: Tensor
    fg_mask: Tensor
    bbox: Tensor
    class_id: Tensor
    index: Tensor
    name: list[str]
    parts: Tensor | None = None
    keypoints: Tensor | None = None
    mask_levels: Tensor | None = None

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in _FIELDS else None
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in _FIELDS and getattr(self, str(key)) is not None

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors (called by ``DataLoader(pin_memory=True)``)."""
        return Batch(
            **{
                f: v.pin_memory() if isinstance(v, Tensor) else v
                for f, v in ((f, getattr(self, f)) for f in _FIELDS)
            }
        )


_FIELDS = tuple(f.name for f in fields(Batch))
_REQUIRED = ("image", "fg_mask", "bbox", "class_id", "index", "name")


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Stack sample dicts into a :class:`Batch` (tensors stacked, names listed).

    Raises:
        ValueError: an empty list, samples with different keys, a missing or unknown key, or tensors of
            different shapes (the message names the first offending sample or key).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys = samples[0].keys()
    for s in samples[1:]:
        if s.keys() != keys:
            raise ValueError(
                f"sample {s.get('name')!r} has keys {sorted(s)} but the first has {sorted(keys)}"
            )
    missing = [k for k in _REQUIRED if k not in keys]
    unknown = [k for k in keys if k not in _FIELDS]
    if missing or unknown:
        raise ValueError(
            f"sample {samples[0].get('name')!r}: missing keys {missing}, unknown keys {unknown} "
            f"(a sample has {list(_FIELDS)})"
        )
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key == "name":
            batch[key] = [str(v) for v in values]
            continue
        values = [v if isinstance(v, Tensor) else torch.as_tensor(v) for v in values]
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(f"cannot batch {key!r} of different shapes {sorted(shapes)}; use batch size 1")
        batch[key] = torch.stack(values)
    return Batch(**batch)
