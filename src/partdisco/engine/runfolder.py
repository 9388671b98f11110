"""A run folder: the names of its files (their one home), ownership, an OS lock, honest resume, writability.

Rules (docs/RELIABILITY.md):

- A folder *holds a run* when it has ``model.pt`` or a checkpoint. A new run into such a folder is refused;
  ``resume=`` continues it. A new run goes into a new or empty folder, or over a run that stopped before
  its first checkpoint; a folder of other files is refused (:func:`check_new_run_folder`).
- A training process holds ``fcntl.flock`` on ``RUN/.lock`` from before it writes anything until it ends.
  The kernel drops the lock when the process dies (even ``kill -9``), so a killed run can be resumed at
  once, and a second process on the same folder is refused instead of mixing files.
- On resume only the keys in :data:`RESUME_MUTABLE` may differ from the checkpoint's config; any other
  change is refused in one line before a file is touched.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from partdisco.config import ConfigError

# The names of a run folder's files, spelled here only (training, evaluation, the API use these).
MODEL_FILE = "model.pt"  # the final, weights-only model
CONFIG_FILE = "config.yaml"  # the resolved run config
METRICS_FILE = "metrics.json"  # held-out metrics (also what `partdisco eval` writes next to a model)
PARTS_PICTURE = "parts.png"  # input / part map / overlay of fixed test images
TRAIN_LOG = "train.log"
CHECKPOINTS_DIR = "checkpoints"  # periodic full-state checkpoints, step_*.pt
STEP_FILE = re.compile(r"^step_(\d+)\.pt$")  # a periodic checkpoint's file name
LOCK_NAME = ".lock"
RUN_MARKERS = (CONFIG_FILE, CHECKPOINTS_DIR, MODEL_FILE)
# Temp files of our atomic writes only (partdisco.fileio: ``.NAME.<random>.tmp``; older ``NAME.tmp-PID``):
# a user's own ``notes.tmp`` in a run folder is not ours to delete.
_STALE_TMP = re.compile(r"^(\..+|config\.yaml|model\.pt|metrics\.json|parts\.png|step_\d+\.pt)\.tmp(-\d+)?$")
# What a run that stopped before its first checkpoint leaves: a new run may start over it.
FOREGROUND_DIR = "foreground"  # data.foreground=discover: the discovered masks (engine/discover.py)
_FAILED_START = (CONFIG_FILE, TRAIN_LOG, "tensorboard", CHECKPOINTS_DIR, FOREGROUND_DIR, LOCK_NAME)

RESUME_MUTABLE: dict[str, str] = {
    "train.steps": "train longer (the poly horizon follows unless optim.schedule_steps is set)",
    "train.log_every": "logging cadence",
    "train.vis_every": "picture cadence",
    "train.eval_every": "evaluation cadence",
    "train.checkpoint_every": "checkpoint cadence",
    "train.keep_checkpoints": "how many periodic checkpoints are kept",
    "train.compile": "torch.compile on/off (same maths)",
    "optim.lr": "new base lr of both parameter groups (backbone lr, head lr * head_lr_mult); momentum / "
    "Adam moments are kept",
    "data.root": "the data set moved (it must be the same data)",
    "data.num_workers": "loader processes",
    "device": "where to run",
    "eval.*": "how the run is evaluated",
    "log.*": "where and how it logs",
}
"""Config keys that ``resume=`` may change, with what the change does. Everything else is refused."""

_RESUME_IGNORED = ("out", "resume")
CHECKPOINT_FIELDS = ("format_version", "step", "model", "optimizer", "scaler", "config")


def step_checkpoint_name(step: int) -> str:
    """The file name of the periodic checkpoint of ``step``.

    Example:
        >>> step_checkpoint_name(120)
        'step_0000120.pt'
    """
    return f"step_{step:07d}.pt"


def step_checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """``RUN/checkpoints/step_NNNNNNN.pt``: where the periodic checkpoint of ``step`` goes."""
    return Path(run_dir) / CHECKPOINTS_DIR / step_checkpoint_name(step)


class RunFolderBusyError(ConfigError):
    """Another process holds the run folder's lock."""


def holds_run(run_dir: str | os.PathLike[str]) -> list[str]:
    """What of a run a folder holds (``config.yaml``, ``checkpoints``, ``model.pt``); empty = no run."""
    folder = Path(run_dir)
    return [name for name in RUN_MARKERS if (folder / name).exists()]


def refuse_if_holds_run(run_dir: Path, config_file: str | None = None) -> None:
    """Raise :class:`ConfigError` when a new run would write into a folder that holds another run."""
    found = holds_run(run_dir)
    if not found:
        return
    via = f" (the out: of --config {config_file})" if config_file else ""
    raise ConfigError(
        f"out={run_dir}{via} already holds a run ({', '.join(found)}); continue it with resume={run_dir}, "
        "or start a new run with out=NEW_FOLDER"
    )


def check_new_run_folder(run_dir: Path, config_file: str | None = None) -> bool:
    """Refuse a new run into a folder that holds a run or files that are not a run's; say if it restarts.

    A new run may go into a missing or empty folder, or into the folder of a run that stopped before its
    first checkpoint (only ``config.yaml``, ``train.log``, ``tensorboard/``, an empty ``checkpoints/``,
    the discovered masks ``foreground/`` and our temp files): that run cannot be resumed, so starting it
    again is the way on (a finished discovery is reused).

    Returns:
        True when the folder holds such a failed start (the caller logs that it starts over).

    Raises:
        ConfigError: the folder holds a run with a checkpoint or ``model.pt``, or files of the user's.
    """
    if not run_dir.is_dir():
        return False
    checkpoints = run_dir / CHECKPOINTS_DIR
    saved = (run_dir / MODEL_FILE).exists() or (
        checkpoints.is_dir() and any(p.name.startswith("step_") for p in checkpoints.iterdir())
    )
    if saved:
        refuse_if_holds_run(run_dir, config_file)
    entries = sorted(p.name for p in run_dir.iterdir())
    foreign = [n for n in entries if n not in _FAILED_START and not _STALE_TMP.match(n)]
    if checkpoints.is_dir():
        foreign += [
            f"{CHECKPOINTS_DIR}/{p.name}" for p in checkpoints.iterdir() if not _STALE_TMP.match(p.name)
        ]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(
            f"out={run_dir} is not empty and is not a run folder (it has {shown}); a new run writes "
            "model.pt, metrics.json, parts.png... there: choose a new or empty folder with out=NEW_FOLDER"
        )
    return CONFIG_FILE in entries


_RUN_FILES = (MODEL_FILE, CONFIG_FILE, METRICS_FILE, PARTS_PICTURE, TRAIN_LOG, LOCK_NAME)


def refuse_run_file(
    dst: str | os.PathLike[str], what: str, source: str | os.PathLike[str] | None = None
) -> None:
    """Refuse an output path that is ``source`` itself or one of a run folder's own files.

    A run's ``model.pt``, ``config.yaml``, ``metrics.json``... and anything in its ``checkpoints/`` belong to
    that run (an fp16 copy over ``model.pt``, or a weights-only file over a checkpoint, would lose the
    fp32 model or the optimiser state that ``resume=`` needs).

    Raises:
        ConfigError: one line naming ``what``, the path and the way out.
    """
    path = Path(dst)
    if source is not None and path.exists() and Path(source).exists() and os.path.samefile(path, source):
        raise ConfigError(f"{what} {str(path)!r} is the file it reads ({source}); write to another path")
    parent = path.absolute().parent
    in_checkpoints = parent.name == CHECKPOINTS_DIR and holds_run(parent.parent)
    if in_checkpoints or (path.name in _RUN_FILES and holds_run(parent)):
        run = parent.parent if in_checkpoints else parent
        raise ConfigError(
            f"{what} {str(path)!r} is a file of the run folder {str(run)!r}, which it would replace; "
            "write to another path"
        )


class RunLock:
    """Exclusive, non-blocking ``flock`` on ``RUN/.lock``; released on :meth:`release` or process death.

    Args:
        run_dir: the run folder (created if missing).

    Raises:
        RunFolderBusyError: another process holds the lock (the message names its pid when known).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        import fcntl

        self.path = Path(run_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = ""
            try:
                other = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                pid = f" (pid {other})" if other.isdigit() else ""
                raise RunFolderBusyError(
                    f"run folder {self.path.parent} is in use by another partdisco process{pid}; wait for it "
                    "to end or use another out="
                ) from None
            raise
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_stale_tmp(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files that interrupted atomic writes left in a run folder (call while holding the lock)."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINTS_DIR):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and path.name != LOCK_NAME and _STALE_TMP.match(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def is_writable_dir(folder: str | os.PathLike[str]) -> bool:
    """Whether files can be created in ``folder`` (the nearest existing ancestor when it does not exist).

    Uses ``os.access(W_OK)``, which also reports read-only file systems. Note that for root ``os.access``
    ignores permission bits, as the kernel does for root's writes.
    """
    path = Path(folder).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def require_writable_dir(folder: str | os.PathLike[str], what: str) -> None:
    """Raise ConfigError naming ``what`` when ``folder`` cannot be written (see :func:`is_writable_dir`)."""
    if not is_writable_dir(folder):
        raise ConfigError(f"{what}: folder {str(folder)!r} is not writable (read-only or no permission)")


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _mutable(key: str) -> bool:
    return key in RESUME_MUTABLE or f"{key.split('.', 1)[0]}.*" in RESUME_MUTABLE


def check_resume_changes(
    saved: Mapping[str, Any], new: Mapping[str, Any], checkpoint: str | Path
) -> list[str]:
    """Compare the checkpoint's config with the resumed run's; refuse keys outside :data:`RESUME_MUTABLE`.

    Args:
        saved: the ``config`` dict stored in the checkpoint.
        new: ``RunConfig.to_dict()`` of the resumed run.
        checkpoint: the checkpoint, for the message.

    Returns:
        The allowed keys that change, ``"key: old -> new"``.

    Raises:
        ConfigError: one line listing every refused change and the allowed keys.
    """
    old = dict(_flatten(saved))
    refused, allowed = [], []
    for key, value in _flatten(new):
        if key in _RESUME_IGNORED or key not in old or old[key] == value:
            continue
        change = f"{key}: {old[key]!r} -> {value!r}"
        (allowed if _mutable(key) else refused).append(change)
    if refused:
        raise ConfigError(
            f"resume from {checkpoint}: cannot change {'; '.join(refused)} (a resumed run must be the same "
            f"run; start a new run with out=NEW_FOLDER; resume may change only {', '.join(RESUME_MUTABLE)})"
        )
    return allowed


def check_checkpoint_fields(state: Mapping[str, Any], path: str | Path) -> None:
    """Raise ValueError naming the missing fields when a checkpoint cannot resume a run."""
    missing = [k for k in CHECKPOINT_FIELDS if k not in state]
    if missing:
        raise ValueError(
            f"checkpoint {str(path)!r} lacks {', '.join(missing)}, so it cannot resume training "
            "(weights-only files serve eval/segment, or model.init_from for a new run)"
        )


__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "PARTS_PICTURE",
    "RESUME_MUTABLE",
    "RunFolderBusyError",
    "RunLock",
    "check_checkpoint_fields",
    "check_new_run_folder",
    "check_resume_changes",
    "holds_run",
    "is_writable_dir",
    "refuse_if_holds_run",
    "refuse_run_file",
    "remove_stale_tmp",
    "require_writable_dir",
    "step_checkpoint_name",
    "step_checkpoint_path",
]
