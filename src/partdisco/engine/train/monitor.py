"""Run logging: one named logger set up at the entry point, TensorBoard scalars/images, optional W&B."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from partdisco.config import LogConfig

LOGGER_NAME = "partdisco"


class _RunLogHandler(logging.FileHandler):
    """``train.log``: a failed write (disk full) is dropped instead of printing a logging traceback."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        pass


def setup_logging(run_dir: Path | None = None, main_process: bool = True, level: int = logging.INFO) -> None:
    """Configure the ``partdisco`` logger once: console on the main process, plus ``run_dir/train.log``."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_partdisco", False):
            logger.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if main_process:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(fmt)
        console._partdisco = True  # type: ignore[attr-defined]
        logger.addHandler(console)
    if run_dir is not None and main_process:
        file_handler = _RunLogHandler(Path(run_dir) / "train.log")
        file_handler.setFormatter(fmt)
        file_handler._partdisco = True  # type: ignore[attr-defined]
        logger.addHandler(file_handler)
    logger.propagate = False


def teardown_logging() -> None:
    """Undo :func:`setup_logging`: close ``train.log`` and the console handler, propagate again.

    Called when :func:`partdisco.engine.train.fit` returns or fails, so that a Python session that trains
    and then segments does not append later messages to the finished run's ``train.log`` (nor write to a
    console stream that was swapped since).
    """
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_partdisco", False):
            logger.removeHandler(handler)
            handler.close()
    logger.propagate = True


class MetricWriter:
    """Scalars and images to TensorBoard (default) and, if asked for, Weights & Biases.

    Args:
        run_dir: the run folder; TensorBoard events go to ``run_dir/tensorboard``.
        cfg: the ``log`` slice of the run config.
        config_dict: the resolved run config, recorded with the W&B run.
    """

    def __init__(self, run_dir: Path, cfg: LogConfig, config_dict: dict[str, Any] | None = None) -> None:
        self._tb = None
        self._wandb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise RuntimeError(
                    "log.wandb=true needs the wandb package: pip install 'partdisco[wandb]'"
                ) from None
            self._wandb = wandb.init(project=cfg.wandb_project, dir=str(run_dir), config=config_dict)

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        """Log scalars under ``prefix/name``."""
        for name, value in values.items():
            tag = f"{prefix}/{name}" if prefix else name
            if self._tb is not None:
                self._tb.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log({(f"{prefix}/{k}" if prefix else k): v for k, v in values.items()}, step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log an (H, W, 3) uint8 image."""
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(image)}, step=step)

    def close(self) -> None:
        """Flush and close the writers."""
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
