"""Metrics as a plain-text table, for the console and ``train.log``."""

from __future__ import annotations

from typing import Any


def format_metrics(metrics: dict[str, Any], decimals: int = 1, thin: dict[str, str] | None = None) -> str:
    """A table of the scalar metrics (x100 scores), with the xy k-means baseline's side by side.

    Args:
        metrics: an evaluation result; floats are shown with ``decimals`` decimals, ints as they are,
            other values (lists, nested dicts) are left out except ``baseline_xy_kmeans``'s floats.
        decimals: digits after the point.
        thin: metric-name prefix -> why its score is unreliable (too few keypoints or pixels); those rows
            are marked ``*`` and each reason is printed once below the table.

    Returns:
        Lines ``metric  model  xy k-means``.

    Example:
        >>> m = {"px_fg_nmi": 71.94, "images": 8, "baseline_xy_kmeans": {"px_fg_nmi": 0.21}}
        >>> print(format_metrics(m))
        metric     model  xy k-means
        px_fg_nmi  71.9   0.2
        images     8
    """
    base = metrics.get("baseline_xy_kmeans", {})
    thin = thin or {}
    rows = [("metric", "model", "xy k-means")]
    for key, value in metrics.items():
        if isinstance(value, float):
            other = base.get(key)
            mark = " *" if any(key.startswith(prefix) for prefix in thin) else ""
            rows.append(
                (
                    key,
                    f"{value:.{decimals}f}{mark}",
                    f"{other:.{decimals}f}" if isinstance(other, float) else "",
                )
            )
        elif isinstance(value, int) and not isinstance(value, bool):
            rows.append((key, str(value), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [f"* {note}" for note in dict.fromkeys(thin.values())])
