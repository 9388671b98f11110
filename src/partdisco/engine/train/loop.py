"""The training loop: learning rate, draws, step, logging with the ETA, pictures, evaluation, checkpoints.

A first Ctrl-C stops after the current step with a checkpoint (:class:`_CtrlC`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from partdisco.engine import distributed as dist_utils
from partdisco.engine.checkpoint import (
    latest_checkpoint,
)
from partdisco.engine.runfolder import step_checkpoint_name
from partdisco.engine.train.checkpointing import save_checkpoint
from partdisco.engine.train.divergence import TrainingDivergedError, raise_if_diverged
from partdisco.engine.train.finish import evaluate_test_split, parts_picture
from partdisco.engine.train.schedule import lr_factor
from partdisco.engine.train.setup import Run
from partdisco.engine.train.step import StepInputs, draw_step, set_train_mode, train_step

log = logging.getLogger("partdisco.train")


def train_loop(run: Run, stop_after: int | None = None) -> tuple[int, Path | None, bool]:
    """Train from ``run.start_step`` to ``cfg.train.steps`` (or ``stop_after`` steps of this session).

    Returns:
        The step reached, the last good checkpoint (or None), and whether the loop was
        stopped by ``stop_after`` (then the run is not finished: no final evaluation or model.pt).
    """
    cfg = run.cfg
    first_bad = torch.full((), -1, dtype=torch.long, device=run.device)  # first non-finite step, no sync
    progress = tqdm(
        total=cfg.train.steps,
        initial=run.start_step,
        desc="train",
        disable=not (run.main and cfg.log.progress),
        dynamic_ncols=True,
    )
    set_train_mode(run.learner.model, cfg.model.freeze_bn)
    t0 = time.perf_counter()
    with progress, _CtrlC(run.world == 1) as ctrl_c:
        try:
            return _loop_steps(run, stop_after, progress, t0, first_bad, ctrl_c)
        except Exception:
            # loader workers get the Ctrl-C too and exit: the loader then fails; the steps done are kept
            if not ctrl_c.asked or ctrl_c.step == run.start_step:
                raise
            _stop_on_ctrl_c(run, ctrl_c.step, ctrl_c.last_saved)


class _CtrlC:
    """The first Ctrl-C (SIGINT) asks the loop to stop after the current step and save a checkpoint.

    A second Ctrl-C stops at once. Only for one process in the main thread (ranks of a distributed run
    would stop at different steps); elsewhere Ctrl-C stops at once, as before.
    """

    def __init__(self, enabled: bool) -> None:
        import signal
        import threading

        self.asked = False
        self.step, self.last_saved = 0, None  # the last finished step and checkpoint (kept by the loop)
        self._enabled = enabled and threading.current_thread() is threading.main_thread()
        self._signal = signal
        self._pid = os.getpid()
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.asked or os.getpid() != self._pid:  # (loader workers inherit the handler: they just stop)
            raise KeyboardInterrupt
        self.asked = True
        log.warning("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again stops at once)")

    def __enter__(self) -> _CtrlC:
        if self._enabled:
            self._old = self._signal.signal(self._signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._signal.signal(self._signal.SIGINT, self._old)


def _stop_on_ctrl_c(run: Run, step: int, last_saved: Path | None) -> None:
    """After a Ctrl-C: save the steps done since the last checkpoint, say where, stop (KeyboardInterrupt)."""
    if last_saved is None or last_saved.name != step_checkpoint_name(step):
        try:
            last_saved = save_checkpoint(run, step, {}, last_saved)
        except (TrainingDivergedError, OSError, RuntimeError) as err:
            log.warning("interrupted at step %d; no checkpoint written (%s)", step, err)
    if last_saved is not None:
        log.warning(
            "interrupted at step %d: saved %s; continue with resume=%s", step, last_saved, run.run_dir
        )
    raise KeyboardInterrupt


def _loop_steps(
    run: Run, stop_after: int | None, progress: Any, t0: float, first_bad: torch.Tensor, ctrl_c: _CtrlC
) -> tuple[int, Path | None, bool]:
    """The body of :func:`train_loop`."""
    cfg, learner, device = run.cfg, run.learner, run.device
    total = cfg.train.steps
    # a resumed run's last good checkpoint is the one it resumed from until it writes one
    step, last_saved = run.start_step, latest_checkpoint(run.run_dir) if run.start_step else None
    ctrl_c.step, ctrl_c.last_saved = step, last_saved
    t_first = t0
    for batch in run.loader:
        for group in learner.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, cfg.optim, total)
        inputs = StepInputs.from_batch(batch, device, run.mask_free)
        draws = draw_step(cfg.seed, step, cfg.loss, inputs.image.shape[0], run.rank, run.world)
        terms = train_step(learner, inputs, draws)
        bad = ~torch.isfinite(terms["total"])
        first_bad = torch.where((first_bad < 0) & bad, torch.full_like(first_bad, step), first_bad)
        step += 1
        progress.update(1)
        now = time.perf_counter()
        if step == run.start_step + 1:
            t_first = now  # the first step carries the start-up (allocations, workers): left out of the ETA
        per_step = (now - t_first) / max(1, step - run.start_step - 1)  # running average since step 1
        if step == run.start_step + ETA_AFTER_STEPS and step < total:
            _log_eta(per_step, step - run.start_step - 1, total - step)
        is_last, checkpoint_now = step == total, step % cfg.train.checkpoint_every == 0
        if step % cfg.train.log_every == 0 or is_last or checkpoint_now:
            raise_if_diverged(first_bad, terms, last_saved)
            eta = per_step * (total - step) if step - run.start_step > 1 else None
            _log_step(run, step, terms, progress, time.perf_counter() - t0, eta)
        if run.writer is not None and (step % cfg.train.vis_every == 0 or is_last):
            run.writer.image("parts/test", parts_picture(run), step)
        if cfg.train.eval_every > 0 and step % cfg.train.eval_every == 0 and not is_last:
            metrics = evaluate_test_split(run)
            if run.writer is not None:
                run.writer.scalars({k: v for k, v in metrics.items() if isinstance(v, float)}, step, "eval")
            set_train_mode(learner.model, cfg.model.freeze_bn)
        if checkpoint_now or is_last:
            last_saved = save_checkpoint(run, step, terms, last_saved)
        ctrl_c.step, ctrl_c.last_saved = step, last_saved
        if ctrl_c.asked and not is_last:
            raise_if_diverged(first_bad, terms, last_saved)  # a diverged step is not saved
            _stop_on_ctrl_c(run, step, last_saved)
        if stop_after is not None and step - run.start_step >= stop_after:
            log.info("stopping after %d steps as asked (step %d)", stop_after, step)
            return step, last_saved, True
    return step, last_saved, False


def _log_step(
    run: Run,
    step: int,
    terms: dict[str, torch.Tensor],
    progress: Any,
    elapsed_s: float,
    eta_s: float | None = None,
) -> None:
    """The one logging block: progress bar, ``train.log`` (without a bar or at checkpoints), TensorBoard.

    ``eta_s``: the remaining time from the running average of the step time (the first step left out).
    """
    cfg = run.cfg
    values = {k: dist_utils.reduce_mean(v).item() for k, v in terms.items()}
    values["lr"] = run.learner.optimizer.param_groups[0]["lr"]
    progress.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k != "grad_norm"})
    if not cfg.log.progress or step % cfg.train.checkpoint_every == 0:
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        left = f" (about {_duration(eta_s)} left)" if eta_s is not None and step < cfg.train.steps else ""
        log.info("step %d/%d %s%s", step, cfg.train.steps, shown, left)
    if run.writer is not None:
        run.writer.scalars(values, step, prefix="train")
        run.writer.scalars({"steps_per_s": (step - run.start_step) / elapsed_s}, step, "speed")


ETA_AFTER_STEPS = 3  # the projected run time is logged once, after this many steps of a session
SLOW_RUN_S = 3600.0  # ... and is a warning when the remaining steps project to more than this


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60} min" if hours else f"{rest // 60} min {rest % 60} s"


def _log_eta(per_step: float, done: int, remaining: int) -> None:
    """The first projection of the run time; the step lines of ``train.log`` keep it updated."""
    eta = per_step * remaining
    text = _duration(eta)
    message = (
        f"{per_step:.2f} s/step over {done} steps after the first (its start-up left out): the other "
        f"{remaining} take about {text}"
    )
    if eta > SLOW_RUN_S:
        log.warning(
            "%s on this machine (fewer train.steps, a smaller data.image_size or a GPU help)", message
        )
    else:
        log.info(message)
