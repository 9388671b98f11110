"""A straightforward re-implementation of the reference training step, for speed comparisons.

This is the baseline of ``benchmarks/bench_step.py`` (issue #7). It computes **what** our
:func:`partdisco.engine.train.train_step` computes (same losses, weights, warps and jitter, from the same
random draws) but **how** the reference (``subhc/unsup-parts`` trainer_ours.py, loss.py, tps/rand_tps.py,
lit_dataset.py; ``unsup-parts-method.md`` §1.7, §2) structures it:

- colour jitter and the Lab conversion one image at a time (the reference does them per image in the
  DataLoader, torchvision ``ColorJitter`` style); here they run on the images' device, so the baseline is not
  charged for a CPU data pipeline that the reference hides in worker processes;
- a thin-plate spline fitted **per sample** every step: ``torch.linalg.solve`` of the (N + 3) x (N + 3)
  system in float32, as the reference, then the dense (H * W, N + 3) design matrix
  and grid built per sample, on the CPU by default and copied to the device (as
  ``RandTPS.reset_control_points`` does);
- two separate fp32 forward passes, logits upsampled with ``align_corners=True``;
- L_f as a Python loop over the images, each building the (1, K, C, H, W) intermediates of the reference's
  ``consistency_loss`` (about 0.8 GB per image at 256 px with VGG features; autograd keeps two of them per
  image for the backward pass); L_v the same function on the whole batch at once;
- the contrastive loss as a Python loop over the B * K anchors;
- L_e with ``kl_div(reduction='none')`` weighted by the warped mask;
- backward, gradient clipping over all parameters, optimizer step.

Differences from the reference kept on purpose so that the values match ours: the jitter applies the four
adjustments in a fixed order (brightness, contrast, saturation, hue) on float tensors instead of
torchvision's random order on uint8 PIL images, with ITU-R 601 grey weights (0.299, 0.587, 0.114, as PIL);
the contrastive positives are given (``draws.positives``) instead of drawn inside the loss.

For a binary foreground mask (the reference's) the loss terms equal :class:`partdisco.losses.Objective`'s;
with a soft mask the reference formula weights L_f by ``p m^2`` where ours uses ``p m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partdisco.config import LossConfig
from partdisco.engine.train import StepInputs, sample_step_jitter, sample_step_warps
from partdisco.geometry.warps import WarpParams
from partdisco.imaging.color import JitterParams, rgb_to_lab
from partdisco.losses import sample_positive_images

TRAIN_ALIGN = True  # ref: trainer_ours.py:79 upsamples logits with align_corners=True
WARP_ALIGN = True  # ref: RandTPS grid_sample with align_corners=True
GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma (PIL "L" conversion)
POOL_EPS = 1e-7  # ref: trainer_ours.py:135-136
CONSISTENCY_EPS = 1e-5  # ref: loss.py consistency_loss
KL_EPS = 1e-7  # ref: trainer_ours.py:168


@dataclass
class StepDraws:
    """Everything random in one step.

    Attributes:
        jitter: 2B colour-jitter draws, rows 0..B-1 for view 1 and B..2B-1 for view 2.
        warp: B similarity + TPS warps.
        positives: (B, K) int64 index of the image whose part k is the positive of anchor (b, k).
    """

    jitter: JitterParams
    warp: WarpParams
    positives: Tensor


def draw_step_randomness(
    batch_size: int, num_parts: int, generator: torch.Generator, loss_cfg: LossConfig
) -> StepDraws:
    """Draw a step's randomness in the order :func:`partdisco.engine.train.train_step` draws it (1 process).

    With a generator in the same state, the draws equal those of ``train_step`` at ``world_size=1``: jitter
    for 2B images, B warps, then the (B, K) contrastive positives.

    Args:
        batch_size: B (>= 2).
        num_parts: K.
        generator: CPU generator, e.g. ``step_generator(seed, step)``.
        loss_cfg: jitter / warp ranges and ``reference_positive_sampling``.

    Returns:
        The draws, on the CPU.
    """
    jitter = sample_step_jitter(2 * batch_size, generator, loss_cfg)
    warp = sample_step_warps(batch_size, generator, loss_cfg)
    positives = sample_positive_images(batch_size, num_parts, generator, loss_cfg.reference_positive_sampling)
    return StepDraws(jitter, warp, positives)


# ------------------------------------------------------------------------------------------------------------
# Colour jitter, one image at a time (torchvision functional-tensor style)


def _grayscale(img: Tensor) -> Tensor:
    """(3, H, W) -> (1, H, W) luma."""
    return (GRAY[0] * img[0] + GRAY[1] * img[1] + GRAY[2] * img[2]).unsqueeze(0)


def _blend(img1: Tensor, img2: Tensor, ratio: float) -> Tensor:
    return (ratio * img1 + (1.0 - ratio) * img2).clamp(0.0, 1.0)


def adjust_brightness(img: Tensor, factor: float) -> Tensor:
    """Scale brightness of one (3, H, W) image in [0, 1]."""
    return _blend(img, torch.zeros_like(img), factor)


def adjust_contrast(img: Tensor, factor: float) -> Tensor:
    """Blend one (3, H, W) image with its mean grey level."""
    return _blend(img, _grayscale(img).mean(), factor)


def adjust_saturation(img: Tensor, factor: float) -> Tensor:
    """Blend one (3, H, W) image with its grey version."""
    return _blend(img, _grayscale(img), factor)


def _rgb_to_hsv(img: Tensor) -> Tensor:
    r, g, b = img[0], img[1], img[2]
    maxc = torch.max(img, dim=0).values
    minc = torch.min(img, dim=0).values
    equal = maxc == minc
    delta = maxc - minc
    ones = torch.ones_like(maxc)
    sat = delta / torch.where(equal, ones, maxc)
    divisor = torch.where(equal, ones, delta)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([hue, sat, maxc])


def _hsv_to_rgb(img: Tensor) -> Tensor:
    h, s, v = img[0], img[1], img[2]
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    sector = (i.unsqueeze(0) == torch.arange(6, device=img.device).view(-1, 1, 1)).to(img.dtype)  # (6, H, W)
    red = torch.stack([v, q, p, p, t, v])
    green = torch.stack([t, v, v, q, p, p])
    blue = torch.stack([p, p, t, v, v, q])
    return torch.stack([(sector * c).sum(0) for c in (red, green, blue)])


def adjust_hue(img: Tensor, shift: float) -> Tensor:
    """Rotate the hue of one (3, H, W) image by ``shift`` turns."""
    hsv = _rgb_to_hsv(img)
    hue = torch.remainder(hsv[0] + shift, 1.0)
    return _hsv_to_rgb(torch.stack([hue, hsv[1], hsv[2]])).clamp(0.0, 1.0)


def color_jitter_per_image(images: Tensor, params: JitterParams) -> Tensor:
    """Jitter each image separately: RandomApply(ColorJitter, p) then RandomGrayscale (ref lit_dataset.py).

    Args:
        images: (N, 3, H, W) RGB in [0, 1].
        params: N draws (any device; read on the host).

    Returns:
        (N, 3, H, W) jittered images.
    """
    cpu = params.to("cpu")
    out = []
    for i, img in enumerate(images):
        if bool(cpu.apply[i]):
            img = adjust_brightness(img, float(cpu.brightness[i]))
            img = adjust_contrast(img, float(cpu.contrast[i]))
            img = adjust_saturation(img, float(cpu.saturation[i]))
            img = adjust_hue(img, float(cpu.hue[i]))
        if bool(cpu.gray[i]):
            img = _grayscale(img).expand(3, -1, -1)
        out.append(img)
    return torch.stack(out)


def lab_per_image(images: Tensor) -> Tensor:
    """CIE-Lab of each image separately (ref: skimage ``rgb2lab`` per sample in the data loader).

    Args:
        images: (N, 3, H, W) RGB in [0, 1].

    Returns:
        (N, 3, H, W) Lab.
    """
    return torch.cat([rgb_to_lab(img.unsqueeze(0)) for img in images])


# ------------------------------------------------------------------------------------------------------------
# Thin-plate spline, fitted per sample every step


def _tps_kernel(points: Tensor, centers: Tensor) -> Tensor:
    """U(r) = r^2 log r^2 between (M, 2) points and (N, 2) centres -> (M, N)."""
    d2 = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return torch.where(d2 > 0, d2 * torch.log(d2.clamp_min(1e-30)), torch.zeros_like(d2))


def source_control_points(warp: WarpParams, b: int) -> Tensor:
    """(N, 2) source point of each target control point for sample ``b``: ``s R (c + offset) + t``."""
    angle, scale = float(warp.angle[b]), float(warp.scale[b])
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = scale * torch.tensor([[cos, -sin], [sin, cos]])
    jittered = warp.control_points.cpu() + warp.control_offsets[b].cpu()
    return jittered @ matrix.t() + warp.translation[b].cpu()


def tps_grid_per_sample(
    warp: WarpParams, size: tuple[int, int], device: torch.device | str = "cpu"
) -> Tensor:
    """Dense sampling grids, one TPS solve and one design matrix per sample (ref RandTPS / TPSGridGen).

    Args:
        warp: B warps.
        size: (H, W) of the grid.
        device: where to build the grids (the reference builds them on the CPU).

    Returns:
        (B, H, W, 2) float32 grid of normalised source (x, y), ``align_corners=True`` convention.
    """
    height, width = size
    grids = []
    for b in range(warp.batch_size):
        centers = warp.control_points.to(device, torch.float32)  # (N, 2)
        n = centers.shape[0]
        target = source_control_points(warp, b).to(device, torch.float32)  # (N, 2)
        affine = torch.cat([torch.ones(n, 1, device=device), centers], dim=1)  # (N, 3)
        system = torch.cat(
            [
                torch.cat([_tps_kernel(centers, centers), affine], dim=1),
                torch.cat([affine.t(), torch.zeros(3, 3, device=device)], dim=1),
            ]
        )  # (N + 3, N + 3)
        rhs = torch.cat([target, torch.zeros(3, 2, device=device)])  # (N + 3, 2)
        coefficients = torch.linalg.solve(system, rhs)  # (N + 3, 2)
        ys = torch.linspace(-1.0, 1.0, height, device=device)
        xs = torch.linspace(-1.0, 1.0, width, device=device)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)  # (H * W, 2)
        design = torch.cat(
            [_tps_kernel(points, centers), torch.ones(height * width, 1, device=device), points], 1
        )
        grids.append((design @ coefficients).view(height, width, 2))
    return torch.stack(grids)


# ------------------------------------------------------------------------------------------------------------
# Losses as the reference writes them


def consistency_loss(masks: Tensor, image: Tensor, fg: Tensor) -> Tensor:
    """Reference ``consistency_loss``: per-part weighted variance over (N, R, C, H, W) intermediates.

    Args:
        masks: (N, R, H, W) soft part masks (``softmax * fg``).
        image: (N, C, H, W) descriptors.
        fg: (N, 1, H, W) foreground.

    Returns:
        Scalar: sum over parts and channels, normalised by the foreground area, mean over N.
    """
    weighted = masks.unsqueeze(2) * image.unsqueeze(1)  # (N, R, C, H, W)
    mass = masks.sum(dim=(2, 3)).unsqueeze(-1)  # (N, R, 1)
    means = weighted.sum(dim=(3, 4)) / (mass + CONSISTENCY_EPS)  # (N, R, C)
    diff_sq = (image.unsqueeze(1) - means[..., None, None]) ** 2  # (N, R, C, H, W)
    loss = (diff_sq * masks.unsqueeze(2) * fg.unsqueeze(2)).sum(dim=(3, 4))  # (N, R, C)
    loss = loss / (fg.unsqueeze(2).sum(dim=(3, 4)) + CONSISTENCY_EPS)
    return loss.sum(dim=(1, 2)).mean()


def contrastive_loss_loop(descriptors: Tensor, positives: Tensor, temperature: float) -> Tensor:
    """InfoNCE with a Python loop over the B * K anchors.

    Args:
        descriptors: (B, K, D) part descriptors (normalised here).
        positives: (B, K) int64 image index of each anchor's positive.
        temperature: tau.

    Returns:
        Scalar mean cross-entropy over the anchors.
    """
    B, K, _ = descriptors.shape
    z = F.normalize(descriptors, dim=2)
    chosen = positives.tolist()
    losses = []
    for b in range(B):
        for k in range(K):
            anchor = z[b, k]  # (D,)
            positive = z[chosen[b][k], k]  # (D,)
            negatives = torch.cat([z[:, j] for j in range(K) if j != k])  # (B * (K - 1), D)
            logits = torch.cat([(anchor * positive).sum().view(1), negatives @ anchor]) / temperature
            losses.append(-F.log_softmax(logits, dim=0)[0])
    return torch.stack(losses).mean()


def equivariance_loss(pred_logits: Tensor, target_logits: Tensor, warped_fg: Tensor) -> Tensor:
    """KL(softmax(target) || softmax(pred)) per pixel, weighted by the warped mask, mean over images."""
    kl = F.kl_div(F.log_softmax(pred_logits, dim=1), F.softmax(target_logits, dim=1), reduction="none")
    per_image = (kl * warped_fg).flatten(1).sum(1) / (warped_fg.flatten(1).sum(1) + KL_EPS)
    return per_image.mean()


# ------------------------------------------------------------------------------------------------------------
# The step


def naive_reference_step(
    model: nn.Module,
    features_net: nn.Module,
    inputs: StepInputs,
    optimizer: torch.optim.Optimizer,
    draws: StepDraws,
    loss_cfg: LossConfig,
    clip_grad: float = 5.0,
    grid_on_cpu: bool = True,
) -> dict[str, Tensor]:
    """One reference-structured fp32 training step.

    Args:
        model: a :class:`partdisco.models.Segmenter` without background channel (the reference has none).
        features_net: frozen perceptual network phi (same object as for ``train_step``).
        inputs: clean (B, 3, H, W) images in [0, 1] and (B, 1, H, W) foreground masks, on the device.
        optimizer: optimizer over the model's parameters.
        draws: this step's random draws (:func:`draw_step_randomness`).
        loss_cfg: loss weights, temperature and ``use_lab``.
        clip_grad: max total gradient norm (<= 0 disables).
        grid_on_cpu: build the TPS grids on the CPU and copy them (as the reference); else on the device.

    Returns:
        Detached weighted terms ``eqv``, ``feat``, ``color``, ``contrastive``, ``total`` and ``grad_norm``.
    """
    if getattr(model, "background_channel", False):
        raise ValueError("naive_reference_step reproduces the reference, which has no background channel")
    image, mask = inputs.image.float(), inputs.fg_mask.float()
    device = image.device
    B, _, H, W = image.shape
    preprocess = model.preprocess

    optimizer.zero_grad(set_to_none=True)

    # "data loader": two jittered views and the Lab target, image by image
    jitter = draws.jitter
    view1 = color_jitter_per_image(image, jitter.select(torch.arange(B)))
    view2 = color_jitter_per_image(image, jitter.select(torch.arange(B, 2 * B)))
    lab = lab_per_image(image) if loss_cfg.use_lab else image * 255.0 - 128.0

    pred = F.interpolate(model(preprocess(view1)), size=(H, W), mode="bilinear", align_corners=TRAIN_ALIGN)
    with torch.no_grad():
        features = features_net(image) * mask  # (B, C, H, W)
    pred_softmax = torch.softmax(pred, dim=1)

    weights = pred_softmax * mask
    basis = torch.einsum("brhw,bchw->brc", weights, features)
    basis = basis / (weights.sum(dim=(2, 3)).unsqueeze(-1) + POOL_EPS)  # (B, K, C)
    loss_feat = pred.new_zeros(())
    for weights_b, features_b, mask_b in zip(weights, features, mask):
        loss_feat = loss_feat + consistency_loss(weights_b[None], features_b[None], mask_b[None])
    loss_color = consistency_loss(weights, lab, mask)
    loss_contrastive = contrastive_loss_loop(basis, draws.positives, loss_cfg.temperature)

    grid = tps_grid_per_sample(draws.warp, (H, W), "cpu" if grid_on_cpu else device).to(device)
    # the reference normalises in the data loader and warps the normalised view: outside pixels are zero input
    view2_tps = F.grid_sample(
        preprocess(view2), grid, mode="bilinear", padding_mode="zeros", align_corners=WARP_ALIGN
    )
    mask_tps = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=WARP_ALIGN)
    pred_tps = F.interpolate(model(view2_tps), size=(H, W), mode="bilinear", align_corners=TRAIN_ALIGN)
    target = F.grid_sample(
        pred.detach(), grid, mode="bilinear", padding_mode="zeros", align_corners=WARP_ALIGN
    )
    loss_eqv = equivariance_loss(pred_tps, target, mask_tps)

    terms = {
        "eqv": loss_cfg.lambda_eqv * loss_eqv,
        "feat": loss_cfg.lambda_feat * loss_feat,
        "color": loss_cfg.lambda_color * loss_color,
        "contrastive": loss_cfg.lambda_contrastive * loss_contrastive,
    }
    total = terms["eqv"] + terms["feat"] + terms["color"] + terms["contrastive"]
    total.backward()
    params = list(model.parameters())
    if clip_grad > 0:
        grad_norm = nn.utils.clip_grad_norm_(params, clip_grad)
    else:
        grad_norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in params if p.grad is not None])
        )
    optimizer.step()
    out = {k: v.detach() for k, v in terms.items()}
    out["total"] = total.detach()
    out["grad_norm"] = grad_norm.detach()
    return out


__all__ = [
    "StepDraws",
    "color_jitter_per_image",
    "consistency_loss",
    "contrastive_loss_loop",
    "draw_step_randomness",
    "equivariance_loss",
    "lab_per_image",
    "naive_reference_step",
    "source_control_points",
    "tps_grid_per_sample",
]
