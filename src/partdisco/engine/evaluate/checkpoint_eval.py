"""Evaluating a saved checkpoint (``partdisco eval``): its config, the data set split, the metrics file.

:func:`evaluate_checkpoint` reads a checkpoint, builds its evaluation config (:func:`evaluation_config`),
scores the split with :func:`~partdisco.engine.evaluate.protocols.evaluate` (or on whole images,
:func:`~partdisco.engine.evaluate.whole_image.evaluate_full_images`) and writes the metrics JSON where
:func:`metrics_destination` says. :mod:`partdisco.api` wraps these for the CLI.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from partdisco import data as data_sets  # build_dataset looked up per call (tests wrap it)
from partdisco.config import (
    DATASETS,
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_overrides,
    split_overrides,
    validate_data,
    validate_eval,
)
from partdisco.engine import distributed
from partdisco.engine.evaluate.protocols import evaluate
from partdisco.engine.evaluate.whole_image import evaluate_full_images
from partdisco.engine.inference.network import resolve_device
from partdisco.engine.runfolder import is_writable_dir, refuse_run_file
from partdisco.fileio import write_json
from partdisco.models.reader import load_checkpoint_file
from partdisco.models.weights import resolve_checkpoint_path


def evaluate_checkpoint(
    checkpoint: str | Path,
    overrides: list[str] | None = None,
    *,
    device: str = "auto",
    out: str | Path | None = None,
    regression: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on a data set split and write the metrics as JSON; returns (metrics, path).

    The arguments are those of :func:`partdisco.api.evaluate_checkpoint`, which wraps this function.
    """
    checkpoint = resolve_checkpoint_path(checkpoint)
    out_path = metrics_destination(checkpoint, out)  # before the work: results must have somewhere to go
    given = split_overrides(list(overrides or []), keys=("dataset", "split"))
    dataset, split, rest = given.dataset, given.split, list(given.rest)

    loaded = load_checkpoint_file(checkpoint)
    model = loaded.segmenter
    if loaded.ours and loaded.contents.get("config"):
        cfg = evaluation_config(config_from_dict(loaded.contents["config"]), dataset, rest)
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
    validate_eval(cfg.eval, data_name=cfg.data.name)

    dev = resolve_device(device)
    model = model.to(dev).eval()
    # under torchrun: the evaluator shards the samples over the ranks and sums the counts; rank 0 writes
    started = not distributed.is_initialized() and distributed.init_from_env(dev)
    if out_path.is_dir():
        out_path = out_path / f"metrics-{cfg.data.name}-{cfg.eval.split}.json"
    try:
        metrics = _evaluate_loaded(model, cfg, dev, str(checkpoint), regression, progress)
        if distributed.rank() == 0:
            _write_metrics(out_path, metrics)
        distributed.barrier()
    finally:
        if started:
            distributed.destroy()
    return metrics, out_path


def _evaluate_loaded(
    model: Any, cfg: RunConfig, dev: Any, checkpoint: str, regression: bool, progress: bool
) -> dict[str, Any]:
    """:func:`evaluate_checkpoint`'s work once the model and its config are known (every rank runs it)."""
    test_set = data_sets.build_dataset(cfg.data, cfg.eval.split, train=False)
    first = test_set[0]
    if not test_set.has_masks and "parts" not in first and "keypoints" not in first:
        raise ConfigError(
            f"nothing to score: the {cfg.eval.split} split of {cfg.data.root or cfg.data.name} has no "
            "masks/, parts/ or keypoints.json; `partdisco segment` shows what the model finds"
        )
    reg_set = None
    if regression and "keypoints" in first and cfg.eval.split != "train" and cfg.eval.full_images == "off":
        reg_set = data_sets.build_dataset(cfg.data, "train", train=False)
    if cfg.eval.full_images != "off":
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
            size=cfg.data.image_size,
            padding=cfg.data.padding_frac,
        )
    metrics.update(
        checkpoint=checkpoint,
        dataset=cfg.data.name,
        split=cfg.eval.split,
        skipped_images=list(test_set.skipped),
    )
    return metrics


def _write_metrics(out_path: Path, metrics: dict[str, Any]) -> None:
    """Write the metrics JSON; a failure names the file and still shows the numbers."""
    try:
        write_json(out_path, metrics)
    except OSError as err:
        scalars = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        raise OSError(
            err.errno, f"{err.strerror}; the metrics were {json.dumps(scalars)}", str(out_path)
        ) from None


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
    cfg = copy.deepcopy(trained)
    if dataset is not None and dataset != cfg.data.name:
        if dataset not in DATASETS:
            raise ConfigError(f"dataset: unknown data set {dataset!r}; choose from {DATASETS}")
        if not any(key == "data.root" for key, _ in parse_overrides(overrides)):
            raise ConfigError(
                f"dataset={dataset}: the checkpoint was trained on {cfg.data.name!r}; give data.root=DIR for "
                f"the {dataset} folder"
            )
        cfg.data.name = dataset
        cfg.dataset = dataset
    apply_overrides(cfg, overrides)
    return cfg


def metrics_destination(checkpoint: Path, out: str | Path | None) -> Path:
    """Where eval writes: ``out`` (a file, or a folder), else next to the checkpoint, else the current folder.

    Raises:
        ConfigError: ``out`` is given and its folder is not writable.
    """
    if out is not None:
        out = Path(out)
        folder = out if out.is_dir() else out.parent
        if not out.is_dir():
            refuse_run_file(out, "--out", source=checkpoint)
            if out.is_file() and out.read_bytes()[:1] not in (b"{", b""):
                raise ConfigError(
                    f"--out {str(out)!r} exists and is not a metrics JSON file; write elsewhere"
                )
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
    logging.getLogger("partdisco").warning(
        "%s is not writable: the metrics go to the current folder", checkpoint.parent
    )
    return Path.cwd()
