"""Streaming clustering scores (NMI, ARI) from a fixed-size contingency table.

The reference scores CUB keypoints and DeepFashion pixels with sklearn's ``normalized_mutual_info_score``
(default ``average_method='arithmetic'``) and ``adjusted_rand_score``, both x100, after concatenating every
label of the test set (``unsup-parts-method.md`` §5.1, §5.3). Both scores depend on the labels only through
their contingency table, so here the labels are counted into an int64 table of shape (L_pred, L_gt) as they
stream by (memory independent of the number of pixels), the table is summed across ranks, and the scores
are computed from the table alone.

Degenerate inputs follow sklearn (one cluster on both sides, or every item its own cluster on both sides,
gives NMI = ARI = 100; a single cluster on one side only gives 0), with one documented exception: an
**empty** table (no counted item) gives ``nan`` for both scores, where sklearn returns 1.0. A perfect score
for "nothing was evaluated" would hide a broken evaluation (wrong masks, no visible keypoints).

Overflow: the pair counts of ARI grow like n^2 and their products like n^4 (about 6e34 for n = 5e8 pixels),
so they are computed with Python integers, exactly; NMI uses float64 logarithms of the counts.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["ContingencyTable", "ari_from_table", "clustering_scores", "nmi_ari", "nmi_from_table"]


def _as_label_tensor(x: Any, name: str) -> torch.Tensor:
    """Turn an integer numpy array / tensor / sequence into an integer tensor (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype.kind == "u" and arr.dtype != np.uint8:
            # torch has limited support for uint16/32/64; int64 holds every label we can count.
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        elif arr.size == 0 and arr.dtype.kind == "f":
            # np.asarray([]) is float64; an empty list carries no labels, so any integer dtype is right.
            arr = arr.astype(np.int64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool:
        t = t.long()
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name} labels must be an integer array or tensor, got dtype {t.dtype}")
    return t


def _check_table(table: Any) -> np.ndarray:
    """Return ``table`` as a 2-D int64 numpy array, or raise a ValueError naming what is wrong."""
    if isinstance(table, ContingencyTable):
        return table.table
    if isinstance(table, torch.Tensor):
        table = table.detach().cpu().numpy()
    arr = np.asarray(table)
    if arr.ndim != 2:
        raise ValueError(f"expected a contingency table (L_pred, L_gt), got shape {tuple(arr.shape)}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"contingency table must hold integer counts, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"contingency table holds a negative count ({arr.min()})")
    return arr.astype(np.int64, copy=False)


def _nonempty(table: np.ndarray) -> np.ndarray:
    """Drop all-zero rows and columns: sklearn only sees labels that occur."""
    return table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]


def _entropy_from_counts(counts: np.ndarray) -> float:
    """Natural-log entropy of a labelling given its cluster sizes, as ``sklearn`` computes it."""
    pi = counts[counts > 0].astype(np.float64)
    if pi.size <= 1:
        return 0.0
    pi_sum = pi.sum()
    return float(-np.sum((pi / pi_sum) * (np.log(pi) - math.log(pi_sum))))


def nmi_from_table(table: Any) -> float:
    """Normalized mutual information (x100) of the labellings summarised by a contingency table.

    Equal to ``100 * sklearn.metrics.normalized_mutual_info_score(gt, pred)`` (arithmetic mean of the two
    entropies as normaliser) for the labels that produced the table, up to float64 rounding (< 1e-9).

    Args:
        table: int counts (L_pred, L_gt) (numpy, torch or a ``ContingencyTable``); ``table[i, j]`` = number
            of items with predicted label i and ground-truth label j. Empty rows/columns are ignored.

    Returns:
        NMI in [0, 100]; 100 when both sides have a single cluster; ``nan`` when the table is empty
        (sklearn returns 1.0 there, see the module docstring).

    Raises:
        ValueError: if ``table`` is not a 2-D array of non-negative integer counts.

    Example:
        >>> round(nmi_from_table(np.array([[2, 0], [0, 3]])), 6)
        100.0
        >>> nmi_from_table(np.array([[1, 1], [1, 1]]))
        0.0
    """
    t = _nonempty(_check_table(table))
    if t.size == 0:
        return float("nan")
    n_pred, n_gt = t.shape
    if n_pred == n_gt == 1:
        return 100.0
    if n_pred == 1 or n_gt == 1:
        return 0.0
    row = t.sum(axis=1)  # (L_pred,) predicted cluster sizes
    col = t.sum(axis=0)  # (L_gt,) ground-truth cluster sizes
    nzx, nzy = np.nonzero(t)
    nz_val = t[nzx, nzy].astype(np.float64)
    total = float(t.sum())
    # Same algebra as sklearn's mutual_info_score: log(n_ij n / (a_i b_j)), summed only over non-zeros.
    contingency_nm = nz_val / total
    log_outer = -(np.log(row[nzx].astype(np.float64)) + np.log(col[nzy].astype(np.float64)))
    log_outer += 2.0 * math.log(total)
    mi_terms = contingency_nm * (np.log(nz_val) - math.log(total)) + contingency_nm * log_outer
    mi_terms = np.where(np.abs(mi_terms) < np.finfo(np.float64).eps, 0.0, mi_terms)
    mi = float(np.clip(mi_terms.sum(), 0.0, None))
    if mi == 0.0:
        return 0.0
    normaliser = (_entropy_from_counts(col) + _entropy_from_counts(row)) / 2.0  # arithmetic mean
    return 100.0 * mi / normaliser


def ari_from_table(table: Any) -> float:
    """Adjusted Rand index (x100) of the labellings summarised by a contingency table.

    Equal to ``100 * sklearn.metrics.adjusted_rand_score(gt, pred)``. The pair counts are exact Python
    integers, so tables with billions of items do not overflow.

    Args:
        table: int counts (L_pred, L_gt) (numpy, torch or a ``ContingencyTable``).

    Returns:
        ARI in [-50, 100] (chance level 0); 100 when the two partitions agree on every pair (one cluster on
        both sides, or all items distinct on both sides); ``nan`` for an empty table (sklearn: 1.0).

    Raises:
        ValueError: if ``table`` is not a 2-D array of non-negative integer counts.

    Example:
        >>> ari_from_table(np.array([[0, 3], [2, 0]]))
        100.0
        >>> round(ari_from_table(np.array([[1, 1], [1, 1]])), 4)
        -50.0
    """
    t = _check_table(table)
    nz = t[t > 0]
    n = int(nz.sum(dtype=np.int64))
    if n == 0:
        return float("nan")
    # Python ints: sum of squares of counts can exceed int64 (n = 5e9 -> n^2 = 2.5e19).
    sum_squares = sum(int(v) * int(v) for v in nz.tolist())
    pred_squares = sum(int(v) * int(v) for v in t.sum(axis=1).tolist())
    gt_squares = sum(int(v) * int(v) for v in t.sum(axis=0).tolist())
    # Pair-confusion counts (ordered pairs), as sklearn.metrics.cluster.pair_confusion_matrix.
    tp = sum_squares - n
    fp = pred_squares - sum_squares
    fn = gt_squares - sum_squares
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 100.0
    # int / int is correctly rounded in Python, whatever the size of the operands.
    return 100.0 * (2 * (tp * tn - fn * fp)) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def clustering_scores(table: Any) -> dict[str, float | int]:
    """NMI, ARI (both x100) and the number of counted items of a contingency table.

    Args:
        table: int counts (L_pred, L_gt) (numpy, torch or a ``ContingencyTable``).

    Returns:
        ``{"nmi": float, "ari": float, "count": int}``; nmi/ari are ``nan`` when count is 0.

    Example:
        >>> clustering_scores(np.array([[2, 0], [0, 2]]))
        {'nmi': 100.0, 'ari': 100.0, 'count': 4}
    """
    t = _check_table(table)
    count = int(t.sum(dtype=np.int64))
    if count == 0:
        logger.warning("clustering scores of an empty contingency table are nan (nothing was counted)")
    return {"nmi": nmi_from_table(t), "ari": ari_from_table(t), "count": count}


class ContingencyTable:
    """Streaming int64 contingency table of predicted vs ground-truth labels.

    State: ``counts`` int64 (num_pred, num_gt) on the device of the first ``update`` (or ``device``);
    ``counts[i, j]`` = number of items with prediction i and ground truth j. The state has a fixed size,
    is summed over ranks by ``all_reduce``, and ``compute`` derives NMI/ARI from it (see module docstring).

    Args:
        num_pred: number of predicted labels; predictions must lie in [0, num_pred).
        num_gt: number of ground-truth labels; ground truth must lie in [0, num_gt).
        device: where the counts live; None = the device of the first update (CPU before that).

    Example:
        >>> table = ContingencyTable(num_pred=2, num_gt=3)
        >>> table.update(torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2, 0, 1]))
        >>> table.table.tolist()
        [[0, 0, 2], [1, 1, 0]]
        >>> scores = table.compute()
        >>> scores["count"], round(scores["ari"], 4)
        (4, 57.1429)
    """

    def __init__(self, num_pred: int, num_gt: int, device: torch.device | str | None = None) -> None:
        for name, value in (("num_pred", num_pred), ("num_gt", num_gt)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ContingencyTable {name} must be a positive int, got {value!r}")
        self.num_pred = num_pred
        self.num_gt = num_gt
        self._device_fixed = device is not None
        self.counts = torch.zeros(num_pred, num_gt, dtype=torch.int64, device=device)  # (L_pred, L_gt)

    @property
    def table(self) -> np.ndarray:
        """The counts as a CPU int64 numpy array (num_pred, num_gt) (a copy)."""
        return self.counts.detach().cpu().numpy().copy()

    @property
    def count(self) -> int:
        """Number of items counted so far."""
        return int(self.counts.sum().item())

    def reset(self) -> None:
        """Set every count to zero (the device is kept)."""
        self.counts.zero_()

    def _range_error(self, labels: torch.Tensor, valid: torch.Tensor | None, name: str, limit: int) -> None:
        """Raise a ValueError if a (valid) label is outside [0, limit)."""
        lo, hi = (int(v) for v in torch.aminmax(labels))
        if lo >= 0 and hi < limit:
            return
        if valid is not None:
            # Out-of-range values (e.g. an ignore label 255) are allowed where valid is False.
            kept = labels[valid]
            if kept.numel() == 0:
                return
            lo, hi = (int(v) for v in torch.aminmax(kept))
            if lo >= 0 and hi < limit:
                return
        raise ValueError(
            f"ContingencyTable.update: {name} labels must lie in [0, {limit}) "
            f"({'num_pred' if name == 'pred' else 'num_gt'}={limit}), got values in [{lo}, {hi}]"
        )

    def update(self, pred: Any, gt: Any, valid: Any = None) -> None:
        """Count one batch of (prediction, ground truth) label pairs.

        Args:
            pred: int predicted labels, any shape (e.g. (B, H, W) or (M,)), numpy or torch, values in
                [0, num_pred) wherever ``valid``.
            gt: int ground-truth labels, same shape as ``pred``, values in [0, num_gt) wherever ``valid``.
            valid: optional bool mask, same shape; only True positions are counted (others may hold any
                value, e.g. an ignore label).

        Raises:
            ValueError: on float labels, mismatched shapes, a non-bool mask, or labels out of range (the
                message gives the allowed and the observed range).
        """
        pred_t = _as_label_tensor(pred, "pred")
        gt_t = _as_label_tensor(gt, "gt")
        shape = tuple(pred_t.shape)
        if tuple(gt_t.shape) != shape:
            raise ValueError(
                "ContingencyTable.update: pred and gt must have the same shape, "
                f"got {shape} and {tuple(gt_t.shape)}"
            )
        valid_t = None
        if valid is not None:
            valid_t = valid if isinstance(valid, torch.Tensor) else torch.from_numpy(np.asarray(valid))
            if valid_t.dtype != torch.bool:
                raise ValueError(
                    f"ContingencyTable.update: valid must be a bool mask, got dtype {valid_t.dtype}"
                )
            if tuple(valid_t.shape) != shape:
                raise ValueError(
                    f"ContingencyTable.update: valid must have the labels' shape {shape}, "
                    f"got {tuple(valid_t.shape)}"
                )
        if not self._device_fixed and self.counts.device != pred_t.device:
            # The state follows the first update's device: GPU labels are counted on the GPU, never copied.
            self.counts = self.counts.to(pred_t.device)
        self._device_fixed = True
        device = self.counts.device
        pred_t = pred_t.to(device=device).reshape(-1)  # (M,)
        gt_t = gt_t.to(device=device).reshape(-1)  # (M,)
        if valid_t is not None:
            valid_t = valid_t.to(device=device).reshape(-1)  # (M,)
        if pred_t.numel() == 0:
            return
        self._range_error(pred_t, valid_t, "pred", self.num_pred)
        self._range_error(gt_t, valid_t, "gt", self.num_gt)
        num_bins = self.num_pred * self.num_gt
        index = pred_t.long() * self.num_gt  # (M,) a new tensor, so the in-place ops below are safe
        index.add_(gt_t)  # (M,) flat cell index pred * num_gt + gt
        if valid_t is not None:
            # An overflow bin for invalid items is ~4x faster than compacting with index[valid].
            index.masked_fill_(~valid_t, num_bins)
        bins = torch.bincount(index, minlength=num_bins + 1)  # (L_pred * L_gt + 1,)
        self.counts += bins[:num_bins].view(self.num_pred, self.num_gt)

    def merge(self, other: ContingencyTable) -> None:
        """Add the counts of another table (e.g. from another worker) into this one.

        Args:
            other: a table with the same (num_pred, num_gt).

        Raises:
            ValueError: if the shapes differ.
        """
        if not isinstance(other, ContingencyTable):
            raise ValueError(f"ContingencyTable.merge expects a ContingencyTable, got {type(other).__name__}")
        if (other.num_pred, other.num_gt) != (self.num_pred, self.num_gt):
            raise ValueError(
                f"ContingencyTable.merge: shapes differ, ({self.num_pred}, {self.num_gt}) vs "
                f"({other.num_pred}, {other.num_gt})"
            )
        self.counts += other.counts.to(self.counts.device)

    def all_reduce(self) -> None:
        """Sum the counts over all ``torch.distributed`` ranks (no-op without an initialised group).

        Call it once, after the last ``update`` on every rank; afterwards every rank holds the global
        table. The reduction runs on an int64 tensor (exact), on CUDA for the NCCL backend, else on CPU.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        device = self.counts.device
        if torch.distributed.get_backend() == "nccl" and device.type != "cuda":
            reduce_device = torch.device("cuda", torch.cuda.current_device())
        else:
            reduce_device = device
        buffer = self.counts.to(reduce_device, dtype=torch.int64).clone()  # (L_pred, L_gt)
        torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
        self.counts = buffer.to(device)

    def compute(self) -> dict[str, float | int]:
        """NMI and ARI (x100, sklearn conventions) and the item count of the accumulated table.

        Returns:
            ``{"nmi": float, "ari": float, "count": int}``; scores are ``nan`` when nothing was counted.
        """
        return clustering_scores(self.table)


def nmi_ari(pred: Any, gt: Any) -> tuple[float, float]:
    """NMI and ARI (x100) of two flat labelings, like sklearn, through a contingency table.

    Labels may be any integers (they are re-indexed with ``unique`` before counting, so large or
    negative label values are fine).

    Args:
        pred: int predicted labels, any shape, numpy or torch.
        gt: int ground-truth labels, same shape.

    Returns:
        ``(nmi, ari)``, each x100; both ``nan`` for empty input.

    Raises:
        ValueError: on float labels or mismatched shapes.

    Example:
        >>> nmi_ari([0, 0, 1, 1], [5, 5, 7, 7])
        (100.0, 100.0)
    """
    pred_t = _as_label_tensor(pred, "pred").reshape(-1).cpu()
    gt_t = _as_label_tensor(gt, "gt").reshape(-1).cpu()
    if pred_t.shape != gt_t.shape:
        raise ValueError(
            "nmi_ari: pred and gt must have the same number of items, "
            f"got {pred_t.numel()} and {gt_t.numel()}"
        )
    if pred_t.numel() == 0:
        return float("nan"), float("nan")
    pred_ids, pred_inv = torch.unique(pred_t, return_inverse=True)
    gt_ids, gt_inv = torch.unique(gt_t, return_inverse=True)
    table = ContingencyTable(int(pred_ids.numel()), int(gt_ids.numel()))
    table.update(pred_inv, gt_inv)
    scores = table.compute()
    return float(scores["nmi"]), float(scores["ari"])
