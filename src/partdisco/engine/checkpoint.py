"""Reading checkpoints (strict, plain-typed) and finding a run folder's: listing, latest, pruning, resume=.

The file names come from :mod:`partdisco.engine.runfolder`; writing a checkpoint is training's business
(:mod:`partdisco.engine.train.checkpointing`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from partdisco.engine.runfolder import CHECKPOINTS_DIR, CONFIG_FILE, STEP_FILE
from partdisco.models.checkpoint import check_format_version  # the one format check
from partdisco.models.weights import load_file

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one of our checkpoints on the CPU (``weights_only``), with a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    ckpt = load_file(path)  # the one torch.load; CheckpointError (a ValueError) names an unreadable file
    check_format_version(ckpt, f"checkpoint {str(path)!r}")  # CheckpointError is a ValueError
    return ckpt


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its periodic checkpoints."""
    return Path(run_dir) / CHECKPOINTS_DIR


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of a run's periodic checkpoints, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = STEP_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest periodic checkpoint of a run folder, or None."""
    found = step_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints."""
    found = step_checkpoints(run_dir)
    for _, path in found[: max(0, len(found) - keep)]:
        path.unlink(missing_ok=True)


def resolve_resume(path: str | Path) -> tuple[Path, Path]:
    """Map ``resume=`` (a run folder or a checkpoint file) to (run folder, checkpoint file).

    Raises:
        FileNotFoundError: nothing to resume from, naming what was looked for.
    """
    path = Path(path)
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == CHECKPOINTS_DIR else path.parent
        return run_dir, path
    if not path.is_dir():
        raise FileNotFoundError(f"resume: {str(path)!r} is neither a run folder nor a checkpoint file")
    latest = latest_checkpoint(path)
    if latest is None and (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"resume: run folder {str(path)!r} stopped before its first checkpoint, so there is nothing to "
            f"resume; start it again with: partdisco train --config {str(path / CONFIG_FILE)}"
        )
    if latest is None:
        raise FileNotFoundError(
            f"resume: run folder {str(path)!r} has no checkpoints "
            f"(looked for {str(checkpoint_dir(path))}/step_*.pt)"
        )
    return path, latest
