"""Training-side checkpoints: the checkpoint record of a run, writing ``checkpoints/step_*.pt``, resuming.

The files and names of a run folder live in :mod:`partdisco.engine.runfolder`, reading and listing them in
:mod:`partdisco.engine.checkpoint`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from partdisco.config import ConfigError, RunConfig
from partdisco.engine import distributed as dist_utils
from partdisco.engine.checkpoint import (
    load_checkpoint,
    prune_checkpoints,
)
from partdisco.engine.inference.network import trained_default
from partdisco.engine.runfolder import (
    check_checkpoint_fields,
    check_resume_changes,
    step_checkpoint_path,
)
from partdisco.engine.train.divergence import raise_if_weights_diverged
from partdisco.engine.train.setup import Run
from partdisco.engine.train.step import Learner
from partdisco.fileio import save_torch
from partdisco.models.checkpoint import FOREGROUND_KEY, checkpoint_record

log = logging.getLogger("partdisco.train")


def checkpoint_state(
    learner: Learner, step: int, cfg: RunConfig, metrics: dict[str, Any] | None = None, world: int = 1
) -> dict[str, Any]:
    """The checkpoint dict: weights, optimiser and scaler state, config, metrics (docs/RELIABILITY.md).

    With foreground discovery the learnt foreground classifier is stored too (``"foreground"``).
    """
    foreground = trained_default(learner.model, "foreground")
    extra = {} if foreground is None else {FOREGROUND_KEY: foreground.to_dict()}
    return checkpoint_record(
        learner.model.state_dict(),
        learner.model.config(),
        step=step,
        optimizer=learner.optimizer.state_dict(),
        scaler=learner.scaler.state_dict(),
        config=cfg.to_dict(),
        metrics=metrics or {},
        torch_version=str(torch.__version__),
        world_size=world,  # processes: the global batch is train.batch_size x world_size
        **extra,
    )


def save_checkpoint(
    run: Run, step: int, terms: dict[str, torch.Tensor], last_saved: Path | None
) -> Path | None:
    """Check the weights are finite, write ``checkpoints/step_*.pt`` (main process), prune; all ranks wait."""
    raise_if_weights_diverged(run.learner.model, step, terms, last_saved)
    if run.main:
        last_saved = save_torch(
            checkpoint_state(run.learner, step, run.cfg, world=run.world),
            step_checkpoint_path(run.run_dir, step),
        )
        prune_checkpoints(run.run_dir, run.cfg.train.keep_checkpoints)
    dist_utils.barrier()
    return last_saved


def load_resume_state(resume_ckpt: Path, cfg: RunConfig) -> dict[str, Any]:
    """The checkpoint to resume from, checked: every field present, only allowed config changes."""
    state = load_checkpoint(resume_ckpt)
    if "optimizer" not in state and "scaler" not in state:  # a final model.pt or an export
        raise ConfigError(
            f"resume: {resume_ckpt} holds weights only (a final model.pt or an export); resume from the "
            f"run folder ({resume_ckpt.parent}) or one of its checkpoints/step_*.pt"
        )
    check_checkpoint_fields(state, resume_ckpt)
    world, saved_world = dist_utils.world_size(), state.get("world_size")
    if saved_world is not None and int(saved_world) != world:
        raise ConfigError(
            f"resume: {resume_ckpt} was trained by {saved_world} process(es), this is {world}: the global "
            f"batch (train.batch_size x processes) would change; resume with torchrun --nproc_per_node "
            f"{saved_world}"
        )
    changes = check_resume_changes(state["config"], cfg.to_dict(), resume_ckpt)
    step = int(state["step"])
    if cfg.train.steps < step:
        raise ConfigError(
            f"train.steps={cfg.train.steps} but {resume_ckpt} is at step {step} already; "
            f"pass train.steps={step} or more"
        )
    for change in changes:
        log.info("resume changes %s", change)
    return state
