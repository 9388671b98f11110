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


def resolve_train_config(overrides: list[str] | None = None, config_file: str | Path | None = None) -> RunConfig:
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
    from partdisco.models.convert import load_file, segmenter_from_checkpoint_dict, segmenter_from_foreign

    checkpoint = Path(checkpoint)
    pairs = parse_overrides(list(overrides or []))
    dataset = next((v for k, v in pairs if k == "dataset"), None)
    rest = [f"{k}={v}" for k, v in pairs if k not in ("dataset", "split")]
    split = next((v for k, v in pairs if k == "split"), None)

    obj = load_file(checkpoint)
    is_ours = isinstance(obj, dict) and "format_version" in obj
    model = segmenter_from_checkpoint_dict(obj) if is_ours else segmenter_from_foreign(obj)
    if dataset is None and is_ours and obj.get("config"):
        cfg = config_from_dict(obj["config"])
    elif dataset is None:
        raise ConfigError(f"{str(checkpoint)!r} carries no data set config; say which with dataset=NAME data.root=DIR")
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
    if regression and "keypoints" in first and cfg.eval.split != "train":
        reg_set = build_dataset(cfg.data, "train", train=False)
    metrics = evaluate(
        model, test_set, cfg.eval, dev, regression_dataset=reg_set, baseline_dataset=None, progress=progress
    )
    metrics.update(
        checkpoint=str(checkpoint),
        dataset=cfg.data.name,
        split=cfg.eval.split,
        skipped_images=list(getattr(test_set, "skipped", [])),
    )
    out_path = Path(out) if out else checkpoint.with_name(f"metrics-{cfg.data.name}-{cfg.eval.split}.json")
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tmp.replace(out_path)
    return metrics, out_path


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of the scalar metrics (and the baseline's, side by side)."""
    base = metrics.get("baseline_xy_kmeans", {})
    rows = [("metric", "model", "xy k-means")]
    for key, value in metrics.items():
        if isinstance(value, float):
            other = base.get(key)
            rows.append((key, f"{value:.2f}", f"{other:.2f}" if isinstance(other, float) else ""))
        elif isinstance(value, int) and not isinstance(value, bool):
            rows.append((key, str(value), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
__all__ = ["evaluate_checkpoint", "format_metrics", "load", "resolve_train_config", "train"]
