"""The discovered foreground on any photo: the classifier discovery learnt, applied with its network.

Foreground discovery (:mod:`partdisco.engine.discover`) fits one linear classifier over the training photos
(:class:`~partdisco.models.foreground.ForegroundClassifier`); a model trained with it carries it
(``model.inference_defaults.foreground``). This module applies it to one image as discovery itself does:
the ImageNet EfficientNet-Lite0 of the installed package (frozen, the weights' own normalisation) gives
unit-normalised stride-8 features of stages 3 and 4, the classifier gives a probability at stride 8, which
is upsampled, snapped to the image's colour edges by the guided filter and thresholded.

On real photos this foreground is better than the segmenter's own background channel, which was taught by
the discovered masks of the training photos at the training size only (docs/EXPERIMENTS.md: pets 57.7 ->
70.3 fg IoU on the held-out photos), so :func:`partdisco.engine.inference.segment_images` uses it by default.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from partdisco.engine.inference.refine import guided_filter, refine_radius
from partdisco.models.foreground import ForegroundClassifier

GRID = 32  # the network's input sides are multiples of its largest stride


class DiscoveryNetwork(Protocol):
    """What discovery needs from a network (:class:`EfficientNetDiscovery` by default)."""

    def __call__(self, image01: Tensor, with_logits: bool = True) -> tuple[Tensor, Tensor | None]:
        """(1, 3, H, W) RGB in [0, 1] -> (dense (1, D, h8, w8) features, class logits (1, C, h, w) or None).

        ``with_logits=False`` (the mask pass needs only the dense features) may skip the classifier.
        """
        ...


class EfficientNetDiscovery:
    """ImageNet EfficientNet-Lite0 of the installed package: stride-8 stages 3 + 4, stride-32 class logits.

    Args:
        device: where to run it.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        from partdisco.models.efficientnet import load_efficientnet_lite

        self.device = torch.device(device)
        self.net = load_efficientnet_lite("lite0", output_stride=32).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, image01: Tensor, with_logits: bool = True) -> tuple[Tensor, Tensor | None]:
        """(1, 3, H, W) RGB [0, 1] -> unit-norm (1, 152, H/8, W/8) features, (1, 1000, H/32, W/32) logits."""
        x = self.net.preprocess(image01.to(self.device))  # the weights' own normalisation
        stages = self.net.forward_stages(x, stages=None if with_logits else ("stage3", "stage4"))
        s3, s4 = stages["stage3"], stages["stage4"]
        s4 = F.interpolate(s4, size=s3.shape[-2:], mode="bilinear", align_corners=False)
        dense = torch.cat([F.normalize(s3, dim=1), F.normalize(s4, dim=1)], dim=1)  # (1, 152, h8, w8)
        if not with_logits:
            return dense.float(), None
        head = F.relu6(self.net._bn1(self.net._conv_head(stages["stage5"])))  # (1, 1280, h32, w32)
        logits = torch.einsum("bchw,kc->bkhw", head, self.net._fc.weight)
        logits = logits + self.net._fc.bias.view(1, -1, 1, 1)
        return dense.float(), logits.float()


@lru_cache(maxsize=4)
def discovery_network(device: str = "cpu") -> EfficientNetDiscovery:
    """The package's EfficientNet-Lite0 for discovery on ``device``, loaded once per process."""
    return EfficientNetDiscovery(device)


def network_input(image: np.ndarray, size: int) -> Tensor:
    """uint8 (H, W, 3) -> (1, 3, h, w) float in [0, 1], shorter side ``size``, sides multiples of 32."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = (max(GRID, round(side * scale / GRID) * GRID) for side in (h, w))
    pil = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)[None].float() / 255.0


def classifier_tensors(clf: ForegroundClassifier, device: torch.device) -> tuple[Tensor, ...]:
    """(mean, std, weight, bias) of ``clf`` as float32 tensors on ``device``."""
    values = (clf.mean, clf.std, clf.weight, [clf.bias])
    return tuple(torch.tensor(v, dtype=torch.float32, device=device) for v in values)


def linear_probability(dense: Tensor, linear: tuple[Tensor, ...]) -> Tensor:
    """(D, h, w) features -> (h, w) foreground probability of the classifier ``(mean, std, weight, bias)``."""
    mean, std, w, b = linear
    return torch.sigmoid(((dense.permute(1, 2, 0) - mean) / std) @ w + b)


def foreground_probability(
    network: DiscoveryNetwork,
    image: np.ndarray,
    inp: Tensor,
    linear: tuple[Tensor, ...],
    radius_frac: float,
    eps: float,
) -> Tensor:
    """One image's foreground probability (H, W) on the CPU: classifier at stride 8 -> guided filter.

    Args:
        network: the feature network.
        image: the uint8 (H, W, 3) image (its size is the output's).
        inp: its network input (:func:`network_input`).
        linear: the classifier as tensors on the network's device (:func:`classifier_tensors`).
        radius_frac: guided filter radius as a fraction of the input's shorter side (0: off).
        eps: the guided filter's ridge.
    """
    dense, _ = network(inp, with_logits=False)
    d = dense[0]  # on the network's device: the per-pixel work below stays there
    prob = linear_probability(d, linear)
    prob = F.interpolate(prob[None, None], size=inp.shape[-2:], mode="bilinear", align_corners=False)
    if radius_frac > 0:
        radius = refine_radius(min(inp.shape[-2:]), radius_frac)
        prob = guided_filter(inp.to(d.device), prob, radius, eps).clamp(0, 1)
    return F.interpolate(prob, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].cpu()


def threshold_mask(prob: Tensor, threshold: float = 0.5) -> Tensor:
    """``prob > threshold``, never empty: the most object-like tenth of the image when nothing passes."""
    mask = prob > threshold
    if not mask.any():
        mask = prob >= prob.flatten().quantile(0.9)
    return mask


def discovered_mask(
    clf: ForegroundClassifier, image: np.ndarray, device: torch.device | str = "cpu",
    network: DiscoveryNetwork | None = None,
) -> np.ndarray:  # fmt: skip
    """The discovered foreground of one uint8 (H, W, 3) image: float32 (H, W) of 0 / 1 (1 = object).

    Args:
        clf: the classifier (``model.inference_defaults.foreground``).
        image: the image.
        device: where the default network runs.
        network: the feature network (default: the package's EfficientNet-Lite0, :func:`discovery_network`).
    """
    net = network if network is not None else discovery_network(str(torch.device(device)))
    dev = getattr(net, "device", torch.device("cpu"))
    prob = foreground_probability(
        net, image, network_input(image, clf.size), classifier_tensors(clf, dev), clf.refine_radius,
        clf.refine_eps,
    )  # fmt: skip
    return threshold_mask(prob, clf.threshold).numpy().astype(np.float32)
