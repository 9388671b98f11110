"""The discovered foreground on any photo: the classifier discovery learnt, applied with its network.

Foreground discovery (:mod:`partdisco.engine.discover`) fits one linear classifier over the training photos
(:class:`~partdisco.models.foreground.ForegroundClassifier`); a model trained with it carries it
(``model.inference_defaults.foreground``). This module applies it to one image as discovery itself does:
the ImageNet EfficientNet-Lite0 of the installed package (frozen, the weights' own normalisation) gives
unit-normalised stride-8 features of stages 3 and 4, the classifier gives a probability at stride 8, which
is upsampled, snapped to the image's colour edges by the (fast) guided filter and thresholded.

On real photos this foreground is better than the segmenter's own background channel, which was taught by
the discovered masks of the training photos at the training size only (docs/EXPERIMENTS.md: pets 57.7 ->
70.3 fg IoU on the held-out photos), so :func:`partdisco.engine.inference.segment_images` uses it by default.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
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
# At segment time the guided filter that snaps the stride-8 probability to the photo's edges runs as the fast
# guided filter, its fits on the input shrunk 4 times (:func:`.refine.guided_filter`):
# on the held-out photos of the three development sets its masks agree with the exact filter's at 97.7-98.6 %
# IoU and score the same against the true masks (-0.2 to +0.9 points), for 25 ms less per photo on a 2-core
# CPU (docs/EXPERIMENTS.md, "The fast guided filter at segment time"; issue #24). Discovery's training masks
# keep the exact filter (subsample 1): there it costs a few per cent of a run.
REFINE_SUBSAMPLE = 4


class DiscoveryNetwork(Protocol):
    """What discovery needs from a network (:class:`EfficientNetDiscovery` by default)."""

    def __call__(self, image01: Tensor, with_logits: bool = True) -> tuple[Tensor, Tensor | None]:
        """(B, 3, H, W) RGB in [0, 1] -> (dense (B, D, h8, w8) features, class logits (B, C, h, w) or None).

        Every image of the batch is treated on its own (no batch statistics).

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
        net = load_efficientnet_lite("lite0", output_stride=32).to(self.device).eval()
        # channels-last: its depthwise convolutions ran 1.5x faster so on a 2-core CPU (33 -> 23 ms per
        # 320-px image, issue #24); the values are the same network's within float rounding
        self.net = net.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def __call__(self, image01: Tensor, with_logits: bool = True) -> tuple[Tensor, Tensor | None]:
        """(B, 3, H, W) RGB [0, 1] -> unit-norm (B, 152, H/8, W/8) features, (B, 1000, H/32, W/32) logits."""
        x = self.net.preprocess(image01.to(self.device))  # the weights' own normalisation
        x = x.contiguous(memory_format=torch.channels_last)
        stages = self.net.forward_stages(x, stages=None if with_logits else ("stage3", "stage4"))
        s3, s4 = stages["stage3"], stages["stage4"]
        s4 = F.interpolate(s4, size=s3.shape[-2:], mode="bilinear", align_corners=False)
        dense = torch.cat([F.normalize(s3, dim=1), F.normalize(s4, dim=1)], dim=1)  # (B, 152, h8, w8)
        if not with_logits:
            return dense.float(), None
        head = F.relu6(self.net._bn1(self.net._conv_head(stages["stage5"])))  # (B, 1280, h32, w32)
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
    """(..., D, h, w) features -> (..., h, w) probability of the classifier ``(mean, std, weight, bias)``."""
    mean, std, w, b = linear
    return torch.sigmoid(((dense.movedim(-3, -1) - mean) / std) @ w + b)


def device_of(network: DiscoveryNetwork) -> torch.device:
    """Where ``network`` runs (its ``device`` attribute; the CPU when it has none)."""
    return torch.device(getattr(network, "device", "cpu"))


def foreground_probability(
    network: DiscoveryNetwork,
    image: np.ndarray,
    inp: Tensor,
    linear: tuple[Tensor, ...],
    radius_frac: float,
    eps: float,
    subsample: int = 1,
) -> Tensor:
    """One image's foreground probability (H, W) on the CPU: classifier at stride 8 -> guided filter.

    Args:
        network: the feature network.
        image: the uint8 (H, W, 3) image (its size is the output's).
        inp: its network input (:func:`network_input`).
        linear: the classifier as tensors on the network's device (:func:`classifier_tensors`).
        radius_frac: guided filter radius as a fraction of the input's shorter side (0: off).
        eps: the guided filter's ridge.
        subsample: the guided filter's subsampling (1 = exact; :data:`REFINE_SUBSAMPLE` = segment's).
    """
    return foreground_probabilities(network, [image.shape[:2]], inp, linear, radius_frac, eps, subsample)[0]


def foreground_probabilities(
    network: DiscoveryNetwork,
    sizes: Sequence[tuple[int, int]],
    inp: Tensor,
    linear: tuple[Tensor, ...],
    radius_frac: float,
    eps: float,
    subsample: int = 1,
) -> list[Tensor]:
    """:func:`foreground_probability` of a batch of network inputs of one size, in one network pass.

    Args:
        network: the feature network.
        sizes: each image's (H, W) (the size of its output).
        inp: (B, 3, h, w) the images' network inputs (:func:`network_input`, stacked).
        linear: the classifier as tensors on the network's device (:func:`classifier_tensors`).
        radius_frac: guided filter radius as a fraction of the input's shorter side (0: off).
        eps: the guided filter's ridge.
        subsample: the guided filter's subsampling (1 = exact; :data:`REFINE_SUBSAMPLE` = segment's).

    Returns:
        B float (H, W) probabilities on the CPU.
    """
    dense, _ = network(inp, with_logits=False)  # (B, D, h8, w8) on the network's device: the rest stays there
    prob = linear_probability(dense, linear)  # (B, h8, w8)
    prob = F.interpolate(prob[:, None], size=inp.shape[-2:], mode="bilinear", align_corners=False)
    if radius_frac > 0:
        radius = refine_radius(min(inp.shape[-2:]), radius_frac)
        prob = guided_filter(inp.to(dense.device), prob, radius, eps, subsample).clamp(0, 1)
    return [
        F.interpolate(prob[i : i + 1], size=size, mode="bilinear", align_corners=False)[0, 0].cpu()
        for i, size in enumerate(sizes)
    ]


def threshold_mask(prob: Tensor, threshold: float = 0.5) -> Tensor:
    """``prob > threshold``, never empty: the most object-like tenth of the image when nothing passes."""
    mask = prob > threshold
    if not mask.any():
        mask = prob >= prob.flatten().quantile(0.9)
    return mask


def discovered_mask(
    clf: ForegroundClassifier, image: np.ndarray, device: torch.device | str = "cpu",
    network: DiscoveryNetwork | None = None, subsample: int = REFINE_SUBSAMPLE,
) -> np.ndarray:  # fmt: skip
    """The discovered foreground of one uint8 (H, W, 3) image: float32 (H, W) of 0 / 1 (1 = object).

    Args:
        clf: the classifier (``model.inference_defaults.foreground``).
        image: the image.
        device: where the default network runs.
        network: the feature network (default: the package's EfficientNet-Lite0, :func:`discovery_network`).
        subsample: the guided filter's subsampling (:data:`REFINE_SUBSAMPLE`; 1 = the exact filter).
    """
    return discovered_masks(clf, [image], device, network, subsample=subsample)[0]


def discovered_masks(
    clf: ForegroundClassifier,
    images: Sequence[np.ndarray],
    device: torch.device | str = "cpu",
    network: DiscoveryNetwork | None = None,
    batch_size: int = 1,
    subsample: int = REFINE_SUBSAMPLE,
) -> list[np.ndarray]:
    """:func:`discovered_mask` of many images, batching those whose network inputs have the same size.

    Every image of a batch is treated on its own (the network, the classifier and the guided filter have
    no batch statistics), so a batch changes the masks only by float rounding (tested). On a 2-core CPU a
    batch is slower per image than one image at a time (Lite0 at 320 px: 23 ms alone, 33 ms in a batch
    of 8; the guided filter 16 vs 34 ms: their activations outgrow the caches, issue #24), hence the
    default of 1; a GPU gains from batches.

    Args:
        clf: the classifier (``model.inference_defaults.foreground``).
        images: uint8 (H, W, 3) images.
        device: where the default network runs.
        network: the feature network (default: the package's EfficientNet-Lite0, :func:`discovery_network`).
        batch_size: images per network pass, >= 1.
        subsample: the guided filter's subsampling (:data:`REFINE_SUBSAMPLE`; 1 = the exact filter, as
            discovery's training masks).
    """
    net = network if network is not None else discovery_network(str(torch.device(device)))
    linear = classifier_tensors(clf, device_of(net))
    inputs = [network_input(image, clf.size) for image in images]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, inp in enumerate(inputs):
        groups[tuple(inp.shape)].append(i)
    masks: list[np.ndarray | None] = [None] * len(images)
    with torch.no_grad():
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                probs = foreground_probabilities(
                    net,
                    [images[i].shape[:2] for i in chunk],
                    torch.cat([inputs[i] for i in chunk]),
                    linear,
                    clf.refine_radius,
                    clf.refine_eps,
                    subsample,
                )
                for i, prob in zip(chunk, probs):
                    masks[i] = threshold_mask(prob, clf.threshold).numpy().astype(np.float32)
    return [m for m in masks if m is not None]
