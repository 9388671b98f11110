"""Where the background (label 0) comes from: the ``--background`` modes and the ``border`` heuristic.

In order: a mask, the foreground discovery learnt over the training photos when the model carries its
classifier (``auto``; :mod:`.discovered`), the model's background channel (``auto`` or ``model``), the
``border`` heuristic on request (:func:`border_background_parts`); otherwise none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

BACKGROUND_MODES = ("auto", "model", "none", "border")
BORDER_RING = 0.05  # border heuristic: ring width as a fraction of the shorter side (at least 1 px)
BORDER_SHARE = 0.5  # ... a part covering more than this share of the ring is background
BORDER_NOT_FOUND = "--background border found no part covering most of the image border: no background"


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


def background_mode(background: str, has_mask: bool, background_channel: bool) -> str:
    """Where one image's background comes from: ``mask``, ``border``, ``model`` or ``none``.

    (A discovered foreground arrives as a mask: :func:`partdisco.engine.inference.segment_images` reports
    it as ``discovered``.)
    """
    if has_mask:
        return "mask"
    if background == "border":
        return "border"
    if background in ("auto", "model") and background_channel:
        return "model"
    return "none"


def own_background(
    background: str, masks: Sequence[np.ndarray | None] | None, i: int, background_channel: bool
) -> bool:
    """Whether image ``i``'s background is the model's prediction (then its foreground is refined)."""
    has_mask = masks is not None and masks[i] is not None
    return background_mode(background, has_mask, background_channel) == "model"


def check_background(background: str) -> None:
    """Raise ValueError unless ``background`` is one of :data:`BACKGROUND_MODES`."""
    if background not in BACKGROUND_MODES:
        raise ValueError(f"background must be one of {BACKGROUND_MODES}, got {background!r}")
