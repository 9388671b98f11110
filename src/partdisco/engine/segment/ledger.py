"""``parts.json``, the ledger of an output folder: what segment wrote there, with which model and settings.

Reading and merging it (two runs into one ``--out``, the ranks of one run), whether an image is done,
the weights fingerprint, the settings diff, and the folder lock (``flock`` on ``--out``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from partdisco.engine.inference.options import SegmentOptions
from partdisco.engine.runfolder import require_writable_dir
from partdisco.engine.segment.inputs import InputImage
from partdisco.engine.segment.outputs import INDEX_HTML, LEGACY_OVERLAY_SUFFIX, output_paths, write_index
from partdisco.fileio import write_json
from partdisco.visualise import PALETTE

logger = logging.getLogger(__name__)

PARTS_JSON_VERSION = 1
PARTS_JSON = "parts.json"  # the ledger, in --out


def output_kinds(save_probs: bool) -> tuple[str, ...]:
    """The files segment writes per image (:func:`.outputs.output_paths` keys): ``probs`` only on request."""
    return ("labels", "color", "overlay", "input") + (("probs",) if save_probs else ())


def is_done(out_dir: Path, item: InputImage, entries: dict[str, Any], save_probs: bool) -> bool:
    """Whether a previous run segmented this file: its entry names the same source and its files exist."""
    entry = entries.get(item.name)
    if entry is None or entry.get("source") != str(item.path):
        return False
    paths = output_paths(out_dir, item.name)
    legacy = paths["overlay"].with_suffix(LEGACY_OVERLAY_SUFFIX)  # older versions wrote PNG overlays
    if (entry.get("files") or {}).get("overlay") == legacy.relative_to(out_dir).as_posix():
        paths["overlay"] = legacy
    return all(paths[k].is_file() for k in output_kinds(save_probs))


def read_parts_json(path: Path) -> dict[str, Any] | None:
    """Read an existing ``parts.json`` (None when absent).

    Raises:
        ValueError: the file is not a parts.json this version wrote; the message names it.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}; delete it to start the index afresh") from None
    if not isinstance(data, dict) or data.get("format_version") != PARTS_JSON_VERSION or "images" not in data:
        raise ValueError(
            f"{path} is not a partdisco parts.json (format_version {PARTS_JSON_VERSION}); use another --out"
        )
    return data


def owned_files(data: dict[str, Any] | None) -> list[str]:
    """Paths (relative to ``--out``) that segment wrote there, from a parts.json (older ones: its entries)."""
    if data is None:
        return []
    owned = list(data.get("owned_files") or [])
    for entry in data.get("images", {}).values():
        owned += list(entry.get("files", {}).values())
    return owned + [PARTS_JSON, INDEX_HTML]


def pending_outputs(out: Path, pending: Sequence[InputImage], save_probs: bool) -> list[str]:
    """Every output file of the ``pending`` images, relative to ``out`` (as ``owned_files`` lists them)."""
    kinds = output_kinds(save_probs)
    return [output_paths(out, item.name)[k].relative_to(out).as_posix() for item in pending for k in kinds]


def refuse_foreign_files(out: Path, targets: Sequence[str], owned: set[str]) -> None:
    """Raise before any work when ``parts.json``, ``index.html`` or a target is a file segment did not write.

    ``targets`` are relative to ``out`` (:func:`pending_outputs`).
    """
    every = (PARTS_JSON, INDEX_HTML, *targets)
    foreign = [out / t for t in every if t not in owned and (out / t).exists()]
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise ValueError(
            f"--out {out} holds files that partdisco segment did not write ({shown}); choose another --out "
            "(or move those files)"
        )


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: old there vs new now`` for each setting that differs (the weights in words)."""
    diff = []
    for key, value in new.items():
        if old.get(key) == value:
            continue
        if key == "weights":
            diff.append(
                "the model's weights differ from those that wrote it (e.g. a resumed run rewrote model.pt)"
                if old.get(key)
                else "it does not record the model's weights (written by an older partdisco)"
            )
        else:
            diff.append(f"{key}: {old.get(key)!r} there vs {value!r} now")
    return ", ".join(diff)


def weights_fingerprint(model: nn.Module) -> str:
    """A short SHA-256 of the model's weights and buffers: parts.json records which model wrote the maps."""
    import hashlib

    digest = hashlib.sha256()
    state = model.state_dict()
    onnx_file = getattr(model, "path", None) if not state else None  # an ONNX model: its weights are the file
    if onnx_file is not None and Path(onnx_file).is_file():
        digest.update(Path(onnx_file).read_bytes())
        return digest.hexdigest()[:16]
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the ``--out`` folder itself (no lock file), waited for (ms per chunk)."""
    import fcntl

    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def merge_and_write(
    out: Path,
    data: dict[str, Any],
    written: Sequence[str],
    num_parts: int | None = None,
    order: Sequence[InputImage] | None = None,
) -> Path | None:
    """Write ``parts.json`` (and ``index.html``) merged with what other runs wrote there meanwhile.

    Entries this run wrote win; every other entry on disk is kept, so two runs into one ``--out`` list all
    images. ``data`` is updated in place with the merged content. ``order``: list the entries (and the
    failed files) of these images first, in this order (the ranks of one run: as one process lists them).
    """
    with out_lock(out):
        _merge_and_write_locked(out, data, written, order)
        return None if num_parts is None else write_index(out, data, num_parts)


def _merge_and_write_locked(
    out: Path, data: dict[str, Any], written: Sequence[str], order: Sequence[InputImage] | None
) -> None:
    """:func:`merge_and_write`'s ``parts.json`` part, for a caller that holds the folder lock."""
    parts_json = out / PARTS_JSON
    mine = set(written)
    disk = read_parts_json(parts_json)
    if disk is not None:
        data["owned_files"].update(owned_files(disk))  # what segment wrote stays segment's
    if disk is not None and disk.get("settings") != data.get("settings"):
        # keep the other run's index, add the files this run wrote to the ledger, and stop
        disk["owned_files"] = sorted(data["owned_files"])
        write_json(parts_json, disk, indent=1, sort_keys=False)
        raise ValueError(
            f"{parts_json} was rewritten meanwhile by another partdisco segment run with other settings "
            f"({settings_diff(disk.get('settings') or {}, data.get('settings') or {})}); this run "
            "stopped: its files are recorded there, rerun it with --overwrite or into another --out"
        )
    if disk is not None:
        for name, entry in disk.get("images", {}).items():
            if name not in mine:
                data["images"][name] = entry
        done_here = {data["images"][n]["source"] for n in mine if n in data["images"]}
        for path, reason in disk.get("failed", {}).items():
            if path not in done_here:
                data["failed"].setdefault(path, reason)
    if order is not None:
        _put_in_order(data, order)
    owned = data["owned_files"]
    data["owned_files"] = sorted(owned)
    try:
        write_json(parts_json, data, indent=1, sort_keys=False)
    finally:
        data["owned_files"] = owned


def _put_in_order(data: dict[str, Any], order: Sequence[InputImage]) -> None:
    """Reorder ``data["images"]`` and ``data["failed"]`` in place: ``order``'s images first, in its order."""
    for key, of in (("images", lambda item: item.name), ("failed", lambda item: str(item.path))):
        table = data[key]
        first = [of(item) for item in order if of(item) in table]
        data[key] = {k: table[k] for k in first} | {k: v for k, v in table.items() if k not in set(first)}


def segment_settings(
    model: nn.Module,
    checkpoint: str | None,
    options: SegmentOptions,
    masks_dir: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    """The settings ``parts.json`` records (``options`` resolved): a rerun with others is refused."""
    size, background, crop, padding, refine = (
        options.size,
        options.background,
        options.crop,
        options.padding,
        options.fg_refine,
    )
    settings = {
        "checkpoint": checkpoint,
        "arch": str(getattr(model, "arch", type(model).__name__)),
        "num_parts": int(model.num_parts),
        "background_channel": bool(model.background_channel),
        "size": int(size),  # type: ignore[arg-type]
        "background": background,
        "masks": None if masks_dir is None else str(Path(masks_dir).expanduser().resolve()),
        "crop": crop,
        "padding": float(padding),  # type: ignore[arg-type]
    }
    if model.background_channel:  # (a key only they have: older parts.json of other models still match)
        settings["fg_refine"] = list(refine)  # type: ignore[arg-type]
    settings["weights"] = weights_fingerprint(model)  # a retrained model.pt is another model
    return settings


def open_ledger(
    out: Path, settings: dict[str, Any], overwrite: bool, num_parts: int
) -> tuple[dict[str, Any], set[str]]:
    """The ledger this run continues (or a new one) and the files of ``out`` that segment wrote.

    Raises:
        ValueError: ``parts.json`` was written with other settings and ``overwrite`` is off.
    """
    parts_json = out / PARTS_JSON
    if out.exists():
        require_writable_dir(out, "--out")
    data = read_parts_json(parts_json)
    owned = set(owned_files(data))  # files of this --out that segment wrote; nothing else is replaced
    if data is not None and data.get("settings") != settings:
        if not overwrite:
            diff = settings_diff(data.get("settings") or {}, settings)
            raise ValueError(
                f"{parts_json} was written with other settings ({diff}); pass --overwrite to recompute "
                "every image into it, or choose another --out"
            )
        data = None  # different model or settings: the old entries no longer describe the files
    if data is None:
        data = {"format_version": PARTS_JSON_VERSION, "settings": settings, "images": {}, "failed": {}}
    data["palette"] = PALETTE[: num_parts + 1].tolist()
    data.setdefault("failed", {})
    return data, owned


def claim_out_dir(
    out: Path,
    data: dict[str, Any],
    owned: set[str],
    pending: Sequence[InputImage],
    overwrite: bool,
    save_probs: bool,
) -> None:
    """Under the folder lock: refuse foreign files, and claim ``--out`` and ``pending``'s output paths.

    What a run started meanwhile wrote is segment's too (``owned`` grows); ``data["owned_files"]`` is that
    set while running (a sorted list on disk).
    """
    parts_json, settings = out / PARTS_JSON, data["settings"]
    with out_lock(out):
        disk = read_parts_json(parts_json)
        if disk is not None and disk.get("settings") != settings and not overwrite:
            raise ValueError(
                f"{parts_json} was written meanwhile by another partdisco segment run with other settings "
                f"({settings_diff(disk.get('settings') or {}, settings)}); choose another --out"
            )
        owned.update(owned_files(disk))
        targets = pending_outputs(out, pending, save_probs)
        refuse_foreign_files(out, targets, owned)
        # every pending image's output paths are segment's from now on: a killed run's files are then
        # its own on the rerun, and the run need not rewrite parts.json before each chunk to say so
        owned.update(targets)
        data["owned_files"] = owned
        if disk is None or disk.get("settings") != settings:
            data["owned_files"] = sorted(owned)
            write_json(parts_json, data, indent=1, sort_keys=False)
            data["owned_files"] = owned
        else:  # the same settings: keep what other runs listed meanwhile
            _merge_and_write_locked(out, data, (), None)
