"""A training run from a config, top to bottom: :func:`fit` (folder, lock, resume check, build, loop, end)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from partdisco.config import ConfigError, RunConfig
from partdisco.engine import distributed as dist_utils
from partdisco.engine.checkpoint import (
    resolve_resume,
)
from partdisco.engine.inference.network import resolve_device
from partdisco.engine.runfolder import (
    RunLock,
    check_new_run_folder,
    remove_stale_tmp,
    require_writable_dir,
)
from partdisco.engine.train.checkpointing import load_resume_state
from partdisco.engine.train.divergence import TrainingDivergedError
from partdisco.engine.train.finish import finish_run
from partdisco.engine.train.loop import train_loop
from partdisco.engine.train.monitor import setup_logging, teardown_logging
from partdisco.engine.train.setup import build_run, check_logging_backends, default_run_dir
from partdisco.models.build import resolve_model_config

log = logging.getLogger("partdisco.train")


def prepare_run(cfg: RunConfig) -> tuple[RunConfig, Path, Path | None]:
    """Resolve the run folder and, for ``resume=``, the checkpoint to continue from.

    For a resumed run, ``cfg`` should already be the run's saved ``config.yaml`` with any overrides applied
    (``load_config(config_file=RUN/config.yaml, overrides=...)``, as the CLI and :func:`partdisco.api.train`
    do).
    """
    if cfg.resume is None:
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
        return cfg, run_dir, None
    run_dir, ckpt_path = resolve_resume(cfg.resume)
    cfg.out = str(run_dir)
    return cfg, run_dir, ckpt_path


def fit(cfg: RunConfig, *, stop_after: int | None = None) -> Path:
    """Train a segmenter as configured and return the run folder.

    The run folder ends with ``config.yaml``, ``checkpoints/step_*.pt`` (full state for resuming),
    ``model.pt`` (final, weights-only: no optimizer state),
    ``tensorboard/``, ``parts.png`` (input / part map / overlay for fixed test images), ``metrics.json`` and
    ``train.log``.

    Args:
        cfg: resolved run config.
        stop_after: stop (as if killed) after this many steps of this session; for tests.

    Returns:
        The run folder.
    """
    check_logging_backends(cfg)  # before the run folder exists
    cfg, run_dir, resume_ckpt = prepare_run(cfg)
    # the backbone weights' provenance (trunk style, normalisation) goes into config.yaml and checkpoints;
    # resolved before the resume check, which compares it with the checkpoint's resolved config
    cfg.model = resolve_model_config(cfg.model)
    device = resolve_device(cfg.device)
    dist_utils.init_from_env(device)
    main = dist_utils.is_main()
    lock = None
    if main:
        # The folder is ours before anything is written: writable, locked, and not another run's.
        require_writable_dir(run_dir, "out")
        if resume_ckpt is None:
            check_new_run_folder(run_dir)  # before the lock file: a refused folder gets no new file
        lock = RunLock(run_dir)
    restarted = False
    try:
        resume_state = None
        if resume_ckpt is None:
            if main and check_new_run_folder(run_dir):
                restarted = True
        else:
            resume_state = load_resume_state(resume_ckpt, cfg)
        if main:
            for path in remove_stale_tmp(run_dir):
                log.debug("removed %s, left by an interrupted write", path)
        setup_logging(run_dir if main else None, main_process=main)
        if restarted:
            log.info("%s holds a run that stopped before its first checkpoint: starting it again", run_dir)
        try:
            return _fit_locked(cfg, run_dir, device, resume_ckpt, resume_state, stop_after)
        except TrainingDivergedError as err:
            _log_to_file(logging.ERROR, str(err))
            raise
        except Exception as err:
            ours = isinstance(err, (ConfigError, OSError, ValueError))  # user-facing: no traceback
            _log_to_file(logging.ERROR, f"stopped: {type(err).__name__}: {err}", exc_info=not ours)
            raise
    finally:
        teardown_logging()
        if lock is not None:
            lock.release()


def _log_to_file(level: int, message: str, exc_info: bool = False) -> None:
    """Write a fatal message to ``train.log`` only (the CLI prints it on the console in one line)."""
    record = log.makeRecord(log.name, level, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger("partdisco").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
            if exc_info:
                import traceback

                handler.stream.write(traceback.format_exc())
                handler.flush()


def _fit_locked(
    cfg: RunConfig,
    run_dir: Path,
    device: torch.device,
    resume_ckpt: Path | None,
    resume_state: dict[str, Any] | None,
    stop_after: int | None,
) -> Path:
    """:func:`fit` once the run folder is locked and the resume checked: build, loop, finish."""
    run = build_run(cfg, run_dir, device, resume_state, resume_ckpt)
    try:
        step, last_saved, stopped = train_loop(run, stop_after)
        if not stopped:
            finish_run(run, step, last_saved)
    finally:
        if run.writer is not None:
            run.writer.close()
    return run_dir
