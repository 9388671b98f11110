"""How images are segmented: :class:`SegmentOptions`, the one carrier of segment's inference options.

``partdisco segment`` and :func:`partdisco.segment` / :func:`partdisco.segment_files` take these options as
keywords (their public signatures); below the API they travel as one :class:`SegmentOptions`
(:func:`partdisco.engine.segment.run.segment_files`), and :meth:`SegmentOptions.resolved` is the one place
that fills in the model's defaults and checks them (also for :func:`.images.segment_images`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from partdisco.engine.inference.background import check_background
from partdisco.engine.inference.network import inference_fg_refine, inference_padding, inference_size

CROP_MODES = ("auto", "object", "none")


@dataclass(frozen=True)
class SegmentOptions:
    """The inference options of segment.

    Attributes:
        size: shorter side of the network input; None = the model's training size (``inference_size``).
        background: ``"auto"``, ``"model"``, ``"none"`` or ``"border"`` (:mod:`.background`).
        batch_size: images per forward pass, >= 1.
        crop: object-centric inference, ``"auto"``, ``"object"`` or ``"none"`` (:mod:`.crop`).
        padding: per-side padding of the object crop; None = the model's (``inference_padding``).
        fg_refine: refinement of a predicted foreground, a radius or ``(radius, eps)``; None = the model's
            (``inference_fg_refine``).

    Example:
        >>> from partdisco.models import create_segmenter
        >>> SegmentOptions(crop="none").resolved(create_segmenter("resnet18", num_parts=3)).size
        256
    """

    size: int | None = None
    background: str = "auto"
    batch_size: int = 8
    crop: str = "auto"
    padding: float | None = None
    fg_refine: float | tuple[float, float] | None = None

    def resolved(self, model: nn.Module) -> SegmentOptions:
        """These options with the model's defaults filled in (size, padding, ``(radius, eps)``), checked.

        Raises:
            ValueError: an unknown background or crop mode, padding outside [0, 1), size or batch size < 1.
        """
        check_background(self.background)
        size = inference_size(model, self.size)
        padding = inference_padding(model, self.padding)
        refine = inference_fg_refine(model, self.fg_refine)
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {self.crop!r}")
        if not 0.0 <= padding < 1.0:
            raise ValueError(f"padding must be in [0, 1), got {padding}")
        if size < 1 or self.batch_size < 1:
            raise ValueError(
                f"size and batch_size must be >= 1, got size={size}, batch_size={self.batch_size}"
            )
        return replace(self, size=size, padding=padding, fg_refine=refine)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keywords of :func:`.images.segment_images`."""
        return {
            "size": self.size,
            "background": self.background,
            "batch_size": self.batch_size,
            "crop": self.crop,
            "padding": self.padding,
            "fg_refine": self.fg_refine,
        }
