"""Reading any segmenter file: recognise its layout and rebuild the model, ours or a foreign one.

:func:`load_checkpoint_file` is the one reader behind ``load``, ``eval``, ``segment`` and ``export``; it
returns a :class:`LoadedCheckpoint`. :func:`load_segmenter` keeps only the model.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from partdisco.models.checkpoint import segmenter_from_checkpoint_dict
from partdisco.models.foreign import detect_layout, segmenter_from_foreign
from partdisco.models.segmenter import PartSegmenter
from partdisco.models.weights import CheckpointError, load_file, resolve_checkpoint_path

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint file read and recognised: what :func:`load_checkpoint_file` returns.

    Attributes:
        path: the file (a run folder resolved to its ``model.pt``).
        layout: ``"partdisco"``, ``"unsup_parts"`` or ``"scops"`` (:func:`detect_layout`).
        segmenter: the rebuilt :class:`Segmenter`, weights loaded, in eval mode on the CPU.
        contents: the loaded file (ours: ``config``, ``step``, ``metrics``, ...).
    """

    path: Path
    layout: str
    segmenter: PartSegmenter
    contents: Any

    @property
    def ours(self) -> bool:
        """True for our own format (it may carry the run config)."""
        return self.layout == "partdisco"


def load_checkpoint_file(path: str | os.PathLike[str], allow_pickle: bool = False) -> LoadedCheckpoint:
    """Load a file and detect its layout: the one reader behind ``load``, ``eval``, ``segment``, ``export``.

    Args:
        path: the ``.pth`` / ``.pt`` file, or a run folder (its ``model.pt``).
        allow_pickle: see :func:`load_file`.

    Returns:
        The :class:`LoadedCheckpoint` (segmenter in eval mode, on the CPU).

    Raises:
        FileNotFoundError: no such file or run folder.
        CheckpointError: unreadable, unknown, or a backbone/VGG file rather than a segmenter; the message
            starts with the path.
        CheckpointMismatchError: weights and architecture disagree.
    """
    path = resolve_checkpoint_path(path)
    obj = load_file(path, allow_pickle=allow_pickle)
    try:
        layout = detect_layout(obj, hint=path.name)
        if layout == "partdisco":
            seg = segmenter_from_checkpoint_dict(obj)
        elif layout in ("unsup_parts", "scops"):
            seg = segmenter_from_foreign(obj)
        else:
            raise CheckpointError(
                f"holds {layout} weights (a backbone or feature network, no part head); use it as "
                "model.init_from (ResNet) or model.features_weights (VGG19)"
            )
    except CheckpointError as err:
        raise type(err)(f"{str(path)!r}: {err}") from None
    logger.debug("loaded %s segmenter %s (K=%d) from %s", layout, seg.arch, seg.num_parts, path)
    return LoadedCheckpoint(path=path, layout=layout, segmenter=seg.eval(), contents=obj)


def load_segmenter(path: str | os.PathLike[str], allow_pickle: bool = False) -> PartSegmenter:
    """Load a trained segmenter from ours, an unsup-parts or a SCOPS file, ready for inference.

    Args:
        path: the ``.pth`` file, or a run folder (its ``model.pt``).
        allow_pickle: see :func:`load_file`.

    Returns:
        The :class:`Segmenter` in eval mode, on the CPU (:func:`load_checkpoint_file`'s segmenter).

    Raises:
        CheckpointError: unreadable, unknown, or a backbone/VGG file rather than a segmenter.
        CheckpointMismatchError: weights and architecture disagree.
    """
    loaded = load_checkpoint_file(path, allow_pickle=allow_pickle)
    seg = loaded.segmenter
    logger.info("loaded %s segmenter %s (K=%d) from %s", loaded.layout, seg.arch, seg.num_parts, loaded.path)
    return seg
