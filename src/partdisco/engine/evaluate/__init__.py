"""Evaluation of a segmenter against a data set's keypoints, part maps and masks.

Rooms: :mod:`.protocols` (:func:`evaluate`: the keypoint, pixel, baseline and Full protocols on the data
pipeline's crops, :func:`metric_warnings`), :mod:`.labels` (logits -> the labels each protocol scores,
:func:`iterate_batches`), :mod:`.accumulators` (the streaming contingency tables), :mod:`.regression`
(keypoint regression, ref §5.2), :mod:`.whole_image` (whole uncropped images through ``partdisco
segment``'s inference, and the whole-image ``fg_iou``), :mod:`.diagnostics` (what the parts look like
without labels), :mod:`.checkpoint_eval` (``partdisco eval``: a saved
checkpoint, its config, the metrics file).

This ``__init__`` re-exports what ``engine/evaluate.py`` and ``engine/evaluate_full.py`` exported before they
became this package; the modules import each other directly, never through it.
"""

from partdisco.engine.evaluate.labels import (
    iterate_batches,
    mask_level_labels,
    predicted_background_labels,
)
from partdisco.engine.evaluate.protocols import (
    FULL_KEYS,
    MIN_FG_PIXELS,
    MIN_KEYPOINTS,
    evaluate,
    fit_xy_baseline,
    metric_warnings,
)
from partdisco.engine.evaluate.whole_image import (
    FULL_IMAGE_MODES,
    ForegroundIoU,
    evaluate_full_images,
    has_whole_images,
    whole_image_fg_iou,
)

__all__ = [
    "FULL_IMAGE_MODES",
    "FULL_KEYS",
    "MIN_FG_PIXELS",
    "MIN_KEYPOINTS",
    "ForegroundIoU",
    "evaluate",
    "evaluate_full_images",
    "fit_xy_baseline",
    "has_whole_images",
    "iterate_batches",
    "mask_level_labels",
    "metric_warnings",
    "predicted_background_labels",
    "whole_image_fg_iou",
]
