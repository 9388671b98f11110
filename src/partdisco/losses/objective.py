"""The weighted training objective: L = 5700 L_e + 5 L_f + 30 L_v + 2300 L_c (ref §2.5)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from partdisco.config import LossConfig
from partdisco.geometry.upsampled import Upsampled
from partdisco.losses.foreground import (
    border_background_loss,
    boundary_saliency,
    foreground_area_loss,
    presence_loss,
    saliency_loss,
)
from partdisco.losses.functional import (
    background_bce,
    contrastive_infonce,
    equivariance_kl,
    part_feature_statistics,
    sample_positive_images,
    within_part_variance,
)


def part_probabilities(logits: Tensor, background_channel: bool) -> tuple[Tensor, Tensor | None]:
    """Softmax over channels; split off channel 0 when the model predicts background.

    Args:
        logits: (B, K, H, W) or (B, K + 1, H, W) with channel 0 = background.
        background_channel: whether channel 0 is background.

    Returns:
        (B, K, H, W) part probabilities, renormalised over the K parts, and the (B, 1, H, W) background
        probability or None.
    """
    if not background_channel:
        return torch.softmax(logits.float(), dim=1), None
    probs = torch.softmax(logits.float(), dim=1)
    return torch.softmax(logits[:, 1:].float(), dim=1), probs[:, :1]


class Objective:
    """Combine the loss terms with the configured weights.

    Args:
        cfg: the ``loss`` slice of the run config.
        background_channel: the segmenter predicts a background channel 0.
        world_size: number of data-parallel ranks. L_f is a *sum* over the batch (ref), and DDP averages
            gradients over ranks, so each rank scales its sum by ``world_size`` to keep the global sum.
        gather: callable all-gathering (B, K, D) descriptors from every rank *with gradients* (None: use
            only this rank's images as negatives and positives).
        rank: this rank's index (its rows in the gathered batch).
        mask_free: learn the background channel without masks (needs ``background_channel``): the given
            ``fg_mask`` is then only the valid (in-image) region, the four losses run on the predicted soft
            foreground ``1 - p_bg``, L_e covers all K + 1 channels, and the priors of
            :mod:`partdisco.losses.foreground` (border, area, presence) are added.
    """

    def __init__(
        self,
        cfg: LossConfig,
        background_channel: bool = False,
        world_size: int = 1,
        gather: Callable[[Tensor], Tensor] | None = None,
        rank: int = 0,
        mask_free: bool = False,
    ) -> None:
        if mask_free and not background_channel:
            raise ValueError("mask-free training needs a background channel (model.background_channel=true)")
        self.mask_free = mask_free
        self.cfg = cfg
        self.background_channel = background_channel
        self.world_size = world_size
        self.gather = gather
        self.rank = rank

    def __call__(
        self,
        *,
        logits: Tensor,
        warped_logits: Tensor,
        target_logits: Tensor,
        fg_mask: Tensor,
        warped_fg_mask: Tensor,
        features: Tensor | Upsampled,
        lab: Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Compute the named, weighted loss terms and their sum.

        Args:
            logits: (B, K, H, W) upsampled logits on colour-jittered view 1.
            warped_logits: (B, K, H, W) upsampled logits on the warped view 2.
            target_logits: (B, K, H, W) warped logits of view 1 (detached here).
            fg_mask: (B, 1, H, W) foreground of the clean image.
            warped_fg_mask: (B, 1, H, W) warped foreground.
            features: (B, C, H, W) frozen perceptual features of the clean image, or small maps standing
                for their upsampling (:class:`~partdisco.geometry.upsampled.Upsampled`).
            lab: (B, 3, H, W) colour target (CIE-Lab, or RGB * 255 - 128 when ``use_lab`` is off).
            generator: CPU generator for the contrastive positive draw; it must be in the same state on every
                rank when descriptors are gathered, so all ranks agree on the global positives.

        Returns:
            dict with ``eqv``, ``feat``, ``color``, ``contrastive`` (each already weighted), ``bg`` when the
            model has a background channel trained from masks, ``fg_border``, ``fg_area``, ``presence``
            (and ``saliency`` when weighted) in mask-free mode, and ``total``; every entry is a scalar.
        """
        cfg = self.cfg
        probs, bg_prob = part_probabilities(logits, self.background_channel)
        B, K = probs.shape[:2]
        terms: dict[str, Tensor] = {}
        valid_mask = fg_mask
        fg_contrast = fg_mask  # the mask the contrastive descriptors are pooled with
        if self.mask_free and cfg.bg_as_part:
            # PDiscoNet-style: background is one more part in L_f, L_v, L_c, over the valid image; the part
            # channels' full-softmax probabilities are p(k | fg) * p(fg), the parts weighted by the foreground
            probs = torch.softmax(logits.float(), dim=1)  # (B, K + 1, H, W)
            B, K = probs.shape[:2]
        elif self.mask_free:
            assert bg_prob is not None
            fg_pred = (1.0 - bg_prob) * valid_mask  # (B, 1, H, W) predicted soft foreground
            fg_mask = fg_pred.detach() if cfg.fg_detach else fg_pred
            # the contrastive term may still move the foreground: "the object is what images share"
            fg_contrast = fg_pred if cfg.fg_contrastive_grad else fg_mask

        part_descriptors, feat_variance = part_feature_statistics(probs, fg_mask, features)  # (B, K, C), (B,)
        if fg_contrast is not fg_mask:
            part_descriptors, _ = part_feature_statistics(probs, fg_contrast, features)  # (B, K, C)
        feat = feat_variance.sum() * self.world_size  # ref: summed over the batch
        color = within_part_variance(probs, fg_mask, lab).mean()  # ref: averaged over the batch
        if self.gather is not None and self.world_size > 1:
            everyone = self.gather(part_descriptors)  # (W * B, K, C), gradients flow back to each rank
            positives = sample_positive_images(
                everyone.shape[0], K, generator, cfg.reference_positive_sampling, device=probs.device
            )
            rows = (self.rank * B, (self.rank + 1) * B)
            contrastive = contrastive_infonce(everyone, positives, cfg.temperature, anchor_rows=rows)
        else:
            positives = sample_positive_images(
                B, K, generator, cfg.reference_positive_sampling, device=probs.device
            )
            contrastive = contrastive_infonce(part_descriptors, positives, cfg.temperature)
        pred, target = warped_logits, target_logits
        if self.background_channel and not self.mask_free:
            pred, target = warped_logits[:, 1:], target_logits[:, 1:]
        eqv = equivariance_kl(pred, target, warped_fg_mask)

        terms["eqv"] = cfg.lambda_eqv * eqv
        terms["feat"] = cfg.lambda_feat * feat
        terms["color"] = cfg.lambda_color * color
        terms["contrastive"] = cfg.lambda_contrastive * contrastive
        if self.mask_free:
            assert bg_prob is not None
            all_probs = torch.softmax(logits.float(), dim=1)  # (B, K + 1, H, W)
            terms["fg_border"] = cfg.lambda_border * border_background_loss(bg_prob, cfg.border_width)
            terms["fg_area"] = cfg.lambda_area * foreground_area_loss(
                1.0 - bg_prob, cfg.fg_area_min, cfg.fg_area_max
            )
            terms["presence"] = cfg.lambda_presence * presence_loss(all_probs)
            if cfg.lambda_saliency > 0:
                fraction = 0.5 * (cfg.fg_area_min + cfg.fg_area_max)
                saliency = boundary_saliency(lab, cfg.border_width)
                terms["saliency"] = cfg.lambda_saliency * saliency_loss(1.0 - bg_prob, saliency, fraction)
        elif bg_prob is not None:
            terms["bg"] = cfg.lambda_bg * background_bce(bg_prob, fg_mask)
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms
