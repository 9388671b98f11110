"""The Python API that the CLI calls: configure, train, evaluate, load and segment.

Example:
    >>> import partdisco
    >>> cfg = partdisco.resolve_train_config(["train.steps=2", "train.batch_size=2"])
    >>> cfg.train.steps
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partdisco.config import ConfigError, RunConfig, load_config, parse_overrides


def resolve_train_config(
    overrides: list[str] | None = None, config_file: str | Path | None = None
) -> RunConfig:
    """Build the config of a training run from ``key=value`` overrides.

    With ``resume=RUN_DIR`` (or a checkpoint inside it), the run's saved ``config.yaml`` is the base and the
    other overrides apply on top (e.g. ``train.steps=4000`` to train longer).

    Raises:
        ConfigError: unknown keys, wrong types, missing files; the message names them.
    """
    overrides = list(overrides or [])
    pairs = parse_overrides(overrides)
    resume = next((v for k, v in pairs if k == "resume"), None)
    if resume is None:
        return load_config(None, overrides, config_file=config_file)
    from partdisco.engine.checkpoint import resolve_resume

    run_dir, _ = resolve_resume(resume)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume: run folder {str(run_dir)!r} has no config.yaml")
    rest = [o for o in overrides if not o.startswith("resume=") and not o.startswith("dataset=")]
    cfg = load_config(None, rest, config_file=saved)
    cfg.resume = str(resume)
    cfg.out = str(run_dir)
    return cfg


def train(cfg: RunConfig | list[str] | None = None) -> Path:
    """Train a segmenter; returns the run folder.

    Args:
        cfg: a resolved RunConfig, or ``key=value`` overrides (None = the synthetic default run).
    """
    from partdisco.engine.train import fit

    if not isinstance(cfg, RunConfig):
        cfg = resolve_train_config(cfg)
    return fit(cfg)


def load(path: str | Path, device: str = "cpu") -> Any:
    """Load a segmenter from our checkpoint, a released unsup-parts checkpoint or a SCOPS state dict.

    Returns:
        A ``Segmenter`` in eval mode on ``device``; ``model.preprocess`` turns RGB [0, 1] images into its
        input, and ``model(x)`` returns part logits (B, K or K + 1, h, w).
    """
    from partdisco.models.convert import load_segmenter

    return load_segmenter(path).to(device).eval()


def load_backbone(path: str | Path, device: str = "cpu") -> Any:
    """Load a local DINO (v1) or DINOv2 ViT file as a frozen feature extractor; nothing is downloaded.

    Args:
        path: a ``.pth`` or ``.safetensors`` file in the official hub, timm or Hugging Face layout.
        device: where to put it.

    Returns:
        A ``VisionTransformer`` in eval mode with frozen weights: ``model(x)`` maps an ImageNet-normalised
        (B, 3, H, W), H and W multiples of the patch size, to the final-norm patch tokens
        (B, C, H / p, W / p); ``model(x, return_class_token=True)`` also returns the class token (B, C).
        ``model.spec`` says family, size, patch and registers; ``model.source`` the file, SHA-256, layout.
    """
    from partdisco.models.vit import load_backbone as _load_backbone

    return _load_backbone(path).to(device)


def evaluate_checkpoint(
    checkpoint: str | Path,
    overrides: list[str] | None = None,
    *,
    device: str = "auto",
    out: str | Path | None = None,
    regression: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on a data set split and write the metrics as JSON.

    Args:
        checkpoint: our checkpoint, a released unsup-parts file or a SCOPS state dict.
        overrides: ``dataset=NAME``, ``split=test``, ``data.*`` and ``eval.*`` keys. Without ``dataset=``,
            our checkpoints are evaluated on the data set they were trained on.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        out: JSON path; default ``metrics-<dataset>-<split>.json`` next to the checkpoint.
        regression: also fit and score keypoint regression (needs the data set's train split).
        progress: show progress bars.

    Returns:
        The metrics dict and the path of the JSON file.
    """
    import json

    from partdisco.config import apply_overrides, config_from_dict, validate_data
    from partdisco.data import build_dataset
    from partdisco.engine.evaluate import evaluate
    from partdisco.engine.train import resolve_device
    from partdisco.models.convert import (
        load_file,
        resolve_checkpoint_path,
        segmenter_from_checkpoint_dict,
        segmenter_from_foreign,
    )

    checkpoint = resolve_checkpoint_path(checkpoint)
    out_path = _metrics_destination(checkpoint, out)  # before the work: results must have somewhere to go
    pairs = parse_overrides(list(overrides or []))
    dataset = next((v for k, v in pairs if k == "dataset"), None)
    rest = [f"{k}={v}" for k, v in pairs if k not in ("dataset", "split")]
    split = next((v for k, v in pairs if k == "split"), None)

    obj = load_file(checkpoint)
    is_ours = isinstance(obj, dict) and "format_version" in obj
    model = segmenter_from_checkpoint_dict(obj) if is_ours else segmenter_from_foreign(obj)
    if is_ours and obj.get("config"):
        cfg = evaluation_config(config_from_dict(obj["config"]), dataset, rest)
    elif dataset is None:
        raise ConfigError(
            f"{str(checkpoint)!r} carries no data set config; say which with dataset=NAME data.root=DIR"
        )
    else:
        cfg = load_config(dataset, check=False)
        apply_overrides(cfg, rest)
    if split is not None:
        cfg.eval.split = split
    validate_data(cfg.data)

    dev = resolve_device(device)
    model = model.to(dev).eval()
    test_set = build_dataset(cfg.data, cfg.eval.split, train=False)
    first = test_set[0]
    reg_set = None
    if regression and "keypoints" in first and cfg.eval.split != "train" and cfg.eval.full_images == "off":
        reg_set = build_dataset(cfg.data, "train", train=False)
    if cfg.eval.full_images not in ("off", "mask", "predicted"):
        raise ConfigError(f"eval.full_images: must be off, mask or predicted, got {cfg.eval.full_images!r}")
    if cfg.eval.full_images != "off":
        from partdisco.engine.evaluate_full import evaluate_full_images

        if cfg.data.name != "folder":
            raise ConfigError("eval.full_images: works for folder data sets only (dataset=folder)")
        metrics = evaluate_full_images(
            model,
            test_set,
            cfg.eval,
            size=cfg.data.image_size,
            padding=cfg.data.padding_frac,
            mode=cfg.eval.full_images,
            progress=progress,
        )
    else:
        metrics = evaluate(
            model,
            test_set,
            cfg.eval,
            dev,
            regression_dataset=reg_set,
            baseline_dataset=None,
            progress=progress,
        )
    metrics.update(
        checkpoint=str(checkpoint),
        dataset=cfg.data.name,
        split=cfg.eval.split,
        skipped_images=list(getattr(test_set, "skipped", [])),
    )
    if out_path.is_dir():
        out_path = out_path / f"metrics-{cfg.data.name}-{cfg.eval.split}.json"
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        tmp.replace(out_path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        scalars = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        raise OSError(
            err.errno, f"{err.strerror}; the metrics were {json.dumps(scalars)}", str(out_path)
        ) from None
    return metrics, out_path


def evaluation_config(trained: RunConfig, dataset: str | None, overrides: list[str]) -> RunConfig:
    """The config a checkpoint is evaluated with: its own, changed only where the command line says.

    Every setting (``data.image_size``, ``data.cub_mask``, ``eval.batch_size``, ...) keeps the checkpoint's
    value; ``dataset=NAME`` changes only the data source (``data.name``), never the preset's other values;
    ``key=value`` overrides change exactly their key. A ``dataset=`` different from the one trained on needs
    ``data.root=DIR`` too, since the trained-on folder has another layout.

    Args:
        trained: the checkpoint's run config.
        dataset: ``dataset=`` from the command line, or None.
        overrides: the other ``key=value`` strings (``split=`` already removed).

    Returns:
        A new config (``trained`` is not modified).

    Raises:
        ConfigError: an unknown key, a wrong type, or a new data set without ``data.root``.

    Example:
        >>> from partdisco.config import load_config
        >>> trained = load_config("synthetic", ["data.image_size=128"], check=False)
        >>> cfg = evaluation_config(trained, "folder", ["data.root=photos"])
        >>> cfg.data.name, cfg.data.root, cfg.data.image_size
        ('folder', 'photos', 128)
    """
    import copy

    from partdisco.config import DATASETS, apply_overrides

    cfg = copy.deepcopy(trained)
    if dataset is not None and dataset != cfg.data.name:
        if dataset not in DATASETS:
            raise ConfigError(f"dataset: unknown data set {dataset!r}; choose from {DATASETS}")
        if not any(o.startswith("data.root=") for o in overrides):
            raise ConfigError(
                f"dataset={dataset}: the checkpoint was trained on {cfg.data.name!r}; give data.root=DIR for "
                f"the {dataset} folder"
            )
        cfg.data.name = dataset
        cfg.dataset = dataset
    apply_overrides(cfg, overrides)
    return cfg


def is_training_divergence(err: BaseException) -> bool:
    """True when ``err`` is the stop of a diverged training run (a user-facing error, not a bug)."""
    from partdisco.engine.train import TrainingDivergedError

    return isinstance(err, TrainingDivergedError)


def export(src: str | Path, dst: str | Path, fp16: bool = False) -> Path:
    """Write a weights-only copy of a checkpoint (optionally float16) that every command loads.

    Args:
        src: a run folder, one of our checkpoints (a full training checkpoint included), or a released
            unsup-parts / SCOPS file.
        dst: the output ``.pt`` file.
        fp16: store the weights as float16 (half the size).

    Returns:
        The written path. The file keeps the model description, the training image size and, for our
        checkpoints, the run config (so ``partdisco eval`` still knows the data set); no optimizer state.
    """
    from partdisco.models.convert import (
        export_checkpoint,
        load_file,
        resolve_checkpoint_path,
        segmenter_from_checkpoint_dict,
        segmenter_from_foreign,
    )

    path = resolve_checkpoint_path(src)
    obj = load_file(path)
    ours = isinstance(obj, dict) and "format_version" in obj
    seg = segmenter_from_checkpoint_dict(obj) if ours else segmenter_from_foreign(obj)
    extra: dict[str, Any] = {"exported_from": str(path), "weights_dtype": "float16" if fp16 else "float32"}
    if ours:
        extra.update({k: obj[k] for k in ("config", "step", "metrics") if k in obj})
    return export_checkpoint(seg, dst, extra=extra, fp16=fp16)


def _metrics_destination(checkpoint: Path, out: str | Path | None) -> Path:
    """Where eval writes: ``out`` (a file, or a folder), else next to the checkpoint, else the current folder.

    Raises:
        ConfigError: ``out`` is given and its folder is not writable.
    """
    from partdisco.engine.runfolder import is_writable_dir

    if out is not None:
        out = Path(out)
        folder = out if out.is_dir() else out.parent
        if not is_writable_dir(folder):
            raise ConfigError(f"--out {str(out)!r}: folder {str(folder)!r} is not writable")
        return out
    if is_writable_dir(checkpoint.parent):
        return checkpoint.parent
    if not is_writable_dir(Path.cwd()):
        raise ConfigError(
            f"neither the checkpoint's folder {str(checkpoint.parent)!r} nor the current folder is writable; "
            "pass --out FILE"
        )
    import logging

    logging.getLogger("partdisco").warning(
        "%s is not writable: the metrics go to the current folder", checkpoint.parent
    )
    return Path.cwd()


def format_metrics(metrics: dict[str, Any], decimals: int = 1) -> str:
    """A plain-text table of the scalar metrics (and the baseline's, side by side), 1 decimal.

    The same table ``partdisco eval`` prints and training writes to its log
    (:func:`partdisco.metrics.report.format_metrics`). Scores computed from too few keypoints or foreground
    pixels (``engine.evaluate.metric_warnings``) are marked ``*`` and explained below the table.
    """
    from partdisco.engine.evaluate import metric_warnings
    from partdisco.metrics.report import format_metrics as table

    return table(metrics, decimals, thin=metric_warnings(metrics))


def _image_to_rgb_uint8(image: Any, index: int) -> Any:
    """One image of :func:`segment` -> uint8 (H, W, 3) RGB (see its docstring for what is accepted)."""
    import numpy as np

    from partdisco.data.io import composite_on_black, read_image

    if isinstance(image, (str, Path)):
        return read_image(image)
    if hasattr(image, "detach"):  # torch tensor (C, H, W) or (H, W)
        t = image.detach().cpu()
        array = t.float().numpy() if t.is_floating_point() else t.numpy()
        if array.ndim == 3:
            array = np.moveaxis(array, 0, -1)  # (H, W, C)
    else:
        array = np.asarray(image)  # numpy (H, W[, C]) or a PIL image
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image {index}: expected (H, W), (H, W, 1|3|4) arrays or (C, H, W) tensors, got {array.shape}"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        array = np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * 255.0  # floats are [0, 1]
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 257.0  # 16 bit -> 8 bit, as read_image does
    else:
        array = np.clip(array.astype(np.float32), 0.0, 255.0)
    if array.shape[2] == 4:
        array = composite_on_black(array)  # as read_image does
    elif array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.round(array).astype(np.uint8)


def _mask_to_float(mask: Any, index: int) -> Any:
    """One mask of :func:`segment` -> float32 (H, W) in [0, 1]."""
    import numpy as np

    from partdisco.data.io import read_mask

    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        return read_mask(mask)
    array = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"mask {index}: expected (H, W), got shape {np.shape(mask)}")
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    return (array > 0).astype(np.float32)  # integer masks: any non-zero value, as read_mask does


def segment(
    model: Any,
    images: Any,
    *,
    masks: Any = None,
    size: int | None = None,
    background: str = "auto",
    batch_size: int = 8,
    device: str | None = None,
    crop: str = "auto",
    padding: float | None = None,
    fg_refine: float | None = None,
) -> tuple[Any, Any]:
    """Segment images into parts; arrays in, arrays out (no files written).

    Images can be file paths, PIL images, numpy arrays (H, W), (H, W, 1|3|4) or torch tensors (C, H, W):
    uint8 (0..255), uint16 (0..65535) or float (0..1); alpha is composited on black, grey is repeated.
    A list gives lists back; a 4-D batch (numpy (B, H, W, C) or torch (B, C, H, W)) gives stacked arrays;
    a single image gives single arrays. Every image is resized so its shorter side is ``size`` for the
    network and the results are resized back to the image's own size (docs/SEGMENT.md).

    Args:
        model: a Segmenter (e.g. from :func:`load`) or a checkpoint path.
        images: one image, a list of images, or a 4-D batch (see above).
        masks: optional foreground masks shaped like ``images``: paths (non-zero is foreground, as
            ``read_mask``), or (H, W) arrays: bool, float 0..1 (> 0.5 is foreground) or integer (non-zero is
            foreground). Background pixels get label 0.
        size: shorter side of the network input; None (default) = the size the model was trained at
            (``model.image_size``, from its checkpoint), else 256, exactly as ``partdisco segment``.
        background: ``"auto"`` (masks, else the model's background channel, else no background),
            ``"none"`` or ``"border"`` (the part covering most of the image border is background).
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...; None keeps a Segmenter where it is (and loads a
            path on ``"auto"``). A given device moves the model there.
        crop: object-centric inference: ``"auto"`` crops around the object (the mask, else the model's
            predicted foreground, two passes) with ``padding``, segments the crop at ``size`` x ``size``
            and pastes the maps back; ``"none"`` segments the whole image.
        padding: per-side padding of the object crop; None = the checkpoint's ``data.padding_frac``
            (0.05 when unknown), as ``partdisco segment``.
        fg_refine: models with a background channel: window radius (fraction of the network input's
            shorter side) of the colour-guided refinement of the predicted foreground; 0 = off; None = the
            checkpoint's ``eval.fg_refine_radius`` (0.0625 when unknown), as ``partdisco segment
            --fg-refine``.

    Returns:
        ``(labels, probs)``: labels uint8 (H, W), 0 = background, 1..K = parts; probs float32 (C, H, W),
        the softmax over the model's C channels (C = K, or K + 1 with channel 0 = background). Lists,
        (B, ...) stacks or single arrays, following ``images``.

    Raises:
        ValueError: an unsupported image layout, a mask of another size, a bad ``background``.

    Example:
        >>> import numpy as np
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=4)
        >>> labels, probs = segment(seg, np.zeros((30, 40, 3), np.uint8), size=32)
        >>> labels.shape, labels.dtype, probs.shape, int(labels.min()) >= 1
        ((30, 40), dtype('uint8'), (4, 30, 40), True)
    """
    import numpy as np

    from partdisco.engine.segment import segment_images
    from partdisco.engine.train import resolve_device

    if isinstance(model, (str, Path)):
        model = load(model, device=str(resolve_device(device or "auto")))
    elif device is not None:
        model = model.to(resolve_device(device))
    is_batch = getattr(images, "ndim", 0) == 4
    is_list = isinstance(images, (list, tuple))
    items = list(images) if (is_batch or is_list) else [images]
    if not items:
        raise ValueError("segment: got no images")
    mask_items = None
    if masks is not None:
        mask_items = list(masks) if (is_batch or is_list) else [masks]
        if len(mask_items) != len(items):
            raise ValueError(f"segment: got {len(mask_items)} masks for {len(items)} images")
        mask_items = [_mask_to_float(m, i) for i, m in enumerate(mask_items)]
    arrays = [_image_to_rgb_uint8(image, i) for i, image in enumerate(items)]
    results = segment_images(
        model,
        arrays,
        mask_items,
        size=size,
        background=background,
        batch_size=batch_size,
        with_probs=True,
        crop=crop,
        padding=padding,
        fg_refine=fg_refine,
    )
    labels = [r.labels for r in results]
    probs = [r.probs for r in results]
    if is_batch:
        return np.stack(labels), np.stack(probs)
    if is_list:
        return labels, probs
    return labels[0], probs[0]


__all__ = [
    "evaluate_checkpoint",
    "export",
    "format_metrics",
    "load",
    "resolve_train_config",
    "segment",
    "train",
]
