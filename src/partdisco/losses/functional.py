"""The four training losses as pure, batch-vectorised functions.

Notation: ``probs`` (B, K, H, W) are softmax part probabilities, ``fg_mask`` (B, 1, H, W) the foreground,
``features`` (B, C, H, W) any per-pixel descriptor (frozen perceptual features, or Lab colour). Every
function works for any batch size >= 2 (contrastive) or >= 1 (the others) and keeps no state.

Where the reference (``subhc/unsup-parts`` loss.py / trainer_ours.py) loops over images, these compute
the same value from per-part sufficient statistics, so no (K, C, H, W) intermediate is ever built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from partdisco.geometry.upsampled import Upsampled, weighted_moments

POOL_EPS = 1e-7  # ref: trainer_ours.py:135-136
VARIANCE_EPS = 1e-5  # ref: loss.py:31-40
KL_EPS = 1e-7  # ref: trainer_ours.py:168


def _check(name: str, x: Tensor, dims: int, channels: int | None = None) -> None:
    if x.dim() != dims or (channels is not None and x.shape[1] != channels):
        want = {4: "(B, C, H, W)", 3: "(B, K, D)"}.get(dims, f"{dims}-D")
        if channels is not None and dims == 4:
            want = f"(B, {channels}, H, W)"
        raise ValueError(f"expected {name} of shape {want}, got {tuple(x.shape)}")


def _check_maps(probs: Tensor, fg_mask: Tensor, features: Tensor | Upsampled | None = None) -> None:
    _check("probs", probs, 4)
    _check("fg_mask", fg_mask, 4, 1)
    if fg_mask.shape[0] != probs.shape[0] or fg_mask.shape[-2:] != probs.shape[-2:]:
        raise ValueError(f"fg_mask {tuple(fg_mask.shape)} does not match probs {tuple(probs.shape)}")
    if features is not None:
        if not isinstance(features, Upsampled):  # Upsampled: its shape is (B, C, H, W) by construction
            _check("features", features, 4)
        if features.shape[0] != probs.shape[0] or features.shape[-2:] != probs.shape[-2:]:
            raise ValueError(f"features {tuple(features.shape)} do not match probs {tuple(probs.shape)}")


def pool_part_features(probs: Tensor, fg_mask: Tensor, features: Tensor, eps: float = POOL_EPS) -> Tensor:
    """Soft-mask-weighted mean descriptor of each part (the part descriptor z_k, ref §1.5).

    ``z[b, k] = sum_u p_k(u) m(u) phi(u) / (sum_u p_k(u) m(u) + eps)``.

    Args:
        probs: (B, K, H, W) part probabilities.
        fg_mask: (B, 1, H, W) foreground in [0, 1].
        features: (B, C, H, W) descriptors (background need not be zeroed).
        eps: denominator guard.

    Returns:
        (B, K, C) part descriptors.

    Example:
        >>> p = torch.ones(1, 1, 2, 2); m = torch.ones(1, 1, 2, 2)
        >>> f = torch.arange(4.0).view(1, 1, 2, 2)
        >>> pool_part_features(p, m, f).item()
        1.5
    """
    _check_maps(probs, fg_mask, features)
    weights = probs * fg_mask  # (B, K, H, W)
    sums = torch.einsum("bkhw,bchw->bkc", weights, features * fg_mask)  # (B, K, C)
    mass = weights.sum(dim=(2, 3)).unsqueeze(-1)  # (B, K, 1)
    return sums / (mass + eps)


def within_part_variance(
    probs: Tensor, fg_mask: Tensor, features: Tensor, eps: float = VARIANCE_EPS
) -> Tensor:
    """Per-image weighted within-part variance, normalised by the foreground area (ref §2.1, §2.3).

    ``L_b = sum_k sum_c sum_u p_k m (phi_c(u) - mu_kc)^2 / (sum_u m + eps)`` with
    ``mu_kc = sum_u p_k m phi_c / (sum_u p_k m + eps)``. It is computed from per-part sums
    ``S0, S1, S2`` after centring each image's features on their foreground mean (which leaves the
    variance unchanged and keeps float32 accurate).

    Args:
        probs: (B, K, H, W) part probabilities.
        fg_mask: (B, 1, H, W) foreground in [0, 1].
        features: (B, C, H, W) descriptors.
        eps: denominator guard (ref 1e-5).

    Returns:
        (B,) per-image loss; the reference sums it over the batch for L_f and averages it for L_v.

    Example:
        >>> p = torch.ones(1, 1, 2, 2); m = torch.ones(1, 1, 2, 2)
        >>> within_part_variance(p, m, torch.full((1, 3, 2, 2), 7.0)).round(decimals=6)  # constant features
        tensor([0.])
    """
    return part_feature_statistics(probs, fg_mask, features, eps=eps)[1]


def part_feature_statistics(
    probs: Tensor,
    fg_mask: Tensor,
    features: Tensor | Upsampled,
    pool_eps: float = POOL_EPS,
    eps: float = VARIANCE_EPS,
) -> tuple[Tensor, Tensor]:
    """Part descriptors and within-part variance from one pass of sufficient statistics.

    Equal to ``(pool_part_features(...), within_part_variance(...))`` for binary masks (for soft masks the
    descriptor weights the features by ``p m`` instead of ``p m^2``), but it reads the (B, C, H, W)
    features four times instead of seven and builds no masked copy of them: the part sums ``S1`` of the
    centred features give the descriptors as ``(S1 + mean_fg S0) / (S0 + eps)``.

    Args:
        probs: (B, K, H, W) part probabilities.
        fg_mask: (B, 1, H, W) foreground in [0, 1].
        features: (B, C, H, W) descriptors, any float dtype (bf16 is promoted to float32 as it is read), or
            small maps that stand for their bilinear upsampling to (H, W)
            (:class:`~partdisco.geometry.upsampled.Upsampled`, what tapped feature networks give): the
            same statistics up to float rounding, without the full-size features (issue #24).
        pool_eps: descriptor denominator guard (ref 1e-7).
        eps: variance denominator guard (ref 1e-5).

    Returns:
        (B, K, C) part descriptors and (B,) per-image variance normalised by the foreground area, float32
        (float64 when ``probs`` or ``features`` are float64).

    Example:
        >>> p = torch.ones(1, 1, 1, 2); m = torch.ones(1, 1, 1, 2)
        >>> z, v = part_feature_statistics(p, m, torch.tensor([0.0, 2.0]).view(1, 1, 1, 2))
        >>> z.item(), round(v.item(), 4)
        (1.0, 1.0)
    """
    _check_maps(probs, fg_mask, features)
    if isinstance(features, Upsampled):
        return _upsampled_feature_statistics(probs, fg_mask, features, pool_eps, eps)
    # a float32 island; float64 inputs stay float64 so that the maths can be gradchecked
    dtype = torch.float64 if torch.float64 in (probs.dtype, features.dtype) else torch.float32
    with torch.autocast(device_type=probs.device.type, enabled=False):
        probs, fg_mask = probs.to(dtype), fg_mask.to(dtype)
        area = fg_mask.sum(dim=(2, 3))  # (B, 1)
        # only approximately needed (centring leaves the variance unchanged), so it is summed in the
        # features' own dtype without a float32 copy; the same value is used for the descriptors
        fg_sum = torch.einsum("bohw,bchw->bc", fg_mask.to(features.dtype), features).to(dtype)  # (B, C)
        fg_mean = fg_sum / (area + eps)  # (B, C)
        centred = torch.sub(features, fg_mean[:, :, None, None]).to(dtype)  # (B, C, H, W)
        weights = probs * fg_mask  # (B, K, H, W)
        s0 = weights.sum(dim=(2, 3))  # (B, K)
        s1 = torch.einsum("bkhw,bchw->bkc", weights, centred)  # (B, K, C)
        s2 = torch.einsum("bkhw,bchw->bkc", weights, centred.square())  # (B, K, C)
        return _descriptors_and_variance(s0, s1, s2, fg_mean, area, pool_eps, eps)


def _descriptors_and_variance(
    s0: Tensor, s1: Tensor, s2: Tensor, fg_mean: Tensor, area: Tensor, pool_eps: float, eps: float
) -> tuple[Tensor, Tensor]:
    """Part descriptors and the normalised variance from the sums of the foreground-centred features."""
    mean = s1 / (s0.unsqueeze(-1) + eps)  # (B, K, C)
    residual = s2 - 2.0 * mean * s1 + mean * mean * s0.unsqueeze(-1)  # (B, K, C)
    variance = residual.clamp_min(0.0).sum(dim=(1, 2)) / (area.squeeze(1) + eps)  # (B,)
    descriptors = (s1 + fg_mean.unsqueeze(1) * s0.unsqueeze(-1)) / (s0.unsqueeze(-1) + pool_eps)
    return descriptors, variance


def _upsampled_feature_statistics(
    probs: Tensor, fg_mask: Tensor, features: Upsampled, pool_eps: float, eps: float
) -> tuple[Tensor, Tensor]:
    """:func:`part_feature_statistics` of upsampled maps, at the maps' own resolution."""
    dtype = torch.float64 if torch.float64 in (probs.dtype, features.maps[0].dtype) else torch.float32
    with torch.autocast(device_type=probs.device.type, enabled=False):
        probs, fg_mask = probs.to(dtype), fg_mask.to(dtype)
        area = fg_mask.sum(dim=(2, 3))  # (B, 1)
        fg_sum, _ = weighted_moments(fg_mask, features, second=False)  # (B, 1, C)
        fg_mean = fg_sum[:, 0] / (area + eps)  # (B, C)
        weights = probs * fg_mask  # (B, K, H, W)
        s0 = weights.sum(dim=(2, 3))  # (B, K)
        s1, s2 = weighted_moments(weights, features, centre=fg_mean)  # (B, K, C) each
        assert s2 is not None
        return _descriptors_and_variance(s0, s1, s2, fg_mean, area, pool_eps, eps)


def sample_positive_images(
    batch_size: int,
    num_parts: int,
    generator: torch.Generator | None = None,
    reference_sampling: bool = False,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Pick, for every anchor (b, k), the image whose part k is its positive.

    By default the positive image is uniform over the B - 1 other images. With ``reference_sampling`` the
    reference's off-by-one is reproduced (``randint(1, B - 1)`` into the ascending list of the other images,
    so the lowest-indexed other image is never chosen); at B = 2 that leaves no candidate (the reference
    crashes), so the single other image is used.

    Args:
        batch_size: B >= 2.
        num_parts: K.
        generator: torch.Generator (CPU) for replayable draws.
        reference_sampling: reproduce the reference's quirk.
        device: device of the returned tensor.

    Returns:
        (B, K) int64 index of the positive image, never equal to the anchor's own image.
    """
    if batch_size < 2:
        raise ValueError(f"contrastive loss needs batch_size >= 2, got {batch_size}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    own = torch.arange(batch_size, device=gen_device).view(-1, 1)
    if reference_sampling and batch_size > 2:
        # index into sorted others [0..B-1] \ {b}, drawn from {1, ..., B-2}
        idx = torch.randint(
            1, batch_size - 1, (batch_size, num_parts), generator=generator, device=gen_device
        )
        positive = idx + (idx >= own).long()
    else:
        offset = torch.randint(1, batch_size, (batch_size, num_parts), generator=generator, device=gen_device)
        positive = (own + offset) % batch_size
    return positive.to(device)


def contrastive_infonce(
    descriptors: Tensor,
    positive_images: Tensor,
    temperature: float = 0.19,
    anchor_rows: tuple[int, int] | None = None,
) -> Tensor:
    """InfoNCE over part descriptors across the batch (ref §2.2), averaged over the anchors.

    Anchor (b, k); positive: part k of image ``positive_images[b, k]``; negatives: every descriptor of a
    *different* part index j != k in the batch, the anchor's own image included (B(K-1) of them).

    Args:
        descriptors: (B, K, D) descriptors of the whole (possibly all-gathered) batch; L2-normalised here.
        positive_images: (B, K) int64 from :func:`sample_positive_images`, indices into ``descriptors``.
        temperature: softmax temperature tau (ref 0.19).
        anchor_rows: (start, end) images that act as anchors (default all). Under DDP with gathered
            descriptors each rank uses its own rows, so the mean over ranks equals the global-batch loss.

    Returns:
        Scalar loss.

    Example:
        >>> z = torch.eye(2).repeat(2, 1, 1)  # 2 images, 2 parts, identical across images
        >>> pos = torch.tensor([[1, 1], [0, 0]])
        >>> round(contrastive_infonce(z, pos, temperature=0.1).item(), 4)
        0.0001
    """
    _check("descriptors", descriptors, 3)
    B, K, D = descriptors.shape
    if B < 2:
        raise ValueError(f"contrastive loss needs at least 2 images in the batch, got {B}")
    if positive_images.shape != (B, K):
        raise ValueError(f"expected positive_images of shape ({B}, {K}), got {tuple(positive_images.shape)}")
    start, end = anchor_rows if anchor_rows is not None else (0, B)
    if not 0 <= start < end <= B:
        raise ValueError(f"anchor_rows {anchor_rows} out of range for a batch of {B}")
    with torch.autocast(device_type=descriptors.device.type, enabled=False):
        z = F.normalize(descriptors.float(), dim=-1)  # (B, K, D)
        bank = z.reshape(B * K, D)
        anchors = z[start:end].reshape(-1, D)  # (A * K, D)
        logits = anchors @ bank.t() / temperature  # (A * K, B * K)
        part = torch.arange(K, device=z.device)
        negative = part.repeat(end - start).view(-1, 1) != part.repeat(B).view(1, -1)  # (A * K, B * K)
        pos_index = (positive_images[start:end].to(z.device) * K + part).reshape(-1)  # (A * K,)
        pos_logit = logits.gather(1, pos_index.view(-1, 1)).squeeze(1)  # (A * K,)
        neg_logits = logits.masked_fill(~negative, float("-inf"))
        all_logits = torch.cat([pos_logit.unsqueeze(1), neg_logits], dim=1)  # (A * K, 1 + B * K)
        return (torch.logsumexp(all_logits, dim=1) - pos_logit).mean()


def equivariance_kl(
    pred_logits: Tensor, target_logits: Tensor, fg_mask: Tensor, eps: float = KL_EPS
) -> Tensor:
    """Foreground-weighted KL(target || pred) per pixel (ref §2.4), averaged over images.

    ``target = softmax(target_logits)`` (the warped, detached logits of view 1), ``pred =
    log_softmax(pred_logits)`` (logits of the warped view 2). Per image the KL map is weighted by the
    warped foreground and divided by its sum.

    Args:
        pred_logits: (B, K, H, W) logits on the warped view.
        target_logits: (B, K, H, W) warped logits of the other view (detached by the caller or here).
        fg_mask: (B, 1, H, W) warped foreground in [0, 1].
        eps: denominator guard.

    Returns:
        Scalar loss.

    Example:
        >>> x = torch.randn(2, 4, 8, 8)
        >>> equivariance_kl(x, x, torch.ones(2, 1, 8, 8)).abs().item() < 1e-6
        True
    """
    _check("pred_logits", pred_logits, 4)
    if target_logits.shape != pred_logits.shape:
        raise ValueError(
            f"target_logits {tuple(target_logits.shape)} must match pred_logits {tuple(pred_logits.shape)}"
        )
    _check_maps(pred_logits, fg_mask)
    with torch.autocast(device_type=pred_logits.device.type, enabled=False):
        log_pred = F.log_softmax(pred_logits.float(), dim=1)
        log_target = F.log_softmax(target_logits.detach().float(), dim=1)
        kl = (log_target.exp() * (log_target - log_pred)).sum(dim=1, keepdim=True)  # (B, 1, H, W)
        weights = fg_mask.float()
        per_image = (kl * weights).sum(dim=(1, 2, 3)) / (weights.sum(dim=(1, 2, 3)) + eps)  # (B,)
        return per_image.mean()


def background_bce(background_prob: Tensor, fg_mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Binary cross-entropy pushing a background channel towards ``1 - fg_mask``.

    Only used when the segmenter has a background channel (SCOPS-style); the reference has none.

    Args:
        background_prob: (B, 1, H, W) softmax probability of the background channel.
        fg_mask: (B, 1, H, W) foreground in [0, 1].
        eps: clamp for the logarithms.

    Returns:
        Scalar loss.
    """
    _check_maps(background_prob, fg_mask)
    p = background_prob.float().clamp(eps, 1 - eps)
    target = 1.0 - fg_mask.float()
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()
