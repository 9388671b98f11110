"""The training loop, top to bottom.

Commands:
    CPU, built-in synthetic data:   ``partdisco train``
    one GPU, CUB:                   ``partdisco train dataset=cub data.root=DIR \
                                      model.features_weights=vgg19.pth``
    many GPUs (one machine):        ``torchrun --nproc_per_node 4 -m partdisco train dataset=cub ...``
    resume a killed run:            ``partdisco train resume=runs/NAME``

Reading order: :func:`fit` (run folder, lock, resume checks) -> :func:`build_run` (data, model, optimiser,
loader, writer: everything a run holds, built once) -> :func:`train_loop` (one screen: lr, draws, step,
logging, pictures, evaluation, checkpoints) -> :func:`finish_run` (final model, metrics, pictures).

One step (ref §1.7, :func:`train_step`): two independently colour-jittered views of each clean image;
logits of view 1; a random similarity+TPS warp T; logits of T(view 2) against softmax(T(logits of view
1)); features and Lab colour of the clean image; weighted losses; backward; gradient clipping; optimizer
step. Everything random in a step is drawn before it by :func:`draw_step` from a generator seeded by
(seed, step), the same on every rank, so a resumed run repeats the uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from partdisco.config import ConfigError, LossConfig, OptimConfig, RunConfig, save_config
from partdisco.data import Batch, PartsDataset, build_dataset, collate
from partdisco.data.folder import FolderDataset
from partdisco.data.samplers import ResumableBatchSampler
from partdisco.engine import distributed as dist_utils
from partdisco.engine.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
)
from partdisco.engine.diagnostics import format_diagnostics, has_label_metrics, part_diagnostics
from partdisco.engine.discover import (
    MASKS,
    DiscoverySettings,
    discover_foreground,
    discovery_complete,
)
from partdisco.engine.evaluate import evaluate, metric_warnings
from partdisco.engine.inference import predict_labels, resolve_device
from partdisco.engine.monitor import MetricWriter, setup_logging, teardown_logging
from partdisco.engine.precision import autocast_ctx, make_scaler
from partdisco.engine.runfolder import (
    FOREGROUND_DIR,
    RunLock,
    check_checkpoint_fields,
    check_new_run_folder,
    check_resume_changes,
    remove_stale_tmp,
    require_writable_dir,
)
from partdisco.engine.schedule import lr_factor
from partdisco.fileio import save_torch, write_json
from partdisco.geometry.logits import ALIGN_TRAIN, upsample_logits
from partdisco.geometry.warps import WarpParams, sample_warp_params, warp_grid, warp_image
from partdisco.imaging.color import JitterParams, apply_color_jitter, rgb_to_lab, sample_jitter_params
from partdisco.losses import Objective
from partdisco.metrics.report import format_metrics
from partdisco.models import Segmenter, build_feature_extractor, build_segmenter
from partdisco.models.build import resolve_model_config
from partdisco.models.checkpoint import checkpoint_record
from partdisco.models.weights import non_finite_tensors
from partdisco.visualise import part_grid, save_png, to_uint8_image

log = logging.getLogger("partdisco.train")


class TrainingDivergedError(RuntimeError):
    """A loss or the weights became NaN or infinite; the message names the step and the terms."""


# ------------------------------------------------------------------------------------------------ one step


@dataclass
class StepInputs:
    """What one training step consumes, on the device."""

    image: torch.Tensor  # (B, 3, H, W) clean RGB in [0, 1]
    fg_mask: torch.Tensor  # (B, 1, H, W)

    @classmethod
    def from_batch(cls, batch: Batch, device: torch.device, mask_free: bool = False) -> StepInputs:
        """The batch's images and masks on ``device``; with ``mask_free`` the mask is all ones.

        In mask-free training the loader's mask is never seen: ``fg_mask`` is only the valid region (all
        of the image), and the objective learns the foreground from priors.
        """
        non_blocking = device.type == "cuda"
        image = batch.image.to(device, non_blocking=non_blocking)
        if mask_free:
            fg_mask = torch.ones_like(image[:, :1])
        else:
            fg_mask = batch.fg_mask.to(device, non_blocking=non_blocking)
        return cls(image=image, fg_mask=fg_mask)


@dataclass
class StepDraws:
    """Everything random in one step, drawn before it (this rank's rows of the global batch).

    Attributes:
        jitter: colour jitter of the 2B views (rows 0..B-1 view 1, B..2B-1 view 2).
        warp: the B equivariance warps.
        generator: the step's generator, after those draws; the objective draws the contrastive
            positives from it.
    """

    jitter: JitterParams
    warp: WarpParams
    generator: torch.Generator


def step_generator(seed: int, step: int) -> torch.Generator:
    """CPU generator for everything random in one step.

    A pure function of (seed, step), the same on every rank (each rank slices the global draws).
    """
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def sample_step_jitter(n: int, generator: torch.Generator, cfg: LossConfig) -> JitterParams:
    """Colour-jitter draws for ``n`` views with the configured ranges."""
    return sample_jitter_params(
        n,
        generator,
        prob=cfg.jitter_prob,
        brightness=cfg.brightness,
        contrast=cfg.contrast,
        saturation=cfg.saturation,
        hue=cfg.hue,
        grayscale_prob=cfg.grayscale_prob,
    )


def sample_step_warps(n: int, generator: torch.Generator, cfg: LossConfig) -> WarpParams:
    """Equivariance warps for ``n`` images with the configured ranges."""
    return sample_warp_params(
        n,
        generator,
        rotation_deg=cfg.rotation_deg,
        scale_low=cfg.scale_low,
        scale_high=cfg.scale_high,
        translation=cfg.translation,
        tps_sigma=cfg.tps_sigma,
    )


def draw_step(
    seed: int, step: int, cfg: LossConfig, batch_size: int, rank: int = 0, world_size: int = 1
) -> StepDraws:
    """This rank's random draws for one step.

    Jitter and warps are drawn for the *global* batch of ``world_size * batch_size`` images from a
    rank-independent generator and each rank takes its slice, so a 2-rank step sees exactly what a
    1-process step on the concatenated batch sees.

    Example:
        >>> from partdisco.config import LossConfig
        >>> one = draw_step(1234, 0, LossConfig(), 4)
        >>> two = draw_step(1234, 0, LossConfig(), 2, rank=1, world_size=2)
        >>> bool(torch.equal(one.warp.slice(2, 4).angle, two.warp.angle))
        True
    """
    generator = step_generator(seed, step)
    B, G = batch_size, batch_size * world_size
    jitter = sample_step_jitter(2 * G, generator, cfg)
    mine = torch.arange(rank * B, (rank + 1) * B)
    jitter = jitter.select(torch.cat([mine, mine + G]))  # view 1 rows, then view 2 rows
    warp = sample_step_warps(G, generator, cfg).slice(rank * B, (rank + 1) * B)
    return StepDraws(jitter=jitter, warp=warp, generator=generator)


@dataclass
class Learner:
    """What a step trains and how: built once per run.

    Attributes:
        model: the segmenter itself (state dicts, ``preprocess``, parameters).
        features_net: the frozen perceptual network phi.
        objective: the weighted losses.
        optimizer: with this step's learning rates already set.
        scaler: GradScaler (enabled for fp16 only).
        net: what runs forward: ``model`` (the default), or its DDP / ``torch.compile`` wrapper.
        precision: fp32 | bf16 | fp16.
        clip_grad: max total gradient norm (<= 0 disables).
        channels_last: channels-last memory format for the network inputs.
    """

    model: nn.Module
    features_net: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    net: nn.Module | None = None
    precision: str = "fp32"
    clip_grad: float = 5.0
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.model


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``, keeping BatchNorm layers in eval mode (running statistics) when ``freeze_bn``."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def make_optimizer(model: Segmenter, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (ref) or AdamW over the segmenter's two parameter groups (backbone, head at head_lr_mult)."""
    groups = model.param_groups(cfg.lr, cfg.lr * cfg.head_lr_mult)
    for group in groups:
        group["base_lr"] = group["lr"]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def color_target(image: torch.Tensor, use_lab: bool) -> torch.Tensor:
    """Per-pixel colour descriptor for L_v: CIE-Lab (ref use_lab) or RGB 0-255 minus 128."""
    return rgb_to_lab(image) if use_lab else image.float() * 255.0 - 128.0


def train_step(learner: Learner, inputs: StepInputs, draws: StepDraws) -> dict[str, torch.Tensor]:
    """One optimisation step; returns the detached loss terms (tensors, no host sync).

    Args:
        learner: the networks, losses and optimiser (:class:`Learner`).
        inputs: clean images and masks on the device.
        draws: this step's random draws for this rank (:func:`draw_step`).

    Returns:
        Detached loss terms (``total`` included) and ``grad_norm``.
    """
    image, fg_mask = inputs.image, inputs.fg_mask
    device = image.device
    B, _, H, W = image.shape
    preprocess = learner.model.preprocess

    views = apply_color_jitter(torch.cat([image, image]), draws.jitter.to(device))  # (2B, 3, H, W)
    view1, view2 = views[:B], views[B:]
    warp = draws.warp.to(device)
    grid = warp_grid(warp, (H, W))  # (B, H, W, 2)
    warped_fg = warp_image(fg_mask, warp, grid=grid)

    def memory_format(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if learner.channels_last else x

    input1 = memory_format(preprocess(view1))
    # ref: view 2 is warped after mean subtraction (lit_dataset.py normalises, trainer_ours.py warps), so the
    # zero padding brings in zero network input, i.e. the mean colour, not black
    input2 = memory_format(warp_image(preprocess(view2), warp, grid=grid))

    objective = learner.objective
    with torch.no_grad():
        with autocast_ctx(device, learner.precision):  # the frozen network runs in bf16/fp16 too when asked
            # ref multiplies phi by the mask first; every loss weights by p * m anyway, which for binary
            # training masks is the same, without a masked copy of the (B, C, H, W) features
            features = learner.features_net(image)  # (B, C, H, W)
        lab = color_target(image, objective.cfg.use_lab)  # (B, 3, H, W)

    with autocast_ctx(device, learner.precision):
        net = learner.net if learner.net is not None else learner.model
        logits = net(input1)  # (B, K, h, w)
        warped_logits = net(input2)  # (B, K, h, w)
    logits = upsample_logits(logits, (H, W), align_corners=ALIGN_TRAIN)  # (B, K, H, W) float32
    warped_logits = upsample_logits(warped_logits, (H, W), align_corners=ALIGN_TRAIN)
    target_logits = warp_image(logits.detach(), warp, grid=grid)  # ref: warp logits, then softmax

    terms = objective(
        logits=logits,
        warped_logits=warped_logits,
        target_logits=target_logits,
        fg_mask=fg_mask,
        warped_fg_mask=warped_fg,
        features=features,
        lab=lab,
        generator=draws.generator,
    )
    optimizer, scaler = learner.optimizer, learner.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["total"]).backward()
    scaler.unscale_(optimizer)
    params = [p for p in learner.model.parameters() if p.requires_grad]
    if learner.clip_grad > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, learner.clip_grad)
    else:
        grad_norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in params if p.grad is not None])
        )
    scaler.step(optimizer)
    scaler.update()
    out = {k: v.detach() for k, v in terms.items()}
    out["grad_norm"] = grad_norm.detach()
    return out


# ------------------------------------------------------------------------------------------------- the run


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


def _default_run_dir(cfg: RunConfig) -> Path:
    return Path("runs") / f"{cfg.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _state(
    learner: Learner, step: int, cfg: RunConfig, metrics: dict[str, Any] | None = None, world: int = 1
) -> dict[str, Any]:
    """The checkpoint dict: weights, optimiser and scaler state, config, metrics (docs/RELIABILITY.md)."""
    return checkpoint_record(
        learner.model.state_dict(),
        learner.model.config(),
        step=step,
        optimizer=learner.optimizer.state_dict(),
        scaler=learner.scaler.state_dict(),
        config=cfg.to_dict(),
        metrics=metrics or {},
        torch_version=str(torch.__version__),
        world_size=world,  # processes: the global batch is train.batch_size x world_size
    )


def prepare_run(cfg: RunConfig) -> tuple[RunConfig, Path, Path | None]:
    """Resolve the run folder and, for ``resume=``, the checkpoint to continue from.

    For a resumed run, ``cfg`` should already be the run's saved ``config.yaml`` with any overrides applied
    (``load_config(config_file=RUN/config.yaml, overrides=...)``, as the CLI and :func:`partdisco.api.train`
    do).
    """
    if cfg.resume is None:
        run_dir = Path(cfg.out) if cfg.out else _default_run_dir(cfg)
        return cfg, run_dir, None
    run_dir, ckpt_path = resolve_resume(cfg.resume)
    cfg.out = str(run_dir)
    return cfg, run_dir, ckpt_path


def fit(cfg: RunConfig, *, stop_after: int | None = None) -> Path:
    """Train a segmenter as configured and return the run folder.

    The run folder ends with ``config.yaml``, ``checkpoints/step_*.pt`` (full state for resuming),
    ``model.pt`` (final, weights-only: no optimizer state),
    ``tensorboard/``, ``parts.png`` (input / part map / overlay for fixed test images), ``metrics.json`` and
    ``train.log``.

    Args:
        cfg: resolved run config.
        stop_after: stop (as if killed) after this many steps of this session; for tests.

    Returns:
        The run folder.
    """
    check_logging_backends(cfg)  # before the run folder exists
    cfg, run_dir, resume_ckpt = prepare_run(cfg)
    # the backbone weights' provenance (trunk style, normalisation) goes into config.yaml and checkpoints;
    # resolved before the resume check, which compares it with the checkpoint's resolved config
    cfg.model = resolve_model_config(cfg.model)
    device = resolve_device(cfg.device)
    dist_utils.init_from_env(device)
    main = dist_utils.is_main()
    lock = None
    if main:
        # The folder is ours before anything is written: writable, locked, and not another run's.
        require_writable_dir(run_dir, "out")
        if resume_ckpt is None:
            check_new_run_folder(run_dir)  # before the lock file: a refused folder gets no new file
        lock = RunLock(run_dir)
    restarted = False
    try:
        resume_state = None
        if resume_ckpt is None:
            if main and check_new_run_folder(run_dir):
                restarted = True
        else:
            resume_state = _load_resume_state(resume_ckpt, cfg)
        if main:
            for path in remove_stale_tmp(run_dir):
                log.debug("removed %s, left by an interrupted write", path)
        setup_logging(run_dir if main else None, main_process=main)
        if restarted:
            log.info("%s holds a run that stopped before its first checkpoint: starting it again", run_dir)
        try:
            return _fit_locked(cfg, run_dir, device, resume_ckpt, resume_state, stop_after)
        except TrainingDivergedError as err:
            _log_to_file(logging.ERROR, str(err))
            raise
        except Exception as err:
            ours = isinstance(err, (ConfigError, OSError, ValueError))  # user-facing: no traceback
            _log_to_file(logging.ERROR, f"stopped: {type(err).__name__}: {err}", exc_info=not ours)
            raise
    finally:
        teardown_logging()
        if lock is not None:
            lock.release()


def _load_resume_state(resume_ckpt: Path, cfg: RunConfig) -> dict[str, Any]:
    """The checkpoint to resume from, checked: every field present, only allowed config changes."""
    state = load_checkpoint(resume_ckpt)
    if "optimizer" not in state and "scaler" not in state:  # a final model.pt or an export
        raise ConfigError(
            f"resume: {resume_ckpt} holds weights only (a final model.pt or an export); resume from the "
            f"run folder ({resume_ckpt.parent}) or one of its checkpoints/step_*.pt"
        )
    check_checkpoint_fields(state, resume_ckpt)
    world, saved_world = dist_utils.world_size(), state.get("world_size")
    if saved_world is not None and int(saved_world) != world:
        raise ConfigError(
            f"resume: {resume_ckpt} was trained by {saved_world} process(es), this is {world}: the global "
            f"batch (train.batch_size x processes) would change; resume with torchrun --nproc_per_node "
            f"{saved_world}"
        )
    changes = check_resume_changes(state["config"], cfg.to_dict(), resume_ckpt)
    step = int(state["step"])
    if cfg.train.steps < step:
        raise ConfigError(
            f"train.steps={cfg.train.steps} but {resume_ckpt} is at step {step} already; "
            f"pass train.steps={step} or more"
        )
    for change in changes:
        log.info("resume changes %s", change)
    return state


def _log_to_file(level: int, message: str, exc_info: bool = False) -> None:
    """Write a fatal message to ``train.log`` only (the CLI prints it on the console in one line)."""
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger("partdisco").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            if exc_info:
                import traceback

                handler.stream.write(traceback.format_exc())
                handler.flush()


def build_run(
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    resume_state: dict[str, Any] | None = None,
    resume_ckpt: Path | None = None,
) -> Run:
    """Build what a run holds: data, model (resumed when asked), wrappers, optimiser, loader, writer.

    Writes ``config.yaml`` (main process) once every check has passed: a refused run changes no file.
    """
    rank, world, main = dist_utils.rank(), dist_utils.world_size(), dist_utils.is_main()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    log.info("run folder %s, device %s, %d process(es)", run_dir, device, world)
    slow = slow_recipe_warning(cfg)
    if slow:
        log.warning(slow)

    # Data first: a missing or broken data set fails before any model work.
    train_set = build_dataset(cfg.data, "train", train=True, seed=cfg.seed)
    test_set = build_dataset(cfg.data, "test", train=False)
    log.info("data %s: %d train / %d test images", cfg.data.name, len(train_set), len(test_set))
    mask_free = cfg.data.masks == "ignore" or not train_set.has_masks
    if mask_free and cfg.data.foreground == "discover":
        train_set = _discovered_train_set(cfg, train_set, run_dir, device, main)
        mask_free = not train_set.has_masks
        if not mask_free:
            cfg.model.background_channel = True  # the discovered masks teach the background channel
    if mask_free:
        why = "data.masks=ignore" if cfg.data.masks == "ignore" else "the data set has no foreground masks"
        log.info("%s: mask-free training, the background channel is learnt from priors", why)
        cfg.model.background_channel = True  # mask-free training needs the K + 1 output
    else:
        _require_foreground(train_set, cfg.data.name)

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
        model.load_state_dict(resume_state["model"], strict=True)
        optimizer.load_state_dict(resume_state["optimizer"])
        scaler.load_state_dict(resume_state["scaler"])
        start_step = int(resume_state["step"])
        # optim.lr may change on resume: it sets the groups' base lr; the optimiser's moments are kept
        fresh = model.param_groups(cfg.optim.lr, cfg.optim.lr * cfg.optim.head_lr_mult)
        for group, new in zip(optimizer.param_groups, fresh, strict=True):
            group["base_lr"] = new["lr"]
        log.info("resumed from %s at step %d", resume_ckpt, start_step)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])

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
        save_config(cfg, run_dir / "config.yaml")
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
        )
        log.info("foreground discovery on %d training images -> %s", len(paths), out)
        discover_foreground(paths, out, settings, device=device)
    elif main:
        log.info("foreground discovery: reusing the masks in %s", out / MASKS)
    dist_utils.barrier()
    data = replace(cfg.data, mask_dir=str(out / MASKS))
    return build_dataset(data, "train", train=True, seed=cfg.seed)


def train_loop(run: Run, stop_after: int | None = None) -> tuple[int, Path | None, bool]:
    """Train from ``run.start_step`` to ``cfg.train.steps`` (or ``stop_after`` steps of this session).

    Returns:
        The step reached, the last good checkpoint (or None), and whether the loop was
        stopped by ``stop_after`` (then the run is not finished: no final evaluation or model.pt).
    """
    cfg = run.cfg
    first_bad = torch.full((), -1, dtype=torch.long, device=run.device)  # first non-finite step, no sync
    progress = tqdm(
        total=cfg.train.steps,
        initial=run.start_step,
        desc="train",
        disable=not (run.main and cfg.log.progress),
        dynamic_ncols=True,
    )
    set_train_mode(run.learner.model, cfg.model.freeze_bn)
    t0 = time.perf_counter()
    with progress, _CtrlC(run.world == 1) as ctrl_c:
        try:
            return _loop_steps(run, stop_after, progress, t0, first_bad, ctrl_c)
        except Exception:
            # loader workers get the Ctrl-C too and exit: the loader then fails; the steps done are kept
            if not ctrl_c.asked or ctrl_c.step == run.start_step:
                raise
            _stop_on_ctrl_c(run, ctrl_c.step, ctrl_c.last_saved)


class _CtrlC:
    """The first Ctrl-C (SIGINT) asks the loop to stop after the current step and save a checkpoint.

    A second Ctrl-C stops at once. Only for one process in the main thread (ranks of a distributed run
    would stop at different steps); elsewhere Ctrl-C stops at once, as before.
    """

    def __init__(self, enabled: bool) -> None:
        import signal
        import threading

        self.asked = False
        self.step, self.last_saved = 0, None  # the last finished step and checkpoint (kept by the loop)
        self._enabled = enabled and threading.current_thread() is threading.main_thread()
        self._signal = signal
        self._pid = os.getpid()
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.asked or os.getpid() != self._pid:  # (loader workers inherit the handler: they just stop)
            raise KeyboardInterrupt
        self.asked = True
        log.warning("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again stops at once)")

    def __enter__(self) -> _CtrlC:
        if self._enabled:
            self._old = self._signal.signal(self._signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._signal.signal(self._signal.SIGINT, self._old)


def _stop_on_ctrl_c(run: Run, step: int, last_saved: Path | None) -> None:
    """After a Ctrl-C: save the steps done since the last checkpoint, say where, stop (KeyboardInterrupt)."""
    if last_saved is None or last_saved.name != f"step_{step:07d}.pt":
        try:
            last_saved = _save_checkpoint(run, step, {}, last_saved)
        except (TrainingDivergedError, OSError, RuntimeError) as err:
            log.warning("interrupted at step %d; no checkpoint written (%s)", step, err)
    if last_saved is not None:
        log.warning(
            "interrupted at step %d: saved %s; continue with resume=%s", step, last_saved, run.run_dir
        )
    raise KeyboardInterrupt


def _loop_steps(
    run: Run, stop_after: int | None, progress: Any, t0: float, first_bad: torch.Tensor, ctrl_c: _CtrlC
) -> tuple[int, Path | None, bool]:
    """The body of :func:`train_loop`."""
    cfg, learner, device = run.cfg, run.learner, run.device
    total = cfg.train.steps
    # a resumed run's last good checkpoint is the one it resumed from until it writes one
    step, last_saved = run.start_step, latest_checkpoint(run.run_dir) if run.start_step else None
    ctrl_c.step, ctrl_c.last_saved = step, last_saved
    t_first = t0
    for batch in run.loader:
        for group in learner.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, cfg.optim, total)
        inputs = StepInputs.from_batch(batch, device, run.mask_free)
        draws = draw_step(cfg.seed, step, cfg.loss, inputs.image.shape[0], run.rank, run.world)
        terms = train_step(learner, inputs, draws)
        bad = ~torch.isfinite(terms["total"])
        first_bad = torch.where((first_bad < 0) & bad, torch.full_like(first_bad, step), first_bad)
        step += 1
        progress.update(1)
        now = time.perf_counter()
        if step == run.start_step + 1:
            t_first = now  # the first step carries the start-up (allocations, workers): left out of the ETA
        per_step = (now - t_first) / max(1, step - run.start_step - 1)  # running average since step 1
        if step == run.start_step + ETA_AFTER_STEPS and step < total:
            _log_eta(per_step, step - run.start_step - 1, total - step)
        is_last, checkpoint_now = step == total, step % cfg.train.checkpoint_every == 0
        if step % cfg.train.log_every == 0 or is_last or checkpoint_now:
            _raise_if_diverged(first_bad, terms, last_saved)
            eta = per_step * (total - step) if step - run.start_step > 1 else None
            _log_step(run, step, terms, progress, time.perf_counter() - t0, eta)
        if run.writer is not None and (step % cfg.train.vis_every == 0 or is_last):
            run.writer.image("parts/test", _part_grid(run), step)
        if cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0 and not is_last:
            metrics = _evaluate(run)
            if run.writer is not None:
                run.writer.scalars({k: v for k, v in metrics.items() if isinstance(v, float)}, step, "eval")
            set_train_mode(learner.model, cfg.model.freeze_bn)
        if checkpoint_now or is_last:
            last_saved = _save_checkpoint(run, step, terms, last_saved)
        ctrl_c.step, ctrl_c.last_saved = step, last_saved
        if ctrl_c.asked and not is_last:
            _raise_if_diverged(first_bad, terms, last_saved)  # a diverged step is not saved
            _stop_on_ctrl_c(run, step, last_saved)
        if stop_after is not None and step - run.start_step >= stop_after:
            log.info("stopping after %d steps as asked (step %d)", stop_after, step)
            return step, last_saved, True
    return step, last_saved, False


def _log_step(
    run: Run,
    step: int,
    terms: dict[str, torch.Tensor],
    progress: Any,
    elapsed_s: float,
    eta_s: float | None = None,
) -> None:
    """The one logging block: progress bar, ``train.log`` (without a bar or at checkpoints), TensorBoard.

    ``eta_s``: the remaining time from the running average of the step time (the first step left out).
    """
    cfg = run.cfg
    values = {k: dist_utils.reduce_mean(v).item() for k, v in terms.items()}
    values["lr"] = run.learner.optimizer.param_groups[0]["lr"]
    progress.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k != "grad_norm"})
    if not cfg.log.progress or step % cfg.train.checkpoint_every == 0:
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        left = f" (about {_duration(eta_s)} left)" if eta_s is not None and step < cfg.train.steps else ""
        log.info("step %d/%d %s%s", step, cfg.train.steps, shown, left)
    if run.writer is not None:
        run.writer.scalars(values, step, prefix="train")
        run.writer.scalars({"steps_per_s": (step - run.start_step) / elapsed_s}, step, "speed")


def _save_checkpoint(
    run: Run, step: int, terms: dict[str, torch.Tensor], last_saved: Path | None
) -> Path | None:
    """Check the weights are finite, write ``checkpoints/step_*.pt`` (main process), prune; all ranks wait."""
    _raise_if_weights_diverged(run.learner.model, step, terms, last_saved)
    if run.main:
        last_saved = save_torch(
            _state(run.learner, step, run.cfg, world=run.world),
            checkpoint_dir(run.run_dir) / f"step_{step:07d}.pt",
        )
        prune_checkpoints(run.run_dir, run.cfg.train.keep_checkpoints)
    dist_utils.barrier()
    return last_saved


def finish_run(run: Run, step: int, last_saved: Path | None) -> None:
    """The end of a run: held-out metrics, final ``model.pt``, ``metrics.json``, ``parts.png``, summary."""
    cfg, model = run.cfg, run.learner.model
    _raise_if_weights_diverged(model, step, None, last_saved)  # finite weights only
    metrics = _evaluate(run)
    if not has_label_metrics(metrics):  # nothing to score against: describe the parts instead
        metrics["diagnostics"] = part_diagnostics(
            model, run.test_set, run.device, cfg.eval.batch_size, cfg.eval.max_images or 200
        )
    skipped = {"train": list(run.train_set.skipped), "test": list(run.test_set.skipped)}
    metrics["skipped_images"] = skipped
    if skipped["train"] or skipped["test"]:
        log.warning(
            "skipped %d unreadable training and %d test images (listed in metrics.json; data.strict=true "
            "makes them errors)%s",
            len(skipped["train"]),
            len(skipped["test"]),
            "; with data.num_workers > 0 only the main process's skips are counted"
            if cfg.data.num_workers
            else "",
        )
    if run.main:
        assert run.writer is not None
        run.writer.scalars({k: v for k, v in metrics.items() if isinstance(v, float)}, step, "eval")
        # The final model is weights-only (a third of the size); the full state stays in checkpoints/.
        final = _state(run.learner, step, cfg, metrics, world=run.world)
        save_torch(
            {k: v for k, v in final.items() if k not in ("optimizer", "scaler")}, run.run_dir / "model.pt"
        )
        write_json(run.run_dir / "metrics.json", metrics)
        save_png(run.run_dir / "parts.png", _part_grid(run))
        which = _test_split_words(run)
        if "diagnostics" not in metrics:  # (without labels the table would be empty)
            log.info("%s metrics (x100):\n%s", which, format_metrics(metrics))
        else:
            log.info(
                "no labels to score: unsupervised diagnostics of the parts on %d of the %d %s images "
                "(look at %s too):\n%s",
                metrics["diagnostics"]["images"],
                len(run.test_set),
                which,
                run.run_dir / "parts.png",
                format_diagnostics(metrics["diagnostics"]),
            )
        for note in dict.fromkeys(metric_warnings(metrics).values()):
            log.warning("%s", note)
        log.info("finished %d steps; run folder %s", step, run.run_dir)
    dist_utils.barrier()


def _test_split_words(run: Run) -> str:
    """``held-out``, or what the test images are when they are training images (a folder without a split)."""
    train_files, test_files = getattr(run.train_set, "files", None), getattr(run.test_set, "files", None)
    if train_files is not None and test_files is not None and set(test_files) & set(train_files):
        return "test (= training images: the data set has no test.txt / train.txt, so nothing is held out)"
    return "held-out"


def _fit_locked(
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    resume_ckpt: Path | None,
    resume_state: dict[str, Any] | None,
    stop_after: int | None,
) -> Path:
    """:func:`fit` once the run folder is locked and the resume checked: build, loop, finish."""
    run = build_run(cfg, run_dir, device, resume_state, resume_ckpt)
    try:
        step, last_saved, stopped = train_loop(run, stop_after)
        if not stopped:
            finish_run(run, step, last_saved)
    finally:
        if run.writer is not None:
            run.writer.close()
    return run_dir


ETA_AFTER_STEPS = 3  # the projected run time is logged once, after this many steps of a session
SLOW_RUN_S = 3600.0  # ... and is a warning when the remaining steps project to more than this


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def _log_eta(per_step: float, done: int, remaining: int) -> None:
    """The first projection of the run time; the step lines of ``train.log`` keep it updated."""
    eta = per_step * remaining
    text = _duration(eta)
    message = (
        f"{per_step:.2f} s/step over {done} steps after the first (its start-up left out): the other "
        f"{remaining} take about {text}"
    )
    if eta > SLOW_RUN_S:
        log.warning(
            "%s on this machine (fewer train.steps, a smaller data.image_size or a GPU help)", message
        )
    else:
        log.info(message)


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


def _raise_if_diverged(
    first_bad: torch.Tensor, terms: dict[str, torch.Tensor], last_saved: Path | None
) -> None:
    bad_step = int(first_bad.item())
    if bad_step < 0:
        return
    shown = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
    kept = f"last good checkpoint: {last_saved}" if last_saved else NO_CHECKPOINT_YET
    raise TrainingDivergedError(f"non-finite loss at step {bad_step + 1} ({shown}); stopped; {kept}")


NO_CHECKPOINT_YET = "no checkpoint was written yet (start the run again with the same command)"
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


def _raise_if_weights_diverged(
    model: nn.Module, step: int, terms: dict[str, torch.Tensor] | None, last_saved: Path | None
) -> None:
    """Stop before a checkpoint is written when a weight or buffer is NaN / inf (the loss can stay finite)."""
    bad = non_finite_tensors(model.state_dict())
    if not bad:
        return
    shown = f" ({', '.join(f'{k}={v.item():.4g}' for k, v in terms.items())})" if terms else ""
    kept = f"last good checkpoint: {last_saved}" if last_saved else NO_CHECKPOINT_YET
    raise TrainingDivergedError(
        f"non-finite weights at step {step}{shown}: {len(bad)} tensor(s), first {bad[0]}; stopped without "
        f"saving them (lower optim.lr); {kept}"
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


def _part_grid(run: Run) -> np.ndarray:
    """Input / part map / overlay of the fixed test images (train mode restored when it was on).

    Black is the background: the mask's when training uses masks, the model's own prediction (its
    background channel, unrefined) in mask-free training.
    """
    model, batch = run.learner.model, run.vis_batch
    was_training = model.training
    model.eval()
    # mask-free runs show their own background; with masks the mask is the background, as in training
    fg_mask = None if run.mask_free else batch.fg_mask.to(run.device)
    labels = predict_labels(model, batch.image.to(run.device), fg_mask).cpu().numpy()
    if was_training:
        set_train_mode(model, run.cfg.model.freeze_bn)
    return part_grid([to_uint8_image(x) for x in batch.image], list(labels))


def _evaluate(run: Run) -> dict[str, Any]:
    """Held-out metrics of the model on the test split (eval mode; the caller restores train mode)."""
    run.learner.model.eval()
    progress = run.cfg.log.progress and run.main
    data = run.cfg.data  # the whole-image fg_iou runs as `partdisco segment` would on the final model.pt
    return evaluate(
        run.learner.model,
        run.test_set,
        run.cfg.eval,
        run.device,
        progress=progress,
        size=data.image_size,
        padding=data.padding_frac,
    )


__all__ = [
    "Learner",
    "Run",
    "StepDraws",
    "StepInputs",
    "TrainingDivergedError",
    "build_run",
    "draw_step",
    "finish_run",
    "fit",
    "make_optimizer",
    "step_generator",
    "train_loop",
    "train_step",
]
