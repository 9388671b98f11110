"""Keypoint-based part metrics: the CUB keypoint-label protocol and keypoint regression.

Two protocols of the reference (``unsup-parts-method.md`` §5.1, §5.2):

* **Keypoint labels (NMI/ARI).** Logits are upsampled to the image (bilinear; CUB uses
  ``align_corners=False``, DeepFashion ``True``), turned into a label map, and the label under every visible
  keypoint is paired with the keypoint's index. ``KeypointNMI`` counts the pairs into a
  ``ContingencyTable`` (num_labels x N). "FG" labels are the argmax of the K part logits; "Full" labels add a
  background label 0 from a foreground mask with the reference's formula (``logits_to_labels``).
* **Keypoint regression.** Soft part centroids, normalised by the object box, are mapped to the keypoints
  by a linear regressor fitted on the training split; the error is the mean L2 distance (x100, i.e. % of
  the box size) over visible test keypoints (``KeypointRegressor``, ``three_class_protocol``).

Coordinates follow ``docs/ARCHITECTURE.md``: (x, y) in pixels, pixel i covers [i, i + 1), so the pixel of a
point is ``floor(x)`` and the centre of pixel i is i + 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from partdisco.geometry.logits import upsample_logits
from partdisco.metrics.clustering import ContingencyTable

logger = logging.getLogger(__name__)

__all__ = [
    "KeypointNMI",
    "KeypointRegressor",
    "all_classes_protocol",
    "labels_at_keypoints",
    "logits_to_labels",
    "normalize_by_bbox",
    "part_centroids",
    "three_class_protocol",
]

VISIBLE_THRESHOLD = 0.5  # ref: CUB eval.ipynb, visible = landmarks[..., 3] > 0.5


def logits_to_labels(
    logits: torch.Tensor,
    size: tuple[int, int],
    *,
    align_corners: bool,
    fg_mask: torch.Tensor | None = None,
    background: str = "none",
) -> torch.Tensor:
    """Per-pixel part labels from part logits, as in the reference evaluation notebooks.

    The logits are upsampled bilinearly to ``size`` (skipped when they already have it), then:

    * ``background="none"`` (FG metrics): label = argmax over the C channels, in [0, C).
    * ``background="mask"`` (Full metrics): the reference's formula: scores =
      ``cat([1 - fg, fg * softmax(logits)])`` (C + 1 channels), label = argmax. The reference applies it to
      raw 0..255 mask levels; the data sets hand in masks already mapped to the reference's foreground
      (``partdisco.data.cub.sup_mask_foreground``), so for 0/1 values the labels are the reference's.
      Where ``fg <= 0`` this gives 0 (background) since ``1 - fg >= 1 > fg * p``; where ``fg >= 1`` it gives
      1 + the part argmax (``1 - fg <= 0``; for fg = 1 exactly and a part probability of 1.0 the tie goes to
      background). For
      fractional mask values (e.g. bilinearly resized masks) a pixel is background when ``1 - fg`` is at
      least ``fg * max softmax``; the formula is kept rather than a threshold so that numbers match.

    Ties go to the lowest label (``torch.max`` returns the first maximal index), like the reference's
    ``argmax``.

    Args:
        logits: float part logits (B, C, h, w).
        size: output (H, W).
        align_corners: passed to :func:`partdisco.geometry.logits.upsample_logits`: ``ALIGN_KEYPOINTS``
            (False) for the keypoint protocol, ``ALIGN_PIXELS`` (True) for the pixel protocol (§5.1, §5.3).
        fg_mask: float foreground (B, 1, H, W), any value > 0 is (partly) foreground; required for
            ``background="mask"``, not allowed otherwise.
        background: "none" or "mask".

    Returns:
        int64 labels (B, H, W) on the logits' device: in [0, C) for "none", in [0, C] for "mask".

    Raises:
        ValueError: on wrong ranks/shapes, an unknown ``background``, or a missing/unexpected mask.

    Example:
        >>> logits = torch.tensor([[[[0.0, 2.0]], [[1.0, 0.0]]]])  # (1, 2, 1, 2)
        >>> logits_to_labels(logits, (1, 2), align_corners=False).tolist()
        [[[1, 0]]]
        >>> fg = torch.tensor([[[[0.0, 1.0]]]])
        >>> logits_to_labels(logits, (1, 2), align_corners=False, fg_mask=fg, background="mask").tolist()
        [[[0, 1]]]
    """
    if logits.ndim != 4:
        raise ValueError(f"logits_to_labels: expected logits (B, C, h, w), got {tuple(logits.shape)}")
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ValueError(f"logits_to_labels: size must be (H, W) with positive ints, got {size!r}")
    if background not in ("none", "mask"):
        raise ValueError(f"logits_to_labels: background must be 'none' or 'mask', got {background!r}")
    B, C, h, w = logits.shape
    H, W = int(size[0]), int(size[1])
    if background == "mask":
        if fg_mask is None:
            raise ValueError("logits_to_labels: background='mask' needs fg_mask (B, 1, H, W)")
        if tuple(fg_mask.shape) != (B, 1, H, W):
            raise ValueError(
                f"logits_to_labels: expected fg_mask (B, 1, H, W) = {(B, 1, H, W)}, "
                f"got {tuple(fg_mask.shape)}"
            )
    elif fg_mask is not None:
        raise ValueError(
            "logits_to_labels: fg_mask is only used with background='mask'; pass background='mask'"
        )
    # fp32 island: bilinear + softmax of half-precision logits would change argmax ties.
    scores = upsample_logits(logits, (H, W), align_corners=align_corners)  # (B, C, H, W)
    if background == "mask":
        fg = fg_mask.to(device=scores.device, dtype=torch.float32)  # (B, 1, H, W)
        probs = torch.softmax(scores, dim=1)  # (B, C, H, W)
        scores = torch.cat([1.0 - fg, fg * probs], dim=1)  # (B, C + 1, H, W)
    # max(dim).indices == argmax(dim) (first maximal index) and is ~3x faster on CPU for small C.
    return scores.max(dim=1).indices  # (B, H, W)


def labels_at_keypoints(labels: torch.Tensor, keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the label under every visible keypoint (the CUB keypoint-label protocol, §5.1).

    A keypoint is used when its visibility is > 0.5 and it lies in the image, ``0 <= x <= W`` and
    ``0 <= y <= H``; it reads pixel ``(floor(y), floor(x))`` clamped to the image (so x = W reads column
    W - 1). The reference samples with ``grid_sample(nearest, align_corners=False)``, which reads pixel
    ``round_half_even(x - 0.5)``: the same as ``floor(x)`` except at odd integer coordinates (x = 3.0 reads
    pixel 2 there, 3 here) and at x = W (zero padding there).

    Args:
        labels: int labels (B, H, W).
        keypoints: float (B, N, 3) rows (x, y, visible) in pixels of the labelled image.

    Returns:
        ``(pred, kp_index)``: int64 (M,) labels and int64 (M,) keypoint indices in [0, N) of the M used
        keypoints, in (image, keypoint) order, on the labels' device.

    Raises:
        ValueError: on wrong ranks, a batch size mismatch or float labels.

    Example:
        >>> labels = torch.arange(5).view(1, 1, 5).expand(1, 2, 5)  # (1, 2, 5): label = column
        >>> kps = torch.tensor([[[3.7, 0.2, 1.0], [1.0, 1.5, 0.0], [4.9, 1.9, 1.0]]])
        >>> pred, index = labels_at_keypoints(labels, kps)
        >>> pred.tolist(), index.tolist()
        ([3, 4], [0, 2])
    """
    if labels.ndim != 3:
        raise ValueError(f"labels_at_keypoints: expected labels (B, H, W), got {tuple(labels.shape)}")
    if labels.is_floating_point():
        raise ValueError(f"labels_at_keypoints: labels must be integers, got dtype {labels.dtype}")
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"labels_at_keypoints: expected keypoints (B, N, 3), got {tuple(keypoints.shape)}")
    B, H, W = labels.shape
    if keypoints.shape[0] != B:
        raise ValueError(
            f"labels_at_keypoints: labels have batch {B} but keypoints have batch {keypoints.shape[0]}"
        )
    N = keypoints.shape[1]
    kps = keypoints.to(device=labels.device, dtype=torch.float64)  # (B, N, 3)
    x, y, vis = kps.unbind(-1)  # (B, N) each
    # NaN coordinates fail every comparison and are dropped.
    used = (vis > VISIBLE_THRESHOLD) & (x >= 0) & (x <= W) & (y >= 0) & (y <= H)  # (B, N)
    col = x.floor().clamp(0, W - 1).nan_to_num(0).long()  # (B, N)
    row = y.floor().clamp(0, H - 1).nan_to_num(0).long()  # (B, N)
    batch = torch.arange(B, device=labels.device).view(B, 1).expand(B, N)  # (B, N)
    pred = labels[batch[used], row[used], col[used]].long()  # (M,)
    kp_index = torch.arange(N, device=labels.device).view(1, N).expand(B, N)[used]  # (M,)
    return pred, kp_index


class KeypointNMI:
    """NMI/ARI between predicted labels at keypoints and keypoint identities, accumulated over a data set.

    Wraps a ``ContingencyTable(num_labels, num_keypoints)``; ``compute`` gives the reference's CUB numbers
    (``100 * normalized_mutual_info_score(kp_index, pred)`` and ARI) over every visible keypoint seen.

    Args:
        num_labels: number of predicted labels: K for FG metrics, K + 1 for Full (background label 0).
        num_keypoints: N, keypoints per image (15 for CUB).

    Example:
        >>> metric = KeypointNMI(num_labels=2, num_keypoints=2)
        >>> labels = torch.tensor([[[0, 1]]])  # (1, 1, 2)
        >>> metric.update(labels, torch.tensor([[[0.5, 0.5, 1.0], [1.5, 0.5, 1.0]]]))
        >>> metric.update(labels, torch.tensor([[[0.2, 0.5, 1.0], [1.2, 0.5, 1.0]]]))
        >>> metric.compute()
        {'nmi': 100.0, 'ari': 100.0, 'count': 4}
    """

    def __init__(self, num_labels: int, num_keypoints: int) -> None:
        self.table = ContingencyTable(num_labels, num_keypoints)

    def update(self, labels: torch.Tensor, keypoints: torch.Tensor) -> None:
        """Count the labels under the visible keypoints of one batch.

        Args:
            labels: int labels (B, H, W) in [0, num_labels) (e.g. from ``logits_to_labels``).
            keypoints: float (B, N, 3) rows (x, y, visible) in pixels, N = num_keypoints.

        Raises:
            ValueError: on shape mismatches or labels out of range.
        """
        if keypoints.ndim == 3 and keypoints.shape[1] != self.table.num_gt:
            raise ValueError(
                f"KeypointNMI.update: expected {self.table.num_gt} keypoints per image, "
                f"got {keypoints.shape[1]}"
            )
        pred, kp_index = labels_at_keypoints(labels, keypoints)
        self.table.update(pred, kp_index)

    def merge(self, other: KeypointNMI) -> None:
        """Add another accumulator's counts (same num_labels, num_keypoints)."""
        self.table.merge(other.table)

    def all_reduce(self) -> None:
        """Sum the counts over ``torch.distributed`` ranks (no-op when not initialised); call once."""
        self.table.all_reduce()

    def reset(self) -> None:
        """Forget every count."""
        self.table.reset()

    def compute(self) -> dict[str, float | int]:
        """Return ``{"nmi", "ari", "count"}`` (scores x100, nan when no keypoint was counted)."""
        return self.table.compute()


def part_centroids(probs: torch.Tensor, fg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Soft part centroids: the mean pixel position under each (masked) part probability map.

    Pixel (row i, column j) sits at its centre (j + 0.5, i + 0.5), consistent with "pixel i covers
    [i, i + 1)". The reference (Huang & Li's ``calc_center``, §5.2) uses 1-based pixel indices (j + 1, i + 1),
    i.e. 0.5 px more; after bbox normalisation and standardisation this offset has (almost) no effect.
    A part with zero mass gets (0, 0), as in the reference (its denominator is ``mass + 1e-8``).

    Args:
        probs: float part probabilities (B, K, H, W), e.g. ``softmax`` of upsampled logits, >= 0.
        fg_mask: optional float foreground (B, 1, H, W) multiplied into ``probs`` (the reference uses
            ``softmax * fg``).

    Returns:
        float32 centroids (B, K, 2) as (x, y) in pixels.

    Raises:
        ValueError: on wrong ranks or a mask of the wrong shape.

    Example:
        >>> probs = torch.zeros(1, 1, 4, 6)
        >>> probs[0, 0, 2, 3] = 1.0  # one pixel: row 2, column 3
        >>> part_centroids(probs).tolist()
        [[[3.5, 2.5]]]
    """
    if probs.ndim != 4:
        raise ValueError(f"part_centroids: expected probs (B, K, H, W), got {tuple(probs.shape)}")
    B, K, H, W = probs.shape
    weights = probs.float()
    if fg_mask is not None:
        if tuple(fg_mask.shape) != (B, 1, H, W):
            raise ValueError(
                f"part_centroids: expected fg_mask (B, 1, H, W) = {(B, 1, H, W)}, got {tuple(fg_mask.shape)}"
            )
        weights = weights * fg_mask.to(device=weights.device, dtype=torch.float32)  # (B, K, H, W)
    xs = torch.arange(W, device=weights.device, dtype=torch.float32) + 0.5  # (W,)
    ys = torch.arange(H, device=weights.device, dtype=torch.float32) + 0.5  # (H,)
    mass_x = weights.sum(dim=2)  # (B, K, W) column marginals
    mass_y = weights.sum(dim=3)  # (B, K, H) row marginals
    mass = mass_x.sum(dim=2) + 1e-8  # (B, K)
    cx = (mass_x * xs).sum(dim=2) / mass  # (B, K)
    cy = (mass_y * ys).sum(dim=2) / mass  # (B, K)
    return torch.stack([cx, cy], dim=-1)  # (B, K, 2)


def normalize_by_bbox(points: Any, bbox: Any) -> Any:
    """Express points relative to each image's object box: ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0)).

    Args:
        points: float (B, M, 2) points (x, y) in pixels (torch or numpy).
        bbox: float (B, 4) boxes (x0, y0, x1, y1) in pixels, same library as ``points``.

    Returns:
        float (B, M, 2) in box units (0..1 inside the box), same type as ``points``.

    Raises:
        ValueError: on wrong shapes or a box with zero or negative width/height.

    Example:
        >>> points = torch.tensor([[[15.0, 30.0]]])  # (1, 1, 2)
        >>> normalize_by_bbox(points, torch.tensor([[10.0, 20.0, 20.0, 40.0]])).tolist()
        [[[0.5, 0.5]]]
    """
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"normalize_by_bbox: expected points (B, M, 2), got {tuple(points.shape)}")
    if bbox.ndim != 2 or bbox.shape[-1] != 4 or bbox.shape[0] != points.shape[0]:
        raise ValueError(
            f"normalize_by_bbox: expected bbox (B, 4) with B = {points.shape[0]}, got {tuple(bbox.shape)}"
        )
    width = bbox[:, 2:3] - bbox[:, 0:1]  # (B, 1)
    height = bbox[:, 3:4] - bbox[:, 1:2]  # (B, 1)
    if bool((width <= 0).any()) or bool((height <= 0).any()):
        raise ValueError("normalize_by_bbox: every bbox needs x1 > x0 and y1 > y0 (format x0, y0, x1, y1)")
    x = (points[..., 0] - bbox[:, 0:1]) / width  # (B, M)
    y = (points[..., 1] - bbox[:, 1:2]) / height  # (B, M)
    if isinstance(points, torch.Tensor):
        return torch.stack([x, y], dim=-1)  # (B, M, 2)
    return np.stack([x, y], axis=-1)  # (B, M, 2)


def _to_numpy64(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"KeypointRegressor: {name} contains NaN or inf")
    return arr


def _to_visible(visible: Any, shape: tuple[int, int], name: str) -> np.ndarray:
    if visible is None:
        return np.ones(shape, dtype=bool)
    if isinstance(visible, torch.Tensor):
        visible = visible.detach().cpu().numpy()
    vis = np.asarray(visible)
    if vis.shape != shape:
        raise ValueError(f"KeypointRegressor: expected {name} (M, N) = {shape}, got {vis.shape}")
    return vis > VISIBLE_THRESHOLD if vis.dtype != bool else vis


def _standardise_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of sklearn's StandardScaler (population std; constant columns get scale 1)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    constant = scale <= 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, scale)


class KeypointRegressor:
    """Linear regression from bbox-normalised part centroids to keypoints (Huang & Li's protocol, §5.2).

    For each keypoint separately, on the training samples where it is visible: fit a StandardScaler to the
    features and one to the keypoint's (x, y), then solve a float64 least-squares problem from the
    standardised features to the standardised targets without intercept (``numpy.linalg.lstsq``; the same
    solution as sklearn ``LinearRegression(fit_intercept=False)``). This is exactly what
    ``interpretability-by-parts/src/cub200/eval_interp.py`` does, which the reference's notebook helpers
    were copied from. Because both sides are centred on the same samples, it equals ordinary least squares
    *with* intercept per keypoint: any affine relation between features and keypoints is recovered.
    ``predict`` undoes the target standardisation.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(50, 4))  # (M, 2K) with K = 2
        >>> y = (x @ rng.normal(size=(4, 6)) + 0.3).reshape(50, 3, 2)  # (M, N, 2) with N = 3
        >>> reg = KeypointRegressor().fit(x, y)
        >>> bool(reg.error(x, y, np.ones((50, 3), dtype=bool)) < 1e-9)
        True
    """

    def __init__(self) -> None:
        self.x_mean: np.ndarray | None = None  # (N, 2K) feature scaler of each keypoint's fit
        self.x_scale: np.ndarray | None = None  # (N, 2K)
        self.y_mean: np.ndarray | None = None  # (N, 2)
        self.y_scale: np.ndarray | None = None  # (N, 2)
        self.coef: np.ndarray | None = None  # (N, 2K, 2)
        self.fitted: np.ndarray | None = None  # (N,) False for keypoints never visible in training

    def fit(self, features: Any, keypoints: Any, visible: Any = None) -> KeypointRegressor:
        """Fit on the training split.

        Args:
            features: float (M, 2K) normalised centroids (x1, y1, ..., xK, yK) per sample.
            keypoints: float (M, N, 2) normalised keypoints (x, y).
            visible: optional (M, N) bool (or 0/1 float, > 0.5 = visible) mask; invisible keypoints are left
                out of their keypoint's fit. None = all visible.

        Returns:
            self.

        Raises:
            ValueError: on shape mismatches or non-finite values. A keypoint never visible in training is
                not fitted (``fitted[n]`` is False) and is left out of :meth:`error`, with a logged warning.
        """
        x = _to_numpy64(features, "features")
        y = _to_numpy64(keypoints, "keypoints")
        if x.ndim != 2 or y.ndim != 3 or y.shape[-1] != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"KeypointRegressor.fit: expected features (M, 2K) and keypoints (M, N, 2), "
                f"got {x.shape} and {y.shape}"
            )
        M, N = y.shape[:2]
        D = x.shape[1]
        vis = _to_visible(visible, (M, N), "visible")
        self.x_mean, self.x_scale = np.zeros((N, D)), np.ones((N, D))
        self.y_mean, self.y_scale = np.zeros((N, 2)), np.ones((N, 2))
        self.coef = np.zeros((N, D, 2))
        self.fitted = vis.any(axis=0)  # (N,)
        if not self.fitted.all():
            logger.warning(
                "keypoint regression: keypoints %s are visible in no training sample; they are not scored",
                np.flatnonzero(~self.fitted).tolist(),
            )
        for n in range(N):
            rows = vis[:, n]
            if not rows.any():
                continue
            feats, target = x[rows], y[rows, n]  # (M_n, 2K), (M_n, 2)
            self.x_mean[n], self.x_scale[n] = _standardise_stats(feats)
            self.y_mean[n], self.y_scale[n] = _standardise_stats(target)
            feats_std = (feats - self.x_mean[n]) / self.x_scale[n]  # (M_n, 2K)
            target_std = (target - self.y_mean[n]) / self.y_scale[n]  # (M_n, 2)
            self.coef[n] = np.linalg.lstsq(feats_std, target_std, rcond=None)[0]  # (2K, 2)
        return self

    def predict(self, features: Any) -> np.ndarray:
        """Predict keypoints.

        Args:
            features: float (M, 2K) normalised centroids.

        Returns:
            float64 (M, N, 2) predicted normalised keypoints (x, y).

        Raises:
            ValueError: if called before ``fit`` or with the wrong number of features.
        """
        if self.coef is None:
            raise ValueError("KeypointRegressor.predict: call fit() first")
        x = _to_numpy64(features, "features")
        D = self.coef.shape[1]
        if x.ndim != 2 or x.shape[1] != D:
            raise ValueError(f"KeypointRegressor.predict: expected features (M, {D}), got {x.shape}")
        feats_std = (x[:, None, :] - self.x_mean) / self.x_scale  # (M, N, 2K)
        pred_std = np.einsum("mnd,ndc->mnc", feats_std, self.coef)  # (M, N, 2)
        return pred_std * self.y_scale + self.y_mean  # (M, N, 2)

    def error(self, features: Any, keypoints: Any, visible: Any) -> float:
        """Mean L2 distance x100 between predicted and true keypoints over the visible ones.

        Args:
            features: float (M, 2K) normalised centroids.
            keypoints: float (M, N, 2) normalised keypoints.
            visible: (M, N) bool (or 0/1 float) mask of the keypoints to score.

        Returns:
            The error in % of the normalising box size (the paper's "normalized L2 distance %").

        Raises:
            ValueError: on shape mismatches or when no keypoint is visible.
        """
        pred = self.predict(features)  # (M, N, 2)
        y = _to_numpy64(keypoints, "keypoints")
        if y.shape != pred.shape:
            raise ValueError(f"KeypointRegressor.error: expected keypoints {pred.shape}, got {y.shape}")
        vis = _to_visible(visible, pred.shape[:2], "visible")
        if self.fitted is not None:
            vis = vis & self.fitted[None, :]  # unfitted keypoints cannot be scored
        if not vis.any():
            raise ValueError("KeypointRegressor.error: no visible (and fitted) keypoint to score")
        dist = np.sqrt(((pred - y) ** 2).sum(axis=-1))  # (M, N)
        return float(100.0 * dist[vis].mean())


def three_class_protocol(
    train_features: Any,
    train_keypoints: Any,
    train_visible: Any,
    train_classes: Any,
    test_features: Any,
    test_keypoints: Any,
    test_visible: Any,
    test_classes: Any,
    classes: Sequence[int] = (1, 2, 3),
) -> dict[int, float]:
    """Keypoint-regression error of the CUB-001/002/003 columns (``three_classes`` protocol, §4.2, §5.2).

    One regressor is fitted on the training samples of all ``classes`` together and scored on the test
    samples of each class separately.

    Args:
        train_features: float (M, 2K) normalised centroids of the training split.
        train_keypoints: float (M, N, 2) normalised keypoints of the training split.
        train_visible: (M, N) visibility of the training keypoints (None = all visible).
        train_classes: int (M,) class id of each training sample (CUB species 1..200).
        test_features: float (T, 2K) normalised centroids of the test split.
        test_keypoints: float (T, N, 2) normalised keypoints of the test split.
        test_visible: (T, N) visibility of the test keypoints.
        test_classes: int (T,) class id of each test sample.
        classes: the classes to fit on and report.

    Returns:
        ``{class_id: error}`` with the error x100 as in ``KeypointRegressor.error``.

    Raises:
        ValueError: if a class has no training or no test sample.
    """
    train_cls = np.asarray(torch.as_tensor(train_classes).cpu()).reshape(-1)
    test_cls = np.asarray(torch.as_tensor(test_classes).cpu()).reshape(-1)
    rows = np.isin(train_cls, list(classes))
    for c in classes:
        if not (train_cls == c).any():
            raise ValueError(f"three_class_protocol: class {c} has no training sample")
    x_train = _to_numpy64(train_features, "train_features")
    y_train = _to_numpy64(train_keypoints, "train_keypoints")
    if x_train.shape[0] != train_cls.shape[0] or y_train.shape[0] != train_cls.shape[0]:
        raise ValueError(
            f"three_class_protocol: train_features {x_train.shape}, train_keypoints {y_train.shape} and "
            f"train_classes {train_cls.shape} must have the same number of samples"
        )
    vis_train = _to_visible(train_visible, y_train.shape[:2], "train_visible")
    x_train, y_train, vis_train = x_train[rows], y_train[rows], vis_train[rows]
    regressor = KeypointRegressor().fit(x_train, y_train, vis_train)
    x_test = _to_numpy64(test_features, "test_features")
    y_test = _to_numpy64(test_keypoints, "test_keypoints")
    vis_test = _to_visible(test_visible, y_test.shape[:2], "test_visible")
    if x_test.shape[0] != test_cls.shape[0]:
        raise ValueError(
            f"three_class_protocol: test_features {x_test.shape} and test_classes {test_cls.shape} "
            "must have the same number of samples"
        )
    errors: dict[int, float] = {}
    for c in classes:
        sel = test_cls == c
        if not sel.any():
            raise ValueError(f"three_class_protocol: class {c} has no test sample")
        errors[int(c)] = regressor.error(x_test[sel], y_test[sel], vis_test[sel])
        logger.info("keypoint regression, class %d: %.2f%% over %d test images", c, errors[int(c)], sel.sum())
    return errors


def all_classes_protocol(
    train_features: Any,
    train_keypoints: Any,
    train_visible: Any,
    test_features: Any,
    test_keypoints: Any,
    test_visible: Any,
) -> float:
    """Keypoint-regression error of the CUB-all column: fit on the whole training split, score on all test.

    Args:
        train_features: float (M, 2K) normalised centroids of the training split.
        train_keypoints: float (M, N, 2) normalised keypoints of the training split.
        train_visible: (M, N) visibility of the training keypoints (None = all visible).
        test_features: float (T, 2K) normalised centroids of the test split.
        test_keypoints: float (T, N, 2) normalised keypoints of the test split.
        test_visible: (T, N) visibility of the test keypoints.

    Returns:
        The error x100 as in ``KeypointRegressor.error``.
    """
    regressor = KeypointRegressor().fit(train_features, train_keypoints, train_visible)
    return regressor.error(test_features, test_keypoints, test_visible)
