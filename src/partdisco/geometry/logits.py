"""Logits on the network's output grid -> maps at the image size: one upsampling, three named conventions.

The segmenter predicts logits at output stride 8 (or the ViT's patch size); every consumer upsamples them
bilinearly to the image. The reference does it with two ``align_corners`` settings, depending on where:

- :data:`ALIGN_TRAIN` (True): training (ref ``trainer_ours.py:79``) and therefore inference (``partdisco
  segment``, the training pictures, the diagnostics): the maps the losses shaped.
- :data:`ALIGN_KEYPOINTS` (False): the CUB keypoint protocol and keypoint regression (ref CUB
  ``eval.ipynb`` ``get_nmi_inputs``), and the DeepFashion Full protocol (``get_full_nmi_ari``).
- :data:`ALIGN_PIXELS` (True): the pixel protocol (ref DeepFashion ``eval.ipynb`` ``get_fg_nmi_ari``).

These three names are the only place the choice is made; :func:`upsample_logits` is the only upsampling
of logits (``metrics.keypoints.logits_to_labels``, the evaluator, the training step and
``engine.inference`` call it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ALIGN_TRAIN = True  # ref: trainer_ours.py:79 upsamples logits with align_corners=True
ALIGN_KEYPOINTS = False  # ref: CUB eval.ipynb get_nmi_inputs, F.interpolate(..., align_corners=False)
ALIGN_PIXELS = True  # ref: DeepFashion eval.ipynb get_fg_nmi_ari, align_corners=True

__all__ = ["ALIGN_KEYPOINTS", "ALIGN_PIXELS", "ALIGN_TRAIN", "upsample_logits"]


def upsample_logits(logits: torch.Tensor, size: tuple[int, int], *, align_corners: bool) -> torch.Tensor:
    """Bilinear upsampling of logits to ``size``, in float32 (an fp32 island for bf16/fp16 logits).

    At the same size the logits are returned as float32 unchanged: bilinear resampling at scale 1 is the
    identity with either ``align_corners``.

    Args:
        logits: (B, C, h, w) logits of any float dtype.
        size: output (H, W).
        align_corners: one of :data:`ALIGN_TRAIN`, :data:`ALIGN_KEYPOINTS`, :data:`ALIGN_PIXELS`.

    Returns:
        float32 (B, C, H, W).

    Example:
        >>> x = torch.tensor([[[[0.0, 1.0]]]])  # (1, 1, 1, 2)
        >>> [round(v, 4) for v in upsample_logits(x, (1, 4), align_corners=True).flatten().tolist()]
        [0.0, 0.3333, 0.6667, 1.0]
        >>> upsample_logits(x, (1, 4), align_corners=False).flatten().tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    if logits.ndim != 4:
        raise ValueError(f"upsample_logits: expected logits (B, C, h, w), got {tuple(logits.shape)}")
    H, W = int(size[0]), int(size[1])
    scores = logits.float()
    if tuple(scores.shape[-2:]) == (H, W):
        return scores
    return F.interpolate(scores, size=(H, W), mode="bilinear", align_corners=align_corners)
