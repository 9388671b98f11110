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
   ``data.discover_rounds`` (16) rounds of self-training follow: the classifier's own confident locations
   (probability above 0.7 or below 0.3) replace the footprint's as seeds and the classifier is fitted again
   (the footprint is stride 32 and misses thin parts and tails; the classifier sees them at stride 8), with
   class weights ``balanced ** data.discover_balance`` (0.5: fully balanced rounds grow the foreground
   round after round, which hurts small objects; docs/EXPERIMENTS.md).
4. **Its edges.** The classifier's stride-8 probability is upsampled and snapped to the image's colour
   edges by the guided filter of :mod:`partdisco.engine.inference.refine`, then thresholded at 0.5.

The masks are written to ``RUN/foreground/masks/<stem>.png`` (at each image's size) with a contact sheet
``RUN/foreground/overview.png``, ``RUN/foreground/discovery.json`` (the recurring classes, the seeds,
timings) and the classifier, ``RUN/foreground/classifier.json``. Training uses the masks as masks (object
crops, a background channel taught by the masks' BCE) and stores the classifier in the model's checkpoint,
so ``partdisco segment`` takes the foreground of new photos from the same classifier
(:mod:`partdisco.engine.inference.discovered`).

The feature network is injectable (:class:`DiscoveryNetwork`): tests use a tiny deterministic one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from partdisco.data.io import read_image
from partdisco.engine.inference.discovered import (
    DiscoveryNetwork,
    EfficientNetDiscovery,
    device_of,
    foreground_probability,
    linear_probability,
    network_input,
    threshold_mask,
)
from partdisco.fileio import write_json
from partdisco.models.foreground import ForegroundClassifier
from partdisco.visualise import image_grid, save_png

log = logging.getLogger(__name__)

MASKS = "masks"  # RUN/foreground/masks/<stem>.png
SEEDS_PER_IMAGE = 400  # seed locations drawn per image for the linear classifier
MAX_CLASS_IMAGES = 500  # images (evenly spaced) that find the recurring classes and give the seeds
SAMPLES_PER_IMAGE = 1200  # locations per seed image kept (features + footprint) for the self-training rounds
CLASSIFIER = "classifier.json"  # RUN/foreground/classifier.json: the ForegroundClassifier (to_dict())
OVERVIEW_COLUMNS = 8  # overview.png: the first 3 rows of 8 training images


@dataclass
class DiscoverySettings:
    """The ``data.discover_*`` keys (docs/DATA.md, "Foreground discovery")."""

    size: int = 320  # shorter side of the network input
    classes: int = 30  # recurring ImageNet classes that define the object
    seed_low: float = 0.2  # footprint (min-max per image) below this: background seed
    seed_high: float = 0.6  # above this: foreground seed
    refine_radius: float = 0.06  # guided filter radius as a fraction of the shorter side (0: off)
    refine_eps: float = 1e-3
    rounds: int = 16  # self-training rounds: the classifier's own confident locations as the next seeds
    balance: float = 0.5  # the rounds' class weights: the balanced ones ** balance (0: the seeds' own prior)


@dataclass
class Discovery:
    """What :func:`discover_foreground` found."""

    mask_dir: Path
    classifier: ForegroundClassifier  # what segment applies to new photos
    classes: list[int]  # the recurring class indices, most probable first
    class_share: list[float]  # their share of the data set's summed probability
    fg_fraction: float  # mean foreground fraction of the masks
    seconds: float


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
    features: Tensor, labels: Tensor, steps: int = 100, weight_decay: float = 1e-3, balance: float = 1.0
) -> tuple[Tensor, ...]:
    """Logistic regression (L-BFGS) on standardised features, class-balanced by default.

    Args:
        features: (N, D) float.
        labels: (N,) float in {0, 1} (1 = foreground).
        steps: L-BFGS iterations.
        weight_decay: L2 penalty on the weights.
        balance: 1 weighs the two classes equally, 0 every sample equally (the seeds' own foreground share
            is the prior); in between, the class weights of 1 raised to this power.

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
    weight = torch.where(labels > 0.5, 0.5 / pos, 0.5 / (1 - pos)) ** balance
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

    # 2. seeds: confident locations of every image's footprint -> one linear classifier for the data set,
    # then self-training rounds on its own confident locations
    seed_images = picked if len(picked) < n else range(n)  # the same evenly spaced subset (at most 500)
    bar = tqdm(seed_images, desc="foreground 2/3: seeds", unit="img", disable=not progress, leave=False)
    linear, y = _fit_classifier(_samples(network, (load(int(i))[1] for i in bar), classes), settings)
    classifier = _classifier(linear, settings)

    # 3. every image's mask: classifier at stride 8 -> image size -> guided filter -> threshold
    bar = tqdm(range(n), desc="foreground 3/3: masks", unit="img", disable=not progress, leave=False)
    fractions = _write_masks(network, (load(i) for i in bar), image_paths, linear, settings, Path(out_dir))
    seconds = time.perf_counter() - start
    write_json(Path(out_dir) / CLASSIFIER, classifier.to_dict())
    result = Discovery(
        mask_dir, classifier, classes.tolist(), [float(s) for s in share], float(np.mean(fractions)), seconds
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


def _fit_classifier(
    samples: Sequence[tuple[Tensor, Tensor]], settings: DiscoverySettings
) -> tuple[tuple[Tensor, ...], Tensor]:
    """The footprint's seeds -> linear classifier, then ``settings.rounds`` self-training rounds.

    Returns:
        (the classifier ``(mean, std, weight, bias)``, the last seeds' labels).
    """
    x, y = _seeds(samples, settings)
    linear: tuple[Tensor, ...] = fit_linear(x, y)
    for _ in range(settings.rounds):
        x, y = _seeds(samples, settings, linear)
        linear = fit_linear(x, y, balance=settings.balance)
    return linear, y


def _write_masks(
    network: DiscoveryNetwork,
    loaded: Iterable[tuple[np.ndarray, Tensor]],
    image_paths: Sequence[Path],
    linear: tuple[Tensor, ...],
    settings: DiscoverySettings,
    out_dir: Path,
) -> list[float]:
    """Every image's mask to ``out_dir/masks``, the first ones to ``overview.png``; the foreground shares."""
    linear = tuple(t.to(device_of(network)) for t in linear)
    refine = settings.refine_radius, settings.refine_eps
    fractions, thumbs = [], []
    for path, (image, inp) in zip(image_paths, loaded):
        prob = foreground_probability(network, image, inp, linear, *refine)
        mask = threshold_mask(prob)
        fractions.append(float(mask.float().mean()))
        save_png(out_dir / MASKS / f"{Path(path).stem}.png", mask.numpy().astype(np.uint8) * 255)
        if len(thumbs) < OVERVIEW_COLUMNS * 3:
            thumbs.append(_thumb(image, mask.numpy()))
    rows = [thumbs[k : k + OVERVIEW_COLUMNS] for k in range(0, len(thumbs), OVERVIEW_COLUMNS)]
    save_png(out_dir / "overview.png", image_grid(rows, pad=0, bg=0, tile_height=128))
    return fractions


def _samples(
    network: DiscoveryNetwork, inputs: Iterable[Tensor], classes: Tensor
) -> list[tuple[Tensor, Tensor]]:
    """Per image, up to SAMPLES_PER_IMAGE random stride-8 locations: (features (n, D), footprint (n,))."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for inp in inputs:
        dense, logits = network(inp)
        assert logits is not None
        dense = dense[0].cpu()  # (D, h8, w8)
        foot = footprint(logits, classes)
        foot = F.interpolate(foot[None, None], size=dense.shape[-2:], mode="bilinear", align_corners=False)[
            0, 0
        ]
        where = torch.randperm(foot.numel(), generator=generator)[:SAMPLES_PER_IMAGE]
        out.append((dense.flatten(1)[:, where].T.half(), foot.flatten()[where]))
    return out


def _seeds(
    samples: Sequence[tuple[Tensor, Tensor]],
    settings: DiscoverySettings,
    linear: tuple[Tensor, ...] | None = None,
) -> tuple[Tensor, Tensor]:
    """Seed features and labels: up to SEEDS_PER_IMAGE sure locations per image.

    Sure = footprint above ``seed_high`` / below ``seed_low`` (first fit), or the classifier ``linear``'s
    probability above 0.7 / below 0.3 (self-training rounds).

    Raises:
        ValueError: every seed is foreground, or every one background (nothing to learn a boundary from).
    """
    generator = torch.Generator().manual_seed(1)
    xs, ys = [], []
    for feats, foot in samples:
        if linear is None:
            score, low, high = foot, settings.seed_low, settings.seed_high
        else:
            score, low, high = linear_probability(feats.float().T[:, :, None], linear)[:, 0], 0.3, 0.7
        where = ((score > high) | (score < low)).nonzero()[:, 0]
        where = where[torch.randperm(len(where), generator=generator)[:SEEDS_PER_IMAGE]]
        xs.append(feats[where].float())
        ys.append((score[where] > high).float())
    x, y = torch.cat(xs), torch.cat(ys)
    if len(y) == 0 or y.min() == y.max():
        what = "none" if len(y) == 0 else ("foreground" if y[0] > 0.5 else "background")
        raise ValueError(
            f"foreground discovery: every seed location is {what}; the recurring classes do not single out "
            "an object (try data.discover_classes)"
        )
    return x, y


def _classifier(linear: tuple[Tensor, ...], settings: DiscoverySettings) -> ForegroundClassifier:
    """The fitted ``(mean, std, weight, bias)`` as the record that travels with the model."""
    mean, std, w, b = (t.detach().cpu().double() for t in linear)
    return ForegroundClassifier(
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        weight=tuple(w.tolist()),
        bias=float(b[0]),
        size=settings.size,
        refine_radius=settings.refine_radius,
        refine_eps=settings.refine_eps,
    )


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


def read_classifier(out_dir: Path) -> ForegroundClassifier | None:
    """``out_dir/classifier.json`` (the discovered foreground classifier), or None when there is none.

    A run folder whose discovery predates the file has none: its model then segments with its own
    background channel.

    Raises:
        ValueError: the file is there but unreadable or malformed (names the file).
    """
    path = Path(out_dir) / CLASSIFIER
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable foreground classifier ({err})") from err
    return ForegroundClassifier.from_dict(values, str(path))
