"""Inference: images in, part maps out; the one place that runs a segmenter on images.

Rooms: :mod:`.network` (defaults, processing size, tensors -> logits / probabilities / labels, the
background channel), :mod:`.images` (:func:`segment_images`: whole image or object crop, back to the
image's size), :mod:`.background` (``--background`` modes, the border heuristic), :mod:`.crop` (object-centric
crops), :mod:`.refine` (guided-filter refinement of a predicted foreground), :mod:`.inputs` (user images and
masks of any type -> the arrays :func:`segment_images` takes), :mod:`.options` (:class:`SegmentOptions`).

This ``__init__`` re-exports what ``engine/inference.py`` exported before it became this package; the
modules import each other directly, never through it.
"""

from partdisco.engine.inference.background import (
    BACKGROUND_MODES,
    BORDER_NOT_FOUND,
    BORDER_RING,
    BORDER_SHARE,
    border_background_parts,
    check_background,
)
from partdisco.engine.inference.images import MAX_PARTS, PartMaps, segment_images
from partdisco.engine.inference.network import (
    BACKGROUND_CHANNEL,
    DEFAULT_FG_REFINE,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_PADDING,
    MAX_ASPECT,
    RESIZE_ALIGN,
    image_to_tensor,
    inference_fg_refine,
    inference_padding,
    inference_size,
    labels_from_probs,
    model_device,
    network_logits,
    part_channels,
    predict_labels,
    predict_probs,
    processing_size,
    resolve_device,
)
from partdisco.engine.inference.options import CROP_MODES, SegmentOptions

__all__ = [
    "BACKGROUND_CHANNEL",
    "BACKGROUND_MODES",
    "BORDER_NOT_FOUND",
    "BORDER_RING",
    "BORDER_SHARE",
    "CROP_MODES",
    "DEFAULT_FG_REFINE",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_PADDING",
    "MAX_ASPECT",
    "MAX_PARTS",
    "RESIZE_ALIGN",
    "PartMaps",
    "SegmentOptions",
    "border_background_parts",
    "check_background",
    "image_to_tensor",
    "inference_fg_refine",
    "inference_padding",
    "inference_size",
    "labels_from_probs",
    "model_device",
    "network_logits",
    "part_channels",
    "predict_labels",
    "predict_probs",
    "processing_size",
    "resolve_device",
    "segment_images",
]
