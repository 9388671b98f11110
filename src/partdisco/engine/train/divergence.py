"""Stopping a run that diverged: a non-finite loss or non-finite weights, named with the step."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from partdisco.models.weights import non_finite_tensors

log = logging.getLogger("partdisco.train")


class TrainingDivergedError(RuntimeError):
    """A loss or the weights became NaN or infinite; the message names the step and the terms."""


NO_CHECKPOINT_YET = "no checkpoint was written yet (start the run again with the same command)"


def raise_if_diverged(
    first_bad: torch.Tensor, terms: dict[str, torch.Tensor], last_saved: Path | None
) -> None:
    """Raise :class:`TrainingDivergedError` when a step so far had a non-finite loss (one host sync)."""
    bad_step = int(first_bad.item())
    if bad_step < 0:
        return
    shown = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
    kept = f"last good checkpoint: {last_saved}" if last_saved else NO_CHECKPOINT_YET
    raise TrainingDivergedError(f"non-finite loss at step {bad_step + 1} ({shown}); stopped; {kept}")


def raise_if_weights_diverged(
    model: nn.Module, step: int, terms: dict[str, torch.Tensor] | None, last_saved: Path | None
) -> None:
    """Stop before a checkpoint is written when a weight or buffer is NaN / inf (the loss can stay finite)."""
    bad = non_finite_tensors(model.state_dict())
    if not bad:
        return
    shown = f" ({', '.join(f'{k}={v.item():.4g}' for k, v in terms.items())})" if terms else ""
    kept = f"last good checkpoint: {last_saved}" if last_saved else NO_CHECKPOINT_YET
    raise TrainingDivergedError(
        f"non-finite weights at step {step}{shown}: {len(bad)} tensor(s), first {bad[0]}; stopped without "
        f"saving them (lower optim.lr); {kept}"
    )
