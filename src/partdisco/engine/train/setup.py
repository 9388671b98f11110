"""Building a run once: data (and discovered foreground masks), model, wrappers, optimiser, loader, writer.

:func:`build_run` returns the :class:`Run` that :func:`~partdisco.engine.train.loop.train_loop` trains;
the checks that refuse a config before anything is written (:func:`check_logging_backends`,
:func:`slow_recipe_warning`, masks without foreground) live here too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from partdisco.config import ConfigError, RunConfig, save_config
from partdisco.data import Batch, PartsDataset, build_dataset, collate
from partdisco.data.folder import FolderDataset
from partdisco.data.samplers import ResumableBatchSampler
from partdisco.engine import distributed as dist_utils
from partdisco.engine.discover import (
    MASKS,
    DiscoverySettings,
    discover_foreground,
    discovery_complete,
    read_classifier,
)
from partdisco.engine.runfolder import (
    CONFIG_FILE,
    FOREGROUND_DIR,
)
from partdisco.engine.train.monitor import MetricWriter
from partdisco.engine.train.precision import make_scaler
from partdisco.engine.train.step import Learner, make_optimizer
from partdisco.losses import Objective
from partdisco.models import Segmenter, build_feature_extractor, build_segmenter

log = logging.getLogger("partdisco.train")


@dataclass
class Run:
    """Everything a training run holds, built once by :func:`build_run`.

    Attributes:
        cfg: the resolved run config.
        run_dir: the run folder.
        device: this rank's device.
        rank: this process's rank; ``world`` the number of ranks; ``main`` whether it writes files.
        train_set: the training split (augmented, indexed by ``(index, epoch)``).
        test_set: the held-out split (evaluation pipeline).
        mask_free: the foreground is learnt from priors (no masks are read).
        learner: model, wrappers, losses, optimiser.
        loader: yields the batches of steps ``start_step .. cfg.train.steps - 1``.
        writer: TensorBoard / W&B (main process only).
        vis_batch: fixed test images for the pictures.
        start_step: the step the loader starts at (0, or the resumed checkpoint's step).
    """

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    rank: int
    world: int
    main: bool
    train_set: PartsDataset
    test_set: PartsDataset
    mask_free: bool
    learner: Learner
    loader: DataLoader
    writer: MetricWriter | None
    vis_batch: Batch
    start_step: int


def default_run_dir(cfg: RunConfig) -> Path:
    """``runs/DATASET-YYYYmmdd-HHMMSS``: where a run goes without ``out=``."""
    return Path("runs") / f"{cfg.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def build_run(
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    resume_state: dict[str, Any] | None = None,
    resume_ckpt: Path | None = None,
) -> Run:
    """Build what a run holds: data, model (resumed when asked), wrappers, optimiser, loader, writer.

    Writes ``config.yaml`` (main process) once every check has passed: a refused run changes no file. The
    run's config is ``cfg`` with ``model.background_channel`` resolved (:func:`resolve_background_channel`);
    ``cfg`` itself is not changed.
    """
    rank, world, main = dist_utils.rank(), dist_utils.world_size(), dist_utils.is_main()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    log.info("run folder %s, device %s, %d process(es)", run_dir, device, world)
    slow = slow_recipe_warning(cfg)
    if slow:
        log.warning(slow)

    # Data first: a missing or broken data set fails before any model work.
    train_set, test_set, mask_free, without_masks = _training_data(cfg, run_dir, device, main)
    cfg = resolve_background_channel(cfg, without_masks)
    learner, start_step = _build_learner(cfg, device, mask_free, resume_state, resume_ckpt)
    if cfg.data.foreground == "discover":  # the discovered classifier travels with the model
        found = read_classifier(run_dir / FOREGROUND_DIR)
        learner.model.inference_defaults = replace(learner.model.inference_defaults, foreground=found)
    sampler = ResumableBatchSampler(
        len(train_set), cfg.train.batch_size, cfg.train.steps, cfg.seed, start_step, rank, world
    )
    loader = DataLoader(
        train_set,  # indexed by (index, epoch): augmentations from (seed, epoch, index)
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.data.num_workers > 0,
    )
    vis_batch = _fixed_batch(test_set, 8)  # reads test images: unreadable data fails before config.yaml
    if main:  # every check has passed (the sampler refuses a batch larger than the data set)
        save_config(cfg, run_dir / CONFIG_FILE)
    return Run(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        rank=rank,
        world=world,
        main=main,
        train_set=train_set,
        test_set=test_set,
        mask_free=mask_free,
        learner=learner,
        loader=loader,
        writer=MetricWriter(run_dir, cfg.log, cfg.to_dict()) if main else None,
        vis_batch=vis_batch,
        start_step=start_step,
    )


def _training_data(
    cfg: RunConfig, run_dir: Path, device: torch.device, main: bool
) -> tuple[PartsDataset, PartsDataset, bool, bool]:
    """The train and test splits, whether training is mask-free, and whether the data came without masks.

    Data that came without masks (or with ``data.masks=ignore``) trains mask-free, or with the masks of
    foreground discovery (``data.foreground=discover``); either way the run needs the background channel.
    """
    train_set = build_dataset(cfg.data, "train", train=True, seed=cfg.seed)
    test_set = build_dataset(cfg.data, "test", train=False)
    log.info("data %s: %d train / %d test images", cfg.data.name, len(train_set), len(test_set))
    without_masks = mask_free = cfg.data.masks == "ignore" or not train_set.has_masks
    if mask_free and cfg.data.foreground == "discover":
        train_set = _discovered_train_set(cfg, train_set, run_dir, device, main)
        mask_free = not train_set.has_masks
    if mask_free:
        why = "data.masks=ignore" if cfg.data.masks == "ignore" else "the data set has no foreground masks"
        log.info("%s: mask-free training, the background channel is learnt from priors", why)
    else:
        _require_foreground(train_set, cfg.data.name)
    return train_set, test_set, mask_free, without_masks


def resolve_background_channel(cfg: RunConfig, without_masks: bool) -> RunConfig:
    """``cfg`` with ``model.background_channel`` on when the data came without masks (a copy; cfg unchanged).

    Mask-free training needs the K + 1 output, and discovered masks teach the background channel. The
    resolved value is what ``config.yaml`` and the checkpoints record.

    Example:
        >>> from partdisco.config import load_config
        >>> cfg = load_config("synthetic", check=False)
        >>> cfg.model.background_channel = False
        >>> resolve_background_channel(cfg, True).model.background_channel, cfg.model.background_channel
        (True, False)
    """
    if not without_masks or cfg.model.background_channel:
        return cfg
    return replace(cfg, model=replace(cfg.model, background_channel=True))


def _build_learner(
    cfg: RunConfig,
    device: torch.device,
    mask_free: bool,
    resume_state: dict[str, Any] | None,
    resume_ckpt: Path | None,
) -> tuple[Learner, int]:
    """Model (same initial weights on every rank), phi, losses, optimiser, wrappers, resumed."""
    rank, world = dist_utils.rank(), dist_utils.world_size()
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = build_segmenter(cfg.model).to(device)
    features_net = build_feature_extractor(
        cfg.model.features,
        cfg.model.features_weights,
        weight_low=cfg.loss.feat_weight_low,
        weight_high=cfg.loss.feat_weight_high,
    ).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        features_net = features_net.to(memory_format=torch.channels_last)  # its input is channels-last too
    objective = Objective(
        cfg.loss,
        background_channel=model.background_channel,
        world_size=world,
        gather=dist_utils.all_gather_with_grad if cfg.loss.gather_negatives else None,
        rank=rank,
        mask_free=mask_free,
    )
    optimizer = make_optimizer(model, cfg.optim)
    scaler = make_scaler(device, cfg.train.precision)
    start_step = 0
    if resume_state is not None:
        start_step = _resume(model, optimizer, scaler, cfg, resume_state, resume_ckpt)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
    model, net = _wrap(model, cfg, device, world)
    learner = Learner(
        model=model,
        net=net,
        features_net=features_net,
        objective=objective,
        optimizer=optimizer,
        scaler=scaler,
        precision=cfg.train.precision,
        clip_grad=cfg.optim.clip_grad,
        channels_last=cfg.train.channels_last,
    )
    return learner, start_step


def _resume(
    model: Segmenter,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: RunConfig,
    resume_state: dict[str, Any],
    resume_ckpt: Path | None,
) -> int:
    """Load the checkpoint's weights, optimiser and scaler state; return its step."""
    model.load_state_dict(resume_state["model"], strict=True)
    optimizer.load_state_dict(resume_state["optimizer"])
    scaler.load_state_dict(resume_state["scaler"])
    start_step = int(resume_state["step"])
    # optim.lr may change on resume: it sets the groups' base lr; the optimiser's moments are kept
    fresh = model.param_groups(cfg.optim.lr, cfg.optim.lr * cfg.optim.head_lr_mult)
    for group, new in zip(optimizer.param_groups, fresh, strict=True):
        group["base_lr"] = new["lr"]
    log.info("resumed from %s at step %d", resume_ckpt, start_step)
    return start_step


def _wrap(model: nn.Module, cfg: RunConfig, device: torch.device, world: int) -> tuple[nn.Module, nn.Module]:
    """(model, net): SyncBatchNorm when asked (CUDA), DDP over several ranks, ``torch.compile`` when asked."""
    net: nn.Module = model
    if world > 1 and cfg.train.sync_bn and not cfg.model.freeze_bn:
        if device.type == "cuda":
            model = net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.info("BatchNorm uses per-rank batch statistics: SyncBatchNorm needs CUDA devices")
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.train.compile:
        net = torch.compile(net)
    return model, net


def _discovered_train_set(
    cfg: RunConfig, train_set: PartsDataset, run_dir: Path, device: torch.device, main: bool
) -> PartsDataset:
    """The training set with the masks of foreground discovery (``data.foreground=discover``).

    Discovery runs once per run folder (``RUN/foreground/``, kept for resuming and for looking at) on the
    main process; the other ranks wait for it. Data sets that are not folders of files keep the priors.
    """
    if not isinstance(train_set, FolderDataset):
        log.warning(
            "data.foreground=discover needs a folder data set (dataset=folder); %s trains with the priors",
            cfg.data.name,
        )
        return train_set
    paths = [train_set.image_dir / name for name in train_set.files]
    out = run_dir / FOREGROUND_DIR
    if main and not discovery_complete(out, paths):
        settings = DiscoverySettings(
            size=cfg.data.discover_size,
            classes=cfg.data.discover_classes,
            seed_low=cfg.data.discover_seed_low,
            seed_high=cfg.data.discover_seed_high,
            rounds=cfg.data.discover_rounds,
            balance=cfg.data.discover_balance,
        )
        log.info("foreground discovery on %d training images -> %s", len(paths), out)
        discover_foreground(paths, out, settings, device=device)
    elif main:
        log.info("foreground discovery: reusing the masks in %s", out / MASKS)
    dist_utils.barrier()
    data = replace(cfg.data, mask_dir=str(out / MASKS))
    return build_dataset(data, "train", train=True, seed=cfg.seed)


def slow_recipe_warning(cfg: RunConfig) -> str | None:
    """A warning when the config trains a randomly initialised backbone with the reference's SGD at 1e-5.

    The reference fine-tunes a pretrained ResNet-50 with that optimiser; from random weights it barely
    moves. Returns the message (with the faster recipe), or None.

    Example:
        >>> from partdisco.config import load_config
        >>> slow_recipe_warning(load_config("synthetic", check=False)) is None
        True
        >>> "optim.name=adamw" in slow_recipe_warning(load_config("synthetic", ["optim.name=sgd",
        ...     "optim.lr=1e-5"], check=False))
        True
    """
    if cfg.model.init_from is not None or cfg.optim.name != "sgd" or cfg.optim.lr > 1e-4:
        return None
    return (
        "model.init_from is not set, so the backbone starts from random weights, and SGD at lr "
        f"{cfg.optim.lr:g} (the reference's fine-tuning setting) barely moves it: expect many hours "
        "without progress. "
        "Faster from scratch: optim.name=adamw optim.lr=1e-3 optim.head_lr_mult=1 optim.weight_decay=1e-4 "
        "(the synthetic preset's recipe); or give model.init_from=PRETRAINED.pth"
    )


def check_logging_backends(cfg: RunConfig) -> None:
    """Refuse ``log.wandb=true`` without the wandb package, in one line, before anything is written."""
    if not cfg.log.wandb:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError(
            "log.wandb=true needs the wandb package: pip install 'partdisco[wandb]', or set log.wandb=false"
        ) from None


FOREGROUND_PROBES = 16  # training samples looked at before step 0


def _require_foreground(dataset: PartsDataset, name: str) -> None:
    """Refuse a data set whose masks hold no foreground: every loss would be 0 and the run learn nothing.

    Looks at up to :data:`FOREGROUND_PROBES` samples spread over the set (unaugmented); one with foreground
    is enough.
    """
    n = len(dataset)
    count = min(n, FOREGROUND_PROBES)
    probes = sorted({i * n // count for i in range(count)})
    looked = []
    for index in probes:
        try:
            sample = dataset.load_sample(index, None)
        except Exception:  # noqa: BLE001 - unreadable files are the loader's business (skipped, counted)
            continue
        if float(sample["fg_mask"].sum()) > 0:
            return
        looked.append(str(sample.get("name", index)))
    if looked:
        raise ValueError(
            f"data set {name!r}: none of the {len(looked)} training masks looked at has a foreground pixel "
            f"(e.g. {looked[0]}); every loss would be 0: fix the masks (`partdisco data check`)"
        )


def _fixed_batch(dataset: PartsDataset, n: int) -> Batch:
    """The first n test images of one size, for pictures that are comparable across steps."""
    samples = []
    for i in range(min(len(dataset), 4 * n)):
        s = dataset[i]
        if samples and s["image"].shape != samples[0]["image"].shape:
            continue
        samples.append(s)
        if len(samples) == n:
            break
    return collate(samples)
