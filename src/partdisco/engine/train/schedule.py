"""Learning rate as a pure function of the step."""

from __future__ import annotations

from partdisco.config import OptimConfig


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the base learning rates at ``step``.

    Poly decay ``(1 - step / horizon) ** power`` (ref: trainer_ours.py:39, whose horizon is a hard-coded
    100000; here it is ``optim.schedule_steps`` or the run length), after an optional linear warm-up.

    Example:
        >>> from partdisco.config import OptimConfig
        >>> round(lr_factor(60000, OptimConfig(schedule_steps=100000), 60000), 3)
        0.438
    """
    horizon = cfg.schedule_steps or total_steps
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(step / max(horizon, 1), 1.0)
    return (1.0 - progress) ** cfg.power
