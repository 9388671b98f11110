"""Our checkpoint format: the record both writers use, its version check, rebuilding a model from it.

- :data:`FORMAT_VERSION`, :func:`checkpoint_record` (``{"format_version", "model", "model_config", ...}``),
  :func:`is_partdisco_checkpoint`, :func:`check_format_version`: the layout and its one check.
- :func:`segmenter_from_checkpoint_dict`: rebuild the segmenter
  (:func:`partdisco.models.build.segmenter_from_config`) and strict-load its weights.
- :func:`inference_defaults`: the :class:`~partdisco.models.segmenter.InferenceDefaults` (training image
  size, crop padding, foreground refinement) a checkpoint's run config implies, stored on the rebuilt model.
- :func:`export_checkpoint`: write a segmenter in this format (weights only, plain-typed extras).

Other layouts (unsup-parts, SCOPS, ResNet and VGG backbones) are :mod:`partdisco.models.foreign`; reading any
file is :mod:`partdisco.models.reader`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from partdisco.fileio import save_torch
from partdisco.models.build import segmenter_from_config
from partdisco.models.foreground import ForegroundClassifier
from partdisco.models.segmenter import NORMALIZATIONS, InferenceDefaults, PartSegmenter, preprocess_for
from partdisco.models.weights import CheckpointError, inner_state_dict, load_state_dict_strict

FORMAT_VERSION = 1  # our checkpoint format; bump when the meaning of a stored key changes
_RESERVED = ("format_version", "model", "model_config")
FOREGROUND_KEY = "foreground"  # the discovered foreground classifier (ForegroundClassifier.to_dict())
_PLAIN = (str, int, float, bool, type(None), Tensor)


def is_partdisco_checkpoint(obj: Any) -> bool:
    """True when ``obj`` (a loaded file) is ours: a dict with ``format_version`` and ``model``.

    Example:
        >>> is_partdisco_checkpoint({"format_version": 1, "model": {}}), is_partdisco_checkpoint({"iter": 1})
        (True, False)
    """
    return isinstance(obj, Mapping) and "format_version" in obj and "model" in obj


def check_format_version(ckpt: Any, what: str = "checkpoint") -> None:
    """The one check of our checkpoint format: ours, and not written by a newer partdisco.

    Args:
        ckpt: a loaded file.
        what: how the message names it (e.g. the file's path).

    Raises:
        CheckpointError: not our format (no ``format_version`` / ``model``), or a format newer than
            :data:`FORMAT_VERSION`.

    Example:
        >>> check_format_version({"format_version": FORMAT_VERSION, "model": {}})
    """
    if not is_partdisco_checkpoint(ckpt):
        raise CheckpointError(
            f"{what} is not a partdisco checkpoint (no format_version/model keys); "
            "convert released files with `partdisco convert SRC DST`"
        )
    version = ckpt["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{what} has format_version {version!r}, newer than this partdisco reads ({FORMAT_VERSION}); "
            "upgrade partdisco"
        )


def checkpoint_record(
    model_state: Mapping[str, Any], model_config: Mapping[str, Any], **extra: Any
) -> dict[str, Any]:
    """The one layout of our checkpoint files: ``{"format_version", "model", "model_config", **extra}``.

    Both writers use it: :func:`export_checkpoint` (weights-only files) and training (``extra`` adds
    ``step``, ``optimizer``, ``scaler``, ``config``, ...). Write the result with
    :func:`partdisco.fileio.save_torch`.

    Args:
        model_state: the model's ``state_dict()``.
        model_config: the model's ``config()`` (:meth:`Segmenter.config`).
        **extra: more entries; may not be the three reserved keys.

    Returns:
        The dict to save.

    Raises:
        ValueError: ``extra`` sets a reserved key.

    Example:
        >>> sorted(checkpoint_record({}, {"arch": "resnet18"}, step=3))
        ['format_version', 'model', 'model_config', 'step']
    """
    _check_not_reserved(extra)
    return {"format_version": FORMAT_VERSION, "model": model_state, "model_config": model_config, **extra}


def segmenter_from_checkpoint_dict(ckpt: Mapping[str, Any]) -> PartSegmenter:
    """Rebuild a segmenter from one of our checkpoint dicts and strict-load its weights.

    Args:
        ckpt: ``{"format_version": 1, "model": state_dict, "model_config": Segmenter.config(), ...}``
            (``model_config`` may be absent if ``config`` holds a RunConfig dict).

    Returns:
        The :class:`Segmenter` in train mode.

    Raises:
        CheckpointError: not our format, or written by a newer format version.
        CheckpointMismatchError: the weights do not match the rebuilt model.
    """
    check_format_version(ckpt)
    seg = segmenter_from_config(_model_config_of(ckpt))
    what = "partdisco checkpoint"
    load_state_dict_strict(seg, inner_state_dict(ckpt, "model", "partdisco", what), what)
    seg.inference_defaults = inference_defaults(ckpt)
    return seg


def _trained_data_value(ckpt: Mapping[str, Any], key: str) -> Any:
    run = ckpt.get("config")
    data = run.get("data") if isinstance(run, Mapping) else None
    return data.get(key) if isinstance(data, Mapping) else None


def trained_image_size(ckpt: Mapping[str, Any]) -> int | None:
    """The training image side stored in one of our checkpoints (``config.data.image_size``), or None.

    Example:
        >>> trained_image_size({"config": {"data": {"image_size": 96}}}), trained_image_size({})
        (96, None)
    """
    size = _trained_data_value(ckpt, "image_size")
    return int(size) if isinstance(size, int) and size > 0 else None


def trained_crop_padding(ckpt: Mapping[str, Any]) -> float | None:
    """The training crop padding stored in one of our checkpoints (``config.data.padding_frac``), or None.

    Example:
        >>> trained_crop_padding({"config": {"data": {"padding_frac": 0.1}}}), trained_crop_padding({})
        (0.1, None)
    """
    padding = _trained_data_value(ckpt, "padding_frac")
    if isinstance(padding, bool) or not isinstance(padding, (int, float)):
        return None
    return float(padding) if 0.0 <= padding < 1.0 else None


def trained_fg_refine(ckpt: Mapping[str, Any]) -> tuple[float, float] | None:
    """The foreground refinement stored in one of our checkpoints (``config.eval.fg_refine_*``), or None.

    Example:
        >>> trained_fg_refine({"config": {"eval": {"fg_refine_radius": 0.0, "fg_refine_eps": 0.01}}})
        (0.0, 0.01)
        >>> trained_fg_refine({"config": {"eval": {}}}), trained_fg_refine({})
        (None, None)
    """
    run = ckpt.get("config")
    cfg = run.get("eval") if isinstance(run, Mapping) else None
    if not isinstance(cfg, Mapping):
        return None
    radius, eps = cfg.get("fg_refine_radius"), cfg.get("fg_refine_eps")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (radius, eps)):
        return None
    return (float(radius), float(eps)) if 0.0 <= radius < 0.5 and eps > 0 else None


def inference_defaults(ckpt: Mapping[str, Any]) -> InferenceDefaults:
    """The inference defaults one of our checkpoints implies: the one place they are built from a file.

    Example:
        >>> inference_defaults({"config": {"data": {"image_size": 96}}})
        InferenceDefaults(image_size=96, crop_padding=None, fg_refine=None)
    """
    return InferenceDefaults(
        image_size=trained_image_size(ckpt),
        crop_padding=trained_crop_padding(ckpt),
        fg_refine=trained_fg_refine(ckpt),
        foreground=trained_foreground(ckpt),
    )


def trained_foreground(ckpt: Mapping[str, Any]) -> ForegroundClassifier | None:
    """The discovered foreground classifier stored in one of our checkpoints (key ``"foreground"``), or None.

    Raises:
        ValueError: the entry is there but malformed.

    Example:
        >>> trained_foreground({}) is None
        True
    """
    values = ckpt.get(FOREGROUND_KEY)
    if values is None:
        return None
    return ForegroundClassifier.from_dict(values, f"checkpoint entry {FOREGROUND_KEY!r}")


def _model_config_of(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    config = ckpt.get("model_config")
    if isinstance(config, Mapping):
        return dict(config)
    run = ckpt.get("config")
    model = run.get("model") if isinstance(run, Mapping) else None
    if isinstance(model, Mapping) and "arch" in model:
        # A RunConfig dict: its ModelConfig names the normalisation and the weights' provenance (resolved by
        # training) rather than storing them.
        out: dict[str, Any] = {
            "arch": model["arch"],
            "num_parts": model["num_parts"],
            "background_channel": model.get("background_channel", False),
        }
        normalization = str(model.get("normalization", "caffe"))
        if normalization in NORMALIZATIONS:
            out["preprocess"] = preprocess_for(normalization).to_dict()
        if model.get("init_from_format") in ("caffe", "torchvision"):
            out["trunk_style"] = model["init_from_format"]
        return out
    raise CheckpointError(
        "partdisco checkpoint has neither 'model_config' nor 'config.model' to rebuild the model"
    )


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str/int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"{where}: {type(value).__name__} is not a plain type (torch.load(weights_only) would fail)"
        )


def export_checkpoint(
    seg: PartSegmenter, path: str | os.PathLike[str], extra: dict[str, Any] | None = None, fp16: bool = False
) -> Path:
    """Write ``seg`` in our format, atomically (tmp file + ``os.replace``).

    The file holds ``{"format_version": 1, "model": state_dict (CPU), "model_config": seg.config(), **extra}``
    and loads with ``torch.load(weights_only=True)`` and :func:`load_segmenter`.

    Args:
        seg: the segmenter.
        path: destination; parent folders are created.
        extra: more plain-typed entries (e.g. ``{"config": run_config_dict, "source": "model_60000.pth"}``);
            may not override the three keys above.
        fp16: store floating-point tensors as float16 (half the size; loading casts them back to the
            model's float32 parameters).

    Returns:
        The written path.
    """
    path = Path(path).expanduser()
    extra = dict(extra or {})
    _check_not_reserved(extra)
    _check_plain(extra, "extra")
    state = {
        k: v.detach().cpu().half() if fp16 and v.is_floating_point() else v.detach().cpu()
        for k, v in seg.state_dict().items()
    }
    foreground = getattr(getattr(seg, "inference_defaults", None), "foreground", None)
    if foreground is not None and FOREGROUND_KEY not in extra:  # the discovered foreground travels along
        extra[FOREGROUND_KEY] = foreground.to_dict()
    ckpt = checkpoint_record(state, seg.config(), **extra)
    return save_torch(ckpt, path)


def _check_not_reserved(extra: Mapping[str, Any]) -> None:
    """ValueError when ``extra`` would overwrite one of the record's own keys."""
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra may not set the reserved keys {clash}")
