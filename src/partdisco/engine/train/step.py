"""One training step (ref §1.7): its inputs, its random draws, what it trains, and the step itself.

:func:`train_step`: two independently colour-jittered views of each clean image; logits of view 1; a random
similarity+TPS warp T; logits of T(view 2) against softmax(T(logits of view 1)); features and Lab colour of
the clean image; weighted losses; backward; gradient clipping; optimizer step. Everything random in a step is
drawn before it by :func:`draw_step` from a generator seeded by (seed, step), the same on every rank, so a
resumed run repeats the uninterrupted run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from partdisco.config import LossConfig, OptimConfig
from partdisco.data import Batch
from partdisco.engine.train.precision import autocast_ctx
from partdisco.geometry.logits import ALIGN_TRAIN, upsample_logits
from partdisco.geometry.warps import WarpParams, sample_warp_params, warp_grid, warp_image
from partdisco.imaging.color import JitterParams, apply_color_jitter, rgb_to_lab, sample_jitter_params
from partdisco.losses import Objective
from partdisco.models import Segmenter

log = logging.getLogger("partdisco.train")


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


# The sampler's argument -> the ``loss.*`` key that sets its range.
JITTER_RANGES = {
    "prob": "jitter_prob",
    "brightness": "brightness",
    "contrast": "contrast",
    "saturation": "saturation",
    "hue": "hue",
    "grayscale_prob": "grayscale_prob",
}
WARP_RANGES = {k: k for k in ("rotation_deg", "scale_low", "scale_high", "translation", "tps_sigma")}


def _ranges(cfg: LossConfig, keys: dict[str, str]) -> dict[str, Any]:
    return {arg: getattr(cfg, key) for arg, key in keys.items()}


def sample_step_jitter(n: int, generator: torch.Generator, cfg: LossConfig) -> JitterParams:
    """Colour-jitter draws for ``n`` views with the configured ranges (:data:`JITTER_RANGES`)."""
    return sample_jitter_params(n, generator, **_ranges(cfg, JITTER_RANGES))


def sample_step_warps(n: int, generator: torch.Generator, cfg: LossConfig) -> WarpParams:
    """Equivariance warps for ``n`` images with the configured ranges (:data:`WARP_RANGES`)."""
    return sample_warp_params(n, generator, **_ranges(cfg, WARP_RANGES))


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
    """SGD (ref) or AdamW over the segmenter's two parameter groups (backbone, head at head_lr_mult).

    On the CPU and CUDA the optimiser runs its fused kernel, the same updates as the per-tensor loop (SGD bit
    for bit, AdamW within float rounding; tested) 3-6x faster on a 2-core CPU (ResNet-18: SGD 13 -> 4 ms,
    AdamW 42 -> 7 ms per step; issue #24).
    """
    groups = model.param_groups(cfg.lr, cfg.lr * cfg.head_lr_mult)
    for group in groups:
        group["base_lr"] = group["lr"]
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = devices <= {"cpu", "cuda"}
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused or None
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


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
            # (B, C, H, W), or small tap maps standing for their upsampling (the loss sums at their size)
            features = learner.features_net.loss_features(memory_format(image))
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
    grad_norm = _backward_and_step(learner, terms["total"])
    out = {k: v.detach() for k, v in terms.items()}
    out["grad_norm"] = grad_norm.detach()
    return out


def _backward_and_step(learner: Learner, total: torch.Tensor) -> torch.Tensor:
    """Backward of ``total`` (scaled for fp16), gradient clipping, optimizer step; returns the grad norm."""
    optimizer, scaler = learner.optimizer, learner.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
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
    return grad_norm
