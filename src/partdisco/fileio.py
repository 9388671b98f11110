"""Atomic file writes: the one way partdisco puts a file on disk.

Every writer fills a temporary file in the destination's folder and moves it onto the destination with
``os.replace``, so a reader (or a killed run) sees the old file or the new one, never half of one. The
temporary file is named ``.NAME.<random>.tmp``; when the writer raises it is deleted and the destination is
left as it was. ``engine/runfolder.py: remove_stale_tmp`` deletes temp files a killed process left behind.

This module sits on the bottom floor with ``config`` (docs/ARCHITECTURE.md): every floor may import it.

Example:
    >>> import tempfile, os
    >>> path = write_text(os.path.join(tempfile.mkdtemp(), "a.txt"), "hello")
    >>> path.read_text(), sorted(os.listdir(path.parent))
    ('hello', ['a.txt'])
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file next to ``path``, then ``os.replace`` it onto ``path``.

    Missing parent folders are created. The file gets the permissions a plain ``open()`` would give it
    (``mkstemp`` creates 0600 files).

    Args:
        path: the destination.
        write: fills the file at the path it is given (a ``str``), e.g. ``lambda tmp: img.save(tmp)``.

    Returns:
        The destination path.

    Raises:
        Whatever ``write`` raises (or ``OSError`` from the move); the temp file is deleted first and the
        destination keeps its old contents.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> atomic_write(p, lambda tmp: open(tmp, "wb").close()).name
        'x.bin'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if err.errno is not None and err.filename in (None, tmp):  # name the file the user asked for
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2, sort_keys: bool = True) -> Path:
    """Write ``obj`` as JSON atomically; the text is ``json.dumps(obj, indent=indent, sort_keys=sort_keys)``.

    Example:
        >>> import tempfile, os
        >>> print(write_json(os.path.join(tempfile.mkdtemp(), "m.json"), {"b": 1}).read_text())
        {
          "b": 1
        }
    """
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys))


def save_torch(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (checkpoints); returns the path."""
    import torch  # only the checkpoint writers need it; this module stays importable without it

    def write(tmp: str) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as err:  # torch's zip writer reports a full disk as "[enforce fail at ...]"
            if "inline_container" not in str(err) and "PytorchStreamWriter" not in str(err):
                raise
            stat = os.statvfs(os.path.dirname(tmp) or ".")
            free = stat.f_bavail * stat.f_frsize
            if free < max(LOW_SPACE_BYTES, os.path.getsize(tmp)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp) from None
            raise OSError(errno.EIO, f"torch.save failed ({str(err).strip()[:200]})", tmp) from None

    return atomic_write(path, write)


LOW_SPACE_BYTES = 64 * 2**20  # a torch.save that fails with less free space than this ran out of disk


__all__ = ["atomic_write", "save_torch", "write_bytes", "write_json", "write_text"]
