"""Foreground discovery: the object is what recurs across the photos (``data.foreground=discover``).

A folder of photos of one kind of object has no masks, and per-image priors (the border is background, the
object covers 5-40 % of the frame, the most salient blob) assume an object's size and mark salient
distractors as the object (docs/EXPERIMENTS.md). This module looks at the whole data set instead, with the
ImageNet EfficientNet-Lite0 that ships as a pip package (:mod:`partdisco.models.efficientnet`):

1. **What recurs.** Every image is classified; the ImageNet classes with the most probability summed over
   the data set (``data.discover_classes`` of them) are what the photos share: cats and dogs in a pet
   folder, cars in a car folder. Distractors and backgrounds change from photo to photo, so their classes
   do not pile up.
2. **Where it is.** The class-activation map of those classes (the classifier applied at every location
   of the last feature map, stride 32, softmax over the 1000 classes) gives each location the probability
   that it shows one of them: the object's coarse footprint, whatever its size or saliency.
3. **Its outline.** Confident locations (footprint above ``discover_seed_high`` or below
   ``discover_seed_low``, after a per-image min-max) of the same (at most 500, evenly spaced) images train
   one linear foreground / background classifier on the dense stride-8 features (stages 3 and 4): the
   object's appearance is learnt over the photos where it is clear and applied to every photo.
4. **Its edges.** The classifier's stride-8 probability is upsampled and snapped to the image's colour
   edges by the guided filter of :mod:`partdisco.engine.inference.refine`, then thresholded at 0.5.

The masks are written to ``RUN/foreground/masks/<stem>.png`` (at each image's size) with a contact sheet
``RUN/foreground/overview.png`` and ``RUN/foreground/discovery.json`` (the recurring classes, the seeds,
timings). Training then uses them as masks (object crops, a background channel taught by the masks' BCE),
so ``partdisco segment`` predicts the foreground on new photos with the trained model alone.

The feature network is injectable (:class:`DiscoveryNetwork`): tests use a tiny deterministic one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from partdisco.data.io import read_image
from partdisco.engine.inference.refine import guided_filter, refine_radius
from partdisco.fileio import write_json
from partdisco.visualise import image_grid, save_png

log = logging.getLogger(__name__)

MASKS = "masks"  # RUN/foreground/masks/<stem>.png
SEEDS_PER_IMAGE = 400  # seed locations drawn per image for the linear classifier
MAX_CLASS_IMAGES = 500  # images (evenly spaced) that find the recurring classes and give the seeds
GRID = 32  # the network's input sides are multiples of its largest stride
OVERVIEW_COLUMNS = 8  # overview.png: the first 3 rows of 8 training images


class DiscoveryNetwork(Protocol):
    """What discovery needs from a network (:class:`EfficientNetDiscovery` by default)."""

    def __call__(self, image01: Tensor, with_logits: bool = True) -> tuple[Tensor, Tensor | None]:
        """(1, 3, H, W) RGB in [0, 1] -> (dense (1, D, h8, w8) features, class logits (1, C, h, w) or None).

        ``with_logits=False`` (the mask pass needs only the dense features) may skip the classifier.
        """
        ...


@dataclass
class DiscoverySettings:
    """The ``data.discover_*`` keys (docs/DATA.md, "Foreground discovery")."""

    size: int = 320  # shorter side of the network input
    classes: int = 30  # recurring ImageNet classes that define the object
    seed_low: float = 0.2  # footprint (min-max per image) below this: background seed
    seed_high: float = 0.6  # above this: foreground seed
    refine_radius: float = 0.06  # guided filter radius as a fraction of the shorter side (0: off)
    refine_eps: float = 1e-3


@dataclass
class Discovery:
    """What :func:`discover_foreground` found."""

    mask_dir: Path
    classes: list[int]  # the recurring class indices, most probable first
    class_share: list[float]  # their share of the data set's summed probability
    fg_fraction: float  # mean foreground fraction of the masks
    seconds: float


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


def network_input(image: np.ndarray, size: int) -> Tensor:
    """uint8 (H, W, 3) -> (1, 3, h, w) float in [0, 1], shorter side ``size``, sides multiples of 32."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = (max(GRID, round(side * scale / GRID) * GRID) for side in (h, w))
    pil = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)[None].float() / 255.0


def recurring_classes(
    network: DiscoveryNetwork, images: Sequence[Tensor], count: int
) -> tuple[Tensor, Tensor]:
    """The ``count`` classes with the most probability summed over ``images`` (image-level softmax).

    Returns:
        (class indices, most probable first; their share of the total probability).
    """
    total: Tensor | None = None
    for image in images:
        _, logits = network(image)
        assert logits is not None
        probs = logits.mean(dim=(2, 3)).softmax(dim=1)[0].cpu()  # (C,)
        total = probs if total is None else total + probs
    assert total is not None
    share = total / total.sum()
    top = share.argsort(descending=True)[: max(1, min(count, share.numel()))]
    return top, share[top]


def footprint(logits: Tensor, classes: Tensor) -> Tensor:
    """(1, C, h, w) logits -> (h, w) probability mass on ``classes`` at every location, min-max per image."""
    mass = logits[0].softmax(dim=0)[classes.to(logits.device)].sum(dim=0)
    lo, hi = mass.min(), mass.max()
    return ((mass - lo) / (hi - lo).clamp_min(1e-6)).cpu()


def fit_linear(
    features: Tensor, labels: Tensor, steps: int = 100, weight_decay: float = 1e-3
) -> tuple[Tensor, ...]:
    """Class-balanced logistic regression (L-BFGS) on standardised features.

    Args:
        features: (N, D) float.
        labels: (N,) float in {0, 1} (1 = foreground).
        steps: L-BFGS iterations.
        weight_decay: L2 penalty on the weights.

    Returns:
        (mean (D,), std (D,), weights (D,), bias (1,)): ``sigmoid(((x - mean) / std) @ w + b)``.

    Example:
        >>> x = torch.cat([torch.randn(50, 2) + 3, torch.randn(50, 2) - 3])
        >>> y = torch.cat([torch.ones(50), torch.zeros(50)])
        >>> mu, sd, w, b = fit_linear(x, y)
        >>> bool(((torch.sigmoid(((x - mu) / sd) @ w + b) > 0.5).float() == y).all())
        True
    """
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    x = (features - mean) / std
    pos = labels.mean().clamp(0.05, 0.95)
    weight = torch.where(labels > 0.5, 0.5 / pos, 0.5 / (1 - pos))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (
            F.binary_cross_entropy_with_logits(x @ w + b, labels, weight=weight) + weight_decay * (w**2).sum()
        )
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return mean, std, w.detach(), b.detach()


def discover_foreground(
    image_paths: Sequence[Path],
    out_dir: Path,
    settings: DiscoverySettings | None = None,
    network: DiscoveryNetwork | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Discovery:
    """Write a foreground mask for every image: what recurs across them (module docstring).

    Args:
        image_paths: the training images.
        out_dir: the folder to write ``masks/<stem>.png``, ``overview.png`` and ``discovery.json`` into.
        settings: the ``data.discover_*`` values.
        network: the feature network (default: EfficientNet-Lite0 on ``device``).
        device: where the default network runs.
        progress: show progress bars.

    Returns:
        A :class:`Discovery`; the masks are in ``Discovery.mask_dir``.

    Raises:
        ValueError: no images.
    """
    from tqdm import tqdm

    settings = settings or DiscoverySettings()
    if not image_paths:
        raise ValueError("foreground discovery: no training images")
    start = time.perf_counter()
    network = network or EfficientNetDiscovery(device)
    mask_dir = Path(out_dir) / MASKS
    mask_dir.mkdir(parents=True, exist_ok=True)
    n = len(image_paths)

    def load(i: int) -> tuple[np.ndarray, Tensor]:
        image = read_image(image_paths[i])
        return image, network_input(image, settings.size)

    # 1. the classes that recur over the data set
    picked = np.unique(np.linspace(0, n - 1, min(n, MAX_CLASS_IMAGES)).round().astype(int))
    bar = tqdm(picked, desc="foreground 1/3: what recurs", unit="img", disable=not progress, leave=False)
    classes, share = recurring_classes(network, (load(int(i))[1] for i in bar), settings.classes)
    log.info(
        "foreground discovery: %d recurring ImageNet classes %s hold %.0f %% of the probability",
        len(classes),
        classes[:5].tolist(),
        100 * float(share.sum()),
    )

    # 2. seeds: confident locations of every image's footprint -> one linear classifier for the data set
    seed_images = picked if len(picked) < n else range(n)  # the same evenly spaced subset (at most 500)
    bar = tqdm(seed_images, desc="foreground 2/3: seeds", unit="img", disable=not progress, leave=False)
    x, y = _seeds(network, (load(int(i))[1] for i in bar), classes, settings)
    linear: tuple[Tensor, ...] = fit_linear(x, y)

    # 3. every image's mask: classifier at stride 8 -> image size -> guided filter -> threshold
    fractions, thumbs = [], []
    for i in tqdm(range(n), desc="foreground 3/3: masks", unit="img", disable=not progress, leave=False):
        image, inp = load(i)
        mask, linear = _mask(network, image, inp, linear, settings)
        fractions.append(float(mask.float().mean()))
        save_png(mask_dir / f"{Path(image_paths[i]).stem}.png", mask.numpy().astype(np.uint8) * 255)
        if len(thumbs) < OVERVIEW_COLUMNS * 3:
            thumbs.append(_thumb(image, mask.numpy()))
    rows = [thumbs[k : k + OVERVIEW_COLUMNS] for k in range(0, len(thumbs), OVERVIEW_COLUMNS)]
    save_png(Path(out_dir) / "overview.png", image_grid(rows, pad=0, bg=0, tile_height=128))
    seconds = time.perf_counter() - start
    result = Discovery(
        mask_dir, classes.tolist(), [float(s) for s in share], float(np.mean(fractions)), seconds
    )
    _write_record(Path(out_dir), result, n, y, settings)
    log.info(
        "foreground discovery: %d masks in %s (mean foreground %.0f %% of the image), %.0f s",
        n,
        mask_dir,
        100 * result.fg_fraction,
        seconds,
    )
    return result


def _seeds(
    network: DiscoveryNetwork, inputs: Iterable[Tensor], classes: Tensor, settings: DiscoverySettings
) -> tuple[Tensor, Tensor]:
    """Seed features and labels: up to SEEDS_PER_IMAGE sure locations (footprint far from 0.5) per image.

    Raises:
        ValueError: every seed is foreground, or every one background (nothing to learn a boundary from).
    """
    generator = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for inp in inputs:
        dense, logits = network(inp)
        assert logits is not None
        dense = dense[0].cpu()  # (D, h8, w8)
        foot = footprint(logits, classes)
        foot = F.interpolate(foot[None, None], size=dense.shape[-2:], mode="bilinear", align_corners=False)[
            0, 0
        ]
        sure = (foot > settings.seed_high) | (foot < settings.seed_low)
        where = sure.flatten().nonzero()[:, 0]
        where = where[torch.randperm(len(where), generator=generator)[:SEEDS_PER_IMAGE]]
        xs.append(dense.flatten(1)[:, where].T)
        ys.append((foot.flatten()[where] > settings.seed_high).float())
    x, y = torch.cat(xs), torch.cat(ys)
    if y.min() == y.max():
        raise ValueError(
            "foreground discovery: every seed location is "
            + ("foreground" if y[0] > 0.5 else "background")
            + "; the recurring classes do not single out an object (try data.discover_classes)"
        )
    return x, y


def _mask(
    network: DiscoveryNetwork,
    image: np.ndarray,
    inp: Tensor,
    linear: tuple[Tensor, ...],
    settings: DiscoverySettings,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One image's mask (bool (H, W), never empty) and the classifier (moved to the network's device)."""
    dense, _ = network(inp, with_logits=False)
    d = dense[0]  # on the network's device: the per-pixel work below stays there
    if linear[0].device != d.device:
        linear = tuple(t.to(d.device) for t in linear)
    mean, std, w, b = linear
    prob = torch.sigmoid(((d.permute(1, 2, 0) - mean) / std) @ w + b)
    prob = F.interpolate(prob[None, None], size=inp.shape[-2:], mode="bilinear", align_corners=False)
    if settings.refine_radius > 0:
        radius = refine_radius(min(inp.shape[-2:]), settings.refine_radius)
        prob = guided_filter(inp.to(d.device), prob, radius, settings.refine_eps).clamp(0, 1)
    prob = F.interpolate(prob, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0].cpu()
    mask = prob > 0.5
    if not mask.any():  # never an empty mask: the most object-like tenth of the image
        mask = prob >= prob.flatten().quantile(0.9)
    return mask, linear


def _write_record(out_dir: Path, result: Discovery, n: int, y: Tensor, settings: DiscoverySettings) -> None:
    """``discovery.json``: what was found, from how many seeds, with which settings (and how long it took)."""
    write_json(
        out_dir / "discovery.json",
        {
            "images": n,
            "classes": result.classes,
            "class_share": result.class_share,
            "seeds": {"foreground": int(y.sum()), "background": int((1 - y).sum())},
            "fg_fraction": result.fg_fraction,
            "settings": settings.__dict__,
            "seconds": round(result.seconds, 1),
        },
    )


def _thumb(image: np.ndarray, mask: np.ndarray, height: int = 128) -> np.ndarray:
    """The image with its background darkened, ``height`` pixels high (aspect kept)."""
    shown = Image.fromarray((image.astype(np.float32) * np.where(mask[..., None], 1.0, 0.3)).astype(np.uint8))
    width = max(1, round(shown.width * height / shown.height))
    return np.asarray(shown.resize((width, height), Image.BILINEAR))


def discovery_complete(out_dir: Path, image_paths: Sequence[Path]) -> bool:
    """Whether ``out_dir`` already holds a finished discovery for exactly these images (resume)."""
    meta = Path(out_dir) / "discovery.json"
    if not meta.is_file():
        return False
    try:
        images = json.loads(meta.read_text())["images"]
    except (OSError, ValueError, KeyError):
        return False
    masks = Path(out_dir) / MASKS
    return images == len(image_paths) and all((masks / f"{Path(p).stem}.png").is_file() for p in image_paths)
