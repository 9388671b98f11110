"""Validation of a run configuration: one table of choices, range rules, and the cross-field rules.

Every key with named choices is checked against :data:`partdisco.config.schema.CHOICES` by
:func:`check_choices`, with one message: ``KEY: must be A, B or C, got 'X'``. The other rules (ranges,
files that must exist, settings that need each other) follow, each naming the key it is about.
:func:`validate_data` and :func:`validate_eval` check their slice alone (evaluation needs no training
settings); :func:`validate` checks a whole run.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from partdisco.config.schema import (
    CHOICES,
    MAX_IMAGE_SIZE,
    MAX_PARTS,
    MAX_SEED,
    MIN_FG_REFINE_EPS,
    RANDOM_INIT,
    REFERENCE_PRESETS,
    ConfigError,
    DataConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
)

# Keys of CHOICES checked elsewhere: eval.split by the data sets (which splits they have); the pseudo-keys
# dataset / recipe by the preset loader and device when the device is opened.
_CHECKED_ELSEWHERE = ("eval.split",)


def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _or(choices: typing.Sequence[str]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``, for messages."""
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


def check_choices(section: Any, name: str) -> None:
    """Every key of the section ``name`` listed in :data:`CHOICES` holds one of its choices.

    Args:
        section: the slice (e.g. ``cfg.model``).
        name: its key (``"model"``).

    Raises:
        ConfigError: ``KEY: must be A, B or C, got 'X'`` for the first key that does not.

    Example:
        >>> check_choices(EvalConfig(full_images="whole"), "eval")
        Traceback (most recent call last):
        ...
        partdisco.config.ConfigError: eval.full_images: must be off, mask or predicted, got 'whole'
    """
    for key, choices in CHOICES.items():
        prefix, _, field_name = key.partition(".")
        if prefix == name and key not in _CHECKED_ELSEWHERE:
            value = getattr(section, field_name)
            _need(value in choices, key, f"must be {_or(choices)}, got {value!r}")


def validate_eval(cfg: EvalConfig, data_name: str | None = None) -> EvalConfig:
    """Check the ``eval`` slice (used by :func:`validate` and by checkpoint evaluation).

    Args:
        cfg: the ``eval`` slice.
        data_name: the data set it will score (``data.name``); given, ``eval.full_images`` other than
            ``off`` must be a folder data set. Training passes None: it never scores whole images.

    Returns:
        ``cfg``.

    Raises:
        ConfigError: naming the key.

    Example:
        >>> validate_eval(EvalConfig(full_images="whole"))
        Traceback (most recent call last):
        ...
        partdisco.config.ConfigError: eval.full_images: must be off, mask or predicted, got 'whole'
    """
    check_choices(cfg, "eval")
    _need(
        0.0 <= cfg.fg_refine_radius < 0.5,
        "eval.fg_refine_radius",
        f"must be in [0, 0.5) (0 = off), got {cfg.fg_refine_radius}",
    )
    _need(
        cfg.fg_refine_eps >= MIN_FG_REFINE_EPS,
        "eval.fg_refine_eps",
        f"must be >= {MIN_FG_REFINE_EPS} (a float32 ridge that is not 0), got {cfg.fg_refine_eps}",
    )
    _need(
        cfg.max_images is None or cfg.max_images >= 1,
        "eval.max_images",
        f"must be >= 1 (or null = all images), got {cfg.max_images}",
    )
    if data_name is not None and cfg.full_images != "off":
        _need(data_name == "folder", "eval.full_images", "works for folder data sets only (dataset=folder)")
    return cfg


def validate_data(cfg: DataConfig) -> DataConfig:
    """Check the ``data`` slice alone (used by evaluation, which needs no training settings)."""
    need = _need
    check_choices(cfg, "data")
    need(
        16 <= cfg.image_size <= MAX_IMAGE_SIZE,
        "data.image_size",
        f"must be 16..{MAX_IMAGE_SIZE} pixels, got {cfg.image_size}",
    )
    need(
        0 <= cfg.synthetic_seed <= MAX_SEED,
        "data.synthetic_seed",
        f"must be 0..2**63-1, got {cfg.synthetic_seed}",
    )
    need(cfg.discover_size >= 32, "data.discover_size", f"must be >= 32 pixels, got {cfg.discover_size}")
    need(cfg.discover_classes >= 1, "data.discover_classes", f"must be >= 1, got {cfg.discover_classes}")
    need(cfg.discover_rounds >= 0, "data.discover_rounds", f"must be >= 0, got {cfg.discover_rounds}")
    need(
        0.0 <= cfg.discover_balance <= 1.0,
        "data.discover_balance",
        f"must be in [0, 1], got {cfg.discover_balance}",
    )
    need(
        0.0 <= cfg.discover_seed_low < cfg.discover_seed_high <= 1.0,
        "data.discover_seed_low",
        "discover_seed_low < discover_seed_high must both be in [0, 1], got "
        f"{cfg.discover_seed_low} and {cfg.discover_seed_high}",
    )
    if cfg.mask_dir is not None:
        mask_dir = Path(str(cfg.mask_dir)).expanduser()
        need(mask_dir.is_dir(), "data.mask_dir", f"folder {str(mask_dir)!r} does not exist")
    if cfg.name != "synthetic":
        need(
            cfg.root is not None,
            "data.root",
            f"data set {cfg.name!r} needs data.root=DIR (the folder holding it)",
        )
        root = Path(str(cfg.root)).expanduser()
        need(root.is_dir(), "data.root", f"folder {str(root)!r} does not exist")
    return cfg


def validate(cfg: RunConfig) -> RunConfig:
    """Check a whole run (choices, ranges, cross-field rules); ConfigError names the first bad key.

    Args:
        cfg: the run config.

    Returns:
        ``cfg``.
    """
    validate_data(cfg.data)
    for name in ("model", "train", "optim"):
        check_choices(getattr(cfg, name), name)
    _validate_counts(cfg)
    validate_reference_init(cfg)
    _need(
        cfg.train.batch_size >= 2,
        "train.batch_size",
        f"must be >= 2 (contrastive loss), got {cfg.train.batch_size}",
    )
    _need(cfg.train.steps >= 1, "train.steps", f"must be >= 1, got {cfg.train.steps}")
    validate_eval(cfg.eval)
    _validate_optim(cfg.optim)
    _validate_loss(cfg.loss)
    _validate_model_files(cfg.model)
    return cfg


def _validate_counts(cfg: RunConfig) -> None:
    """K, the seed and the training intervals."""
    _need(
        2 <= cfg.model.num_parts <= MAX_PARTS,
        "model.num_parts",
        f"must be >= 2 parts and <= {MAX_PARTS} (uint8 label maps), got {cfg.model.num_parts}",
    )
    _need(0 <= cfg.seed <= MAX_SEED, "seed", f"must be 0..2**63-1 (64-bit generator seed), got {cfg.seed}")
    for name in ("log_every", "vis_every", "checkpoint_every", "keep_checkpoints"):
        value = getattr(cfg.train, name)
        _need(value >= 1, f"train.{name}", f"must be >= 1, got {value}")
    _need(
        cfg.train.eval_every >= 0,
        "train.eval_every",
        f"must be >= 0 (0 = at the end), got {cfg.train.eval_every}",
    )


def _validate_optim(cfg: OptimConfig) -> None:
    """Learning rates and the schedule."""
    _need(cfg.lr > 0, "optim.lr", f"must be > 0, got {cfg.lr}")
    _need(
        cfg.head_lr_mult > 0,
        "optim.head_lr_mult",
        f"must be > 0 (a negative lr climbs the loss), got {cfg.head_lr_mult}",
    )
    _need(cfg.power >= 0, "optim.power", f"must be >= 0 (poly schedule exponent), got {cfg.power}")
    _need(
        cfg.schedule_steps is None or cfg.schedule_steps >= 1,
        "optim.schedule_steps",
        f"must be >= 1 (or null = train.steps), got {cfg.schedule_steps}",
    )
    _need(cfg.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {cfg.warmup_steps}")


def _validate_loss(cfg: LossConfig) -> None:
    """The loss settings that have a range."""
    _need(
        0.0 <= cfg.fg_area_min < cfg.fg_area_max <= 1.0,
        "loss.fg_area_min",
        f"need 0 <= fg_area_min < fg_area_max <= 1, got {cfg.fg_area_min}, {cfg.fg_area_max}",
    )
    _need(0.0 < cfg.border_width < 0.5, "loss.border_width", f"must be in (0, 0.5), got {cfg.border_width}")
    _need(cfg.temperature > 0, "loss.temperature", f"must be > 0, got {cfg.temperature}")
    _need(
        0 < cfg.scale_low <= cfg.scale_high,
        "loss.scale_low",
        f"need 0 < scale_low <= scale_high, got {cfg.scale_low}, {cfg.scale_high}",
    )


def _validate_model_files(cfg: ModelConfig) -> None:
    """``finetune_blocks``, the weight files a feature source needs, and that given weight files exist."""
    _need(
        cfg.finetune_blocks >= 0,
        "model.finetune_blocks",
        f"must be >= 0 (0 = frozen ViT), got {cfg.finetune_blocks}",
    )
    if cfg.features in ("dino", "dinov2"):
        _need(
            cfg.features_weights is not None,
            "model.features_weights",
            f"features={cfg.features} needs a local {cfg.features} ViT weight file "
            "(.pth or .safetensors; docs/BACKBONES.md says where to get one)",
        )
    if cfg.features == "vgg19":
        _need(
            cfg.features_weights is not None,
            "model.features_weights",
            "features=vgg19 needs a local torchvision VGG19 file (vgg19-dcbb9e9d.pth); "
            "or add recipe=cpu for the download-free CPU recipe (the pip-installed ImageNet "
            "EfficientNet-Lite0 as trunk and phi, 128 px), "
            "or use model.features=texture / vgg19_random, which need no download",
        )
    for key, path in (("model.init_from", cfg.init_from), ("model.features_weights", cfg.features_weights)):
        if path is not None and path != RANDOM_INIT:
            _need(Path(path).expanduser().is_file(), key, f"file {path!r} does not exist")


def validate_reference_init(cfg: RunConfig) -> None:
    """A reference preset without pretrained weights is refused (ref always fine-tunes ImageNet weights).

    The reference starts from an ImageNet-pretrained Caffe ResNet-50 and trains at lr 1e-5, a fine-tuning
    rate: a random start silently loses tens of NMI points. ``model.init_from=none`` starts from random
    weights on purpose.

    Raises:
        ConfigError: one message naming ``model.init_from`` (and ``model.features_weights`` when it is
            missing too).
    """
    if cfg.dataset not in REFERENCE_PRESETS or cfg.model.init_from is not None:
        return
    if cfg.model.arch == "efficientnet_lite0":  # pretrained by default: the installed weight package
        return
    missing = "model.init_from"
    files = "model.init_from=resnet50-caffe-22edcc82.pth (or torchvision's resnet50-*.pth)"
    if cfg.model.features == "vgg19" and cfg.model.features_weights is None:
        missing += " and model.features_weights"
        files += " model.features_weights=vgg19-dcbb9e9d.pth"
    raise ConfigError(
        f"{missing}: dataset={cfg.dataset} trains the reference's ImageNet-pretrained network; give {files}, "
        "or write model.init_from=none to train a randomly initialised backbone on purpose"
    )
