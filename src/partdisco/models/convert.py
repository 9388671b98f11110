"""Deprecated import path (one release, issue #23): weight files and checkpoints moved out of this module.

``partdisco.models.convert`` was the catch-all of weight-file code. Its names now live in the modules that
say what they hold; import them from there (or from ``partdisco.models``):

- :mod:`partdisco.models.weights`: reading files, strict loading, :class:`CheckpointError`.
- :mod:`partdisco.models.checkpoint`: our format (:func:`export_checkpoint`, :data:`FORMAT_VERSION`).
- :mod:`partdisco.models.foreign`: other layouts (:func:`detect_layout`, :func:`load_backbone_weights`).
- :mod:`partdisco.models.reader`: :func:`load_segmenter`, :func:`load_checkpoint_file`.
- :mod:`partdisco.models.build`: :func:`build_segmenter`, :func:`resolve_model_config`.

Nothing inside the package imports this module.
"""

from partdisco.models.build import build_segmenter, resolve_model_config
from partdisco.models.checkpoint import (
    FORMAT_VERSION,
    check_format_version,
    checkpoint_record,
    export_checkpoint,
    inference_defaults,
    is_partdisco_checkpoint,
    segmenter_from_checkpoint_dict,
    trained_crop_padding,
    trained_fg_refine,
    trained_image_size,
)
from partdisco.models.foreign import (
    HEAD_WEIGHT,
    LAYOUTS,
    detect_layout,
    init_provenance,
    load_backbone_weights,
    segmenter_from_foreign,
)
from partdisco.models.reader import LoadedCheckpoint, load_checkpoint_file, load_segmenter
from partdisco.models.weights import (
    CheckpointError,
    CheckpointMismatchError,
    NonFiniteWeightsError,
    check_finite_weights,
    clean_state_dict,
    load_file,
    load_state_dict_strict,
    non_finite_tensors,
    resolve_checkpoint_path,
)

__all__ = [
    "FORMAT_VERSION",
    "HEAD_WEIGHT",
    "LAYOUTS",
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadedCheckpoint",
    "NonFiniteWeightsError",
    "build_segmenter",
    "check_finite_weights",
    "check_format_version",
    "checkpoint_record",
    "clean_state_dict",
    "detect_layout",
    "export_checkpoint",
    "inference_defaults",
    "init_provenance",
    "is_partdisco_checkpoint",
    "load_backbone_weights",
    "load_checkpoint_file",
    "load_file",
    "load_segmenter",
    "load_state_dict_strict",
    "non_finite_tensors",
    "resolve_checkpoint_path",
    "resolve_model_config",
    "segmenter_from_checkpoint_dict",
    "segmenter_from_foreign",
    "trained_crop_padding",
    "trained_fg_refine",
    "trained_image_size",
]
