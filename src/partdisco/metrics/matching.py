"""Hungarian matching of discovered parts to named ground-truth parts, scored by IoU.

Discovered parts carry no names; to report "which part is the head" and a mean IoU, each ground-truth part
is matched to at most one predicted part (one-to-one) so that the summed IoU is maximal
(``scipy.optimize.linear_sum_assignment``). The reference releases no such evaluation (PASCAL-Part, issue
#15); this is the standard protocol of the part-discovery literature, computed from a contingency table of
(predicted label, GT label) pixel counts, so it streams like NMI/ARI.

Ground-truth label 0 is background (``docs/ARCHITECTURE.md``). With ``ignore_background=True`` the pixels of
GT background are not scored at all (neither in intersections nor unions), which is the right choice for
predictions without a background label (FG protocol). With ``ignore_background=False`` background is
one more GT part to be matched, for predictions that have a background label (Full protocol).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from partdisco.metrics.clustering import ContingencyTable, _check_table

logger = logging.getLogger(__name__)

__all__ = ["hungarian_miou", "hungarian_miou_labels", "iou_matrix"]


def iou_matrix(confusion: Any) -> np.ndarray:
    """IoU of every (predicted label, GT label) pair from a pixel contingency table.

    Args:
        confusion: int counts (K_pred, P_gt) (numpy, torch or ``ContingencyTable``); rows are predicted
            labels, columns GT labels.

    Returns:
        float64 (K_pred, P_gt) IoU in [0, 1]: ``c / (row_sum + col_sum - c)``; 0 where the union is empty.

    Example:
        >>> iou_matrix(np.array([[2, 1], [0, 1]])).round(3).tolist()
        [[0.667, 0.25], [0.0, 0.5]]
    """
    c = _check_table(confusion).astype(np.float64)
    union = c.sum(axis=1, keepdims=True) + c.sum(axis=0, keepdims=True) - c  # (K_pred, P_gt)
    return np.divide(c, union, out=np.zeros_like(c), where=union > 0)


def hungarian_miou(
    confusion: Any,
    part_names: Sequence[str] | None = None,
    ignore_background: bool = True,
) -> dict[str, Any]:
    """One-to-one matching of predicted parts to GT parts maximising total IoU, and the resulting mIoU.

    Works for any K_pred vs P: with fewer predicted than GT parts, the unmatched GT parts score IoU 0; with
    more, the unmatched predicted labels are listed. GT parts with no pixel at all are left out of the
    matching and of the mean (IoU ``nan``, listed under ``absent_gt``).

    Args:
        confusion: int pixel counts (K_pred, P + 1) (numpy, torch or a ``ContingencyTable``); rows are
            predicted labels, columns GT labels with column 0 = background.
        part_names: names of GT labels 1..P (a data set's ``part_names``); None = "part_1", ...
        ignore_background: True: GT background pixels are not scored; False: background is a part named
            "background" that takes part in the matching.

    Returns:
        A dict with
        ``miou``: float mean IoU x100 over the present GT parts (nan if none);
        ``iou``: {GT part name: IoU x100} (nan for absent parts);
        ``matching``: {GT part name: matched predicted label or None};
        ``unmatched_pred``: predicted labels matched to no GT part;
        ``absent_gt``: names of GT parts without pixels.

    Raises:
        ValueError: if the table is not 2-D integer counts or ``part_names`` has the wrong length.

    Example:
        >>> confusion = np.array([[0, 0, 5], [0, 4, 0], [3, 0, 0]])  # pred 0 = GT 2, pred 1 = GT 1
        >>> result = hungarian_miou(confusion, part_names=["head", "tail"])
        >>> result["miou"], result["matching"], result["unmatched_pred"]
        (100.0, {'head': 1, 'tail': 0}, [2])
    """
    table = _check_table(confusion)  # (K_pred, P + 1)
    num_pred, num_cols = table.shape
    if part_names is None:
        part_names = [f"part_{p}" for p in range(1, num_cols)]
    part_names = list(part_names)
    if len(part_names) != num_cols - 1:
        raise ValueError(
            f"hungarian_miou: part_names names GT labels 1..P, expected {num_cols - 1} names for a table "
            f"with {num_cols} GT columns (column 0 = background), got {len(part_names)}"
        )
    if ignore_background:
        columns = list(range(1, num_cols))
        names = part_names
    else:
        columns = list(range(num_cols))
        names = ["background", *part_names]
    scored = table[:, columns]  # (K_pred, P') only the scored GT pixels enter unions
    present = scored.sum(axis=0) > 0  # (P',)
    iou = iou_matrix(scored)  # (K_pred, P')
    present_idx = np.flatnonzero(present)
    rows, cols = linear_sum_assignment(iou[:, present_idx], maximize=True)
    matching: dict[str, int | None] = {name: None for name in names}
    per_part = {name: (0.0 if present[j] else float("nan")) for j, name in enumerate(names)}
    for r, c in zip(rows.tolist(), cols.tolist()):
        j = int(present_idx[c])
        matching[names[j]] = int(r)
        per_part[names[j]] = 100.0 * float(iou[r, j])
    matched_pred = set(rows.tolist())
    scores = [per_part[names[j]] for j in present_idx.tolist()]
    return {
        "miou": float(np.mean(scores)) if scores else float("nan"),
        "iou": per_part,
        "matching": matching,
        "unmatched_pred": [k for k in range(num_pred) if k not in matched_pred],
        "absent_gt": [names[j] for j in range(len(names)) if not present[j]],
    }


def hungarian_miou_labels(
    pred: Any,
    gt: Any,
    num_pred: int,
    num_gt: int,
    valid: Any = None,
    part_names: Sequence[str] | None = None,
    ignore_background: bool = True,
) -> dict[str, Any]:
    """``hungarian_miou`` of label maps: counts them into a ``ContingencyTable`` first.

    Args:
        pred: int predicted labels, any shape, in [0, num_pred).
        gt: int GT labels, same shape, in [0, num_gt), 0 = background.
        num_pred: number of predicted labels.
        num_gt: number of GT labels including background (P + 1).
        valid: optional bool mask of the pixels to count.
        part_names: names of GT labels 1..P.
        ignore_background: see ``hungarian_miou``.

    Returns:
        The dict of ``hungarian_miou``.

    Example:
        >>> gt = np.array([[0, 1, 1], [2, 2, 0]])
        >>> hungarian_miou_labels((gt + 1) % 3, gt, num_pred=3, num_gt=3)["miou"]
        100.0
    """
    table = ContingencyTable(num_pred, num_gt)
    table.update(pred, gt, valid)
    return hungarian_miou(table, part_names=part_names, ignore_background=ignore_background)
