"""``partdisco segment``: image files in, part-map files out; resumable.

The application on top of :mod:`partdisco.engine.inference` (which turns images into part maps):
collect the inputs (files, folders, glob patterns), read images and masks (``data.io``: grayscale, RGBA,
16-bit, EXIF handled), run :func:`~partdisco.engine.inference.segment_images` in chunks, write the outputs,
skip what a previous run wrote.

Outputs under ``out_dir`` (NAME = the input's path relative to the folder it was found in, no suffix):
``labels/NAME.png`` (palette PNG, uint8 labels 0..K), ``color/NAME.png``, ``overlay/NAME.png``, optional
``probs/NAME.npz``, plus ``parts.json`` and ``index.html``. Every file is written atomically; an image is
skipped on a rerun when all its files and its ``parts.json`` entry exist (docs/SEGMENT.md).

Under ``torchrun`` (an initialised process group) the images still to do are dealt to the ranks in input
order (rank r takes every world-th one); each rank writes its own images' files and merges its entries into
the one ``parts.json`` (under the folder lock, as two runs into one ``--out`` do), and rank 0 writes the
final ``parts.json`` (entries in input order, as one process writes them) and ``index.html``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from partdisco.config import MAX_IMAGE_SIZE
from partdisco.data.io import IMAGE_EXTENSIONS, ImageReadError, check_same_size, read_image, read_mask
from partdisco.engine import distributed as dist_utils
from partdisco.engine.inference import (
    PartMaps,
    check_background,
    inference_fg_refine,
    inference_padding,
    inference_size,
    segment_images,
)
from partdisco.engine.runfolder import require_writable_dir
from partdisco.fileio import atomic_write, write_json
from partdisco.visualise import (
    PALETTE,
    colorize,
    overlay,
    save_label_png,
    save_png,
    write_contact_sheet,
)

logger = logging.getLogger(__name__)

PARTS_JSON_VERSION = 1
MAX_WORKING_PIXELS = 4096 * 4096  # larger images are shrunk while decoding: memory stays bounded
IO_THREADS = 2  # threads that decode inputs and encode outputs while the network runs
THUMB_SIDE = 320  # longer side of the input thumbnails that index.html shows (inside --out: portable)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputImage:
    """One image file to segment.

    Attributes:
        path: the file (absolute, resolved).
        name: output name: the path relative to the folder it was found in, POSIX, without its suffix
            (``sub/cat``); outputs are ``labels/NAME.png`` etc.
    """

    path: Path
    name: str


@dataclass
class SegmentSummary:
    """What :func:`segment_files` did.

    Attributes:
        out_dir: the output folder.
        written: names segmented in this run.
        skipped: names whose outputs existed already (resumed).
        failed: unreadable files: path -> reason.
        notes: names whose background differs from what was asked for -> why (:attr:`PartMaps.note`).
        no_foreground: names segmented in this run where no pixel is a part (all background).
        parts_json: path of ``parts.json``.
        index_html: path of ``index.html``.
    """

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    no_foreground: list[str] = field(default_factory=list)
    parts_json: Path | None = None
    index_html: Path | None = None


# ----------------------------------------------------------------------------------------------- inputs


def _has_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _glob_root(pattern: Path) -> Path:
    """The longest leading part of a glob pattern without wildcards (the folder names are relative to)."""
    parts: list[str] = []
    for part in pattern.parts:
        if _has_glob(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted, hidden files and folders left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


def _is_under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _strip_suffix(rel: Path) -> str:
    return rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()


def _unique_names(files: list[tuple[Path, Path]]) -> list[str]:
    """Unique output names for (file, root) pairs.

    Relative to the root; for collisions relative to the colliding files' common folder, then with the
    file suffix kept, then with a ``~N`` counter.
    """
    names = [_strip_suffix(f.relative_to(root)) for f, root in files]

    def collisions() -> dict[str, list[int]]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, n in enumerate(names):
            groups[n].append(i)
        return {n: idx for n, idx in groups.items() if len(idx) > 1}

    for idx in collisions().values():
        common = Path(os.path.commonpath([str(files[i][0].parent) for i in idx]))
        for i in idx:
            names[i] = _strip_suffix(files[i][0].relative_to(common))
    for idx in collisions().values():
        for i in idx:
            names[i] = f"{names[i]}{files[i][0].suffix}"
    for idx in collisions().values():
        for count, i in enumerate(idx[1:], start=2):
            names[i] = f"{names[i]}~{count}"
    return names


def collect_images(
    inputs: Sequence[str | os.PathLike[str]], exclude: Sequence[str | os.PathLike[str]] = ()
) -> list[InputImage]:
    """Expand files, folders (recursively) and glob patterns into a list of images with unique names.

    Folders and glob matches keep files whose suffix is in :data:`partdisco.data.io.IMAGE_EXTENSIONS`;
    a file named explicitly is taken whatever its suffix (a non-image is reported when it is read). Hidden
    files and folders are skipped, a file given twice is taken once, and files under ``exclude`` (the
    output folder) are left out.

    Args:
        inputs: paths of files or folders, or glob patterns (``**`` recurses).
        exclude: folders whose files are never inputs.

    Returns:
        The images in input order (folders sorted), each with its output name (see :class:`InputImage`).

    Raises:
        FileNotFoundError: an input is neither a file, a folder nor a glob pattern.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "sub").mkdir()
        >>> Image.new("RGB", (4, 4)).save(root / "sub" / "a.png")
        >>> [item.name for item in collect_images([root])]
        ['sub/a']
    """
    excluded = [Path(e).expanduser().resolve() for e in exclude]
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            candidates, root = _walk_images(path), path
        elif path.is_file():
            candidates, root = [path], path.parent
        elif _has_glob(str(given)):
            root = _glob_root(path)
            candidates = []
            for match in sorted(root.glob(path.relative_to(root).as_posix())):
                if match.is_dir():
                    candidates += _walk_images(match)
                elif match.is_file() and match.suffix.lower() in IMAGE_EXTENSIONS:
                    candidates.append(match)
            if not candidates:
                logger.warning("input pattern %r matches no image files", str(given))
        elif path.is_symlink():
            raise FileNotFoundError(
                f"input {str(given)!r} is a symbolic link to nothing (a loop or a missing file)"
            )
        else:
            raise FileNotFoundError(
                f"input {str(given)!r} does not exist (expected an image file, a folder or a glob pattern)"
            )
        root = root.resolve()
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
                logger.warning("skipping %s: a symbolic link loop", candidate)
                continue
            if resolved in seen or _is_under(resolved, excluded):
                continue
            seen.add(resolved)
            # Keep the name relative to the root even when the file is a symlink pointing elsewhere.
            pairs.append((resolved, root) if root in resolved.parents else (resolved, resolved.parent))
    names = _unique_names(pairs)
    return [InputImage(path, name) for (path, _), name in zip(pairs, names)]


def default_out_dir(inputs: Sequence[str | os.PathLike[str]]) -> Path:
    """The output folder when none is given: ``<folder>_parts`` next to the folder of the first input.

    The folder is the input itself when it is a folder, the file's folder for a file, the fixed leading
    part of a glob pattern otherwise: ``photos/`` -> ``photos_parts/``, ``shots/a.jpg`` -> ``shots_parts/``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "photos"; d.mkdir()
        >>> default_out_dir([d]) == d.parent / "photos_parts"
        True
    """
    if not inputs:
        raise ValueError("no inputs given")
    first = Path(inputs[0]).expanduser()
    if first.is_dir():
        folder = first
    elif first.is_file():
        folder = first.parent
    else:
        folder = _glob_root(first)
    folder = folder.resolve()
    return folder.parent / f"{folder.name or 'root'}_parts"


def find_mask(masks_dir: str | os.PathLike[str], item: InputImage) -> Path | None:
    """The mask file of an image: ``MASKS/NAME.<ext>``, else ``MASKS/<file stem>.<ext>``.

    ``.png`` is tried first, then the other :data:`IMAGE_EXTENSIONS`.

    Args:
        masks_dir: the masks folder.
        item: the image.

    Returns:
        The mask path, or None when there is none.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "cat.png").write_bytes(b"")
        0
        >>> find_mask(d, InputImage(Path("/x/cat.jpg"), "cat")).name
        'cat.png'
    """
    folder = Path(masks_dir)
    suffixes = (".png", *(s for s in IMAGE_EXTENSIONS if s != ".png"))
    for base in dict.fromkeys((item.name, item.path.stem)):
        for suffix in suffixes:
            for candidate in (folder / f"{base}{suffix}", folder / f"{base}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


# ----------------------------------------------------------------------------------------------- files


def output_paths(out_dir: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Where the outputs of image NAME go.

    Args:
        out_dir: the output folder.
        name: the image's output name (:attr:`InputImage.name`).

    Returns:
        ``{"labels", "color", "overlay", "probs", "input"}`` -> paths (``probs`` is ``.npz``, ``input`` the
        ``.jpg`` thumbnail of the input that ``index.html`` shows, the others ``.png``).

    Example:
        >>> output_paths("out", "sub/cat")["overlay"].as_posix()
        'out/overlay/sub/cat.png'
    """
    out = Path(out_dir)
    paths = {kind: out / kind / f"{name}.png" for kind in ("labels", "color", "overlay")}
    paths["probs"] = out / "probs" / f"{name}.npz"
    paths["input"] = out / "input" / f"{name}.jpg"
    return paths


def _write_probs(path: Path, probs16: np.ndarray, background_channel: bool) -> None:
    """``probs/NAME.npz`` atomically (opened by us: ``np.savez`` would append ``.npz`` to the temp name)."""

    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, probs=probs16, background_channel=np.bool_(background_channel))

    atomic_write(path, to_file)


def _write_thumbnail(path: Path, image: np.ndarray) -> None:
    """The input as a small JPEG inside the output folder, so ``index.html`` works when the folder moves."""
    from PIL import Image

    thumb = Image.fromarray(image)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: thumb.save(tmp, format="JPEG", quality=85))


def write_outputs(
    out_dir: Path, item: InputImage, image: np.ndarray, maps: PartMaps, save_probs: bool, alpha: float = 0.5
) -> dict[str, Any]:
    """Write one image's files and return its ``parts.json`` entry.

    Args:
        out_dir: the output folder.
        item: the image.
        image: uint8 (H, W, 3) RGB, as segmented.
        maps: its segmentation at (H, W).
        save_probs: also write ``probs/NAME.npz`` (needs ``maps.probs``).
        alpha: part opacity in the overlay.

    Returns:
        The entry (see docs/SEGMENT.md for the schema).
    """
    paths = output_paths(out_dir, item.name)
    _write_thumbnail(paths["input"], image)
    save_label_png(paths["labels"], maps.labels)
    save_png(paths["color"], colorize(maps.labels))
    save_png(paths["overlay"], overlay(image, maps.labels, alpha=alpha))
    if save_probs:
        if maps.probs is None:
            raise ValueError("save_probs needs PartMaps.probs; segment with with_probs=True")
        probs16 = maps.probs.astype(np.float16)  # (C, H, W)
        _write_probs(paths["probs"], probs16, maps.probs.shape[0] != len(maps.centroids))
    return part_entry(
        item, maps, {k: p.relative_to(out_dir).as_posix() for k, p in paths.items()}, save_probs
    )


def part_entry(item: InputImage, maps: PartMaps, files: dict[str, str], with_probs: bool) -> dict[str, Any]:
    """The ``parts.json`` entry of one image: size, present parts, areas and centroids.

    Args:
        item: the image.
        maps: its segmentation.
        files: output paths relative to the output folder (``labels``, ``color``, ``overlay``, ``probs``).
        with_probs: whether ``probs`` was written.

    Returns:
        ``{"source", "height", "width", "background", "files", "present", "area", "foreground_area",
        "centroid"}``: ``area[k-1]`` is the pixel count of part k, ``foreground_area`` the count of
        non-background pixels, ``centroid[k-1]`` its (x, y) in pixels or None when absent.
    """
    K = len(maps.centroids)
    area = np.bincount(maps.labels.ravel(), minlength=K + 1)[1 : K + 1]
    present = [k + 1 for k in range(K) if area[k] > 0]
    centroid = [
        [round(float(x), 2), round(float(y), 2)] if area[k] > 0 else None
        for k, (x, y) in enumerate(maps.centroids)
    ]
    entry = {
        "source": str(item.path),
        "height": int(maps.labels.shape[0]),
        "width": int(maps.labels.shape[1]),
        "background": maps.background,
        "files": {k: v for k, v in files.items() if k != "probs" or with_probs},
        "present": present,
        "area": [int(a) for a in area],
        "foreground_area": int(area.sum()),  # pixels not labelled 0 (background)
        "centroid": centroid,
    }
    if maps.note:
        entry["background_note"] = maps.note
    return entry


def _is_done(out_dir: Path, item: InputImage, entries: dict[str, Any], save_probs: bool) -> bool:
    entry = entries.get(item.name)
    if entry is None or entry.get("source") != str(item.path):
        return False
    paths = output_paths(out_dir, item.name)
    kinds = ("labels", "color", "overlay", "input", "probs")[: 5 if save_probs else 4]
    return all(paths[k].is_file() for k in kinds)


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


def _foreground_info(entry: dict[str, Any]) -> str:
    if "foreground_area" not in entry:
        return ""
    if entry["foreground_area"] == 0:
        return ", NO FOREGROUND FOUND (all background)"
    share = 100.0 * entry["foreground_area"] / max(1, entry["width"] * entry["height"])
    return f", foreground {share:.0f}%"


def _write_index(out_dir: Path, data: dict[str, Any], num_parts: int) -> Path:
    """``index.html``, linking only to files inside ``out_dir`` (input thumbnails too): it can be moved."""
    cards = []
    for name in sorted(data["images"]):
        entry = data["images"][name]
        files = entry["files"]
        present = ", ".join(str(k) for k in entry["present"]) or "none"
        background = entry["background"]
        if entry.get("background_note"):
            background += f" ({entry['background_note']})"
        cards.append(
            {
                "name": name,
                "image": files.get("input", output_paths(".", name)["input"].as_posix()),
                "overlay": files["overlay"],
                "color": files["color"],
                "info": (
                    f"{entry['width']}x{entry['height']} px, parts {present}, background: {background}"
                    + _foreground_info(entry)
                ),
            }
        )
    has_background = any(e["background"] != "none" for e in data["images"].values())
    return write_contact_sheet(
        out_dir / "index.html",
        cards,
        f"partdisco segment: {out_dir.name}",
        num_parts,
        show_background=has_background,
        failed=data.get("failed") or {},
    )


def _owned_files(data: dict[str, Any] | None) -> list[str]:
    """Paths (relative to ``--out``) that segment wrote there, from a parts.json (older ones: its entries)."""
    if data is None:
        return []
    owned = list(data.get("owned_files") or [])
    for entry in data.get("images", {}).values():
        owned += list(entry.get("files", {}).values())
    return owned + ["parts.json", "index.html"]


def _refuse_foreign_files(
    out: Path, pending: Sequence[InputImage], owned: set[str], save_probs: bool
) -> None:
    """Raise before any work when an output path holds a file that segment did not write."""
    kinds = ("labels", "color", "overlay", "input") + (("probs",) if save_probs else ())
    targets = [out / "parts.json", out / "index.html"]
    targets += [output_paths(out, item.name)[k] for item in pending for k in kinds]
    foreign = [p for p in targets if p.exists() and p.relative_to(out).as_posix() not in owned]
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise ValueError(
            f"--out {out} holds files that partdisco segment did not write ({shown}); choose another --out "
            "(or move those files)"
        )


def _settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
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


NAME_MAX = 255  # bytes of one file name on common file systems
_TMP_OVERHEAD = 14  # fileio's temp name: "." + NAME + "." + 8 random characters + ".tmp"


def _name_too_long(out: Path, item: InputImage) -> str | None:
    """Why the outputs of ``item`` cannot be written (a file name over NAME_MAX bytes), or None."""
    longest = max(len(os.fsencode(p.name)) for p in output_paths(out, item.name).values())
    if longest + _TMP_OVERHEAD <= NAME_MAX:
        return None
    return (
        f"{item.path}: its output file names would be {longest + _TMP_OVERHEAD} bytes long "
        f"(the limit is {NAME_MAX}); rename the file"
    )


@contextlib.contextmanager
def _out_lock(out: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the ``--out`` folder itself (no lock file), waited for (ms per chunk)."""
    import fcntl

    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _merge_and_write(
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
    parts_json = out / "parts.json"
    mine = set(written)
    with _out_lock(out):
        disk = read_parts_json(parts_json)
        if disk is not None:
            data["owned_files"].update(_owned_files(disk))  # what segment wrote stays segment's
        if disk is not None and disk.get("settings") != data.get("settings"):
            # keep the other run's index, add the files this run wrote to the ledger, and stop
            disk["owned_files"] = sorted(data["owned_files"])
            write_json(parts_json, disk, indent=1, sort_keys=False)
            raise ValueError(
                f"{parts_json} was rewritten meanwhile by another partdisco segment run with other settings "
                f"({_settings_diff(disk.get('settings') or {}, data.get('settings') or {})}); this run "
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
        if num_parts is None:
            return None
        return _write_index(out, data, num_parts)


def _put_in_order(data: dict[str, Any], order: Sequence[InputImage]) -> None:
    """Reorder ``data["images"]`` and ``data["failed"]`` in place: ``order``'s images first, in its order."""
    for key, of in (("images", lambda item: item.name), ("failed", lambda item: str(item.path))):
        table = data[key]
        first = [of(item) for item in order if of(item) in table]
        data[key] = {k: table[k] for k in first} | {k: v for k, v in table.items() if k not in set(first)}


def _gather_summary(summary: SegmentSummary, items: Sequence[InputImage]) -> None:
    """Every rank's written / failed / notes, gathered into ``summary`` in input order (collective)."""
    import torch.distributed as dist

    mine = (summary.written, summary.failed, summary.notes)
    everyone: list[Any] = [None] * dist_utils.world_size()
    dist.all_gather_object(everyone, mine)
    written = {name for w, _, _ in everyone for name in w}
    failed = {path: reason for _, f, _ in everyone for path, reason in f.items()}
    notes = {name: note for _, _, n in everyone for name, note in n.items()}
    summary.written = [item.name for item in items if item.name in written]
    summary.failed = {str(i.path): failed[str(i.path)] for i in items if str(i.path) in failed}
    summary.notes = {i.name: notes[i.name] for i in items if i.name in notes}


def _fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask for an image shrunk while decoding: resized (bilinear) when only the scale differs."""
    H, W = size
    h, w = mask.shape
    if (h, w) == (H, W) or h * w <= H * W or abs(h / w - H / W) > 0.02 * (H / W) + 1 / min(H, W):
        return mask  # same size, or a real mismatch that check_same_size reports
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR))


def _segment_or_skip(
    model: nn.Module,
    loaded: list[tuple[InputImage, np.ndarray, np.ndarray | None]],
    with_masks: bool,
    run: dict[str, Any],
) -> list[tuple[tuple[InputImage, np.ndarray, np.ndarray | None], PartMaps | str]]:
    """Segment a chunk; when it fails for memory, retry image by image and name the ones that still fail."""
    try:
        maps = segment_images(
            model,
            [image for _, image, _ in loaded],
            [m for _, _, m in loaded] if with_masks else None,
            names=[str(item.path) for item, _, _ in loaded],
            **run,
        )
        return list(zip(loaded, maps))
    except (MemoryError, RuntimeError) as err:
        if len(loaded) == 1:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            return [(loaded[0], f"could not be processed ({type(err).__name__}: {reason})")]
    results: list[tuple[tuple[InputImage, np.ndarray, np.ndarray | None], PartMaps | str]] = []
    for one in loaded:
        results += _segment_or_skip(model, [one], with_masks, run)
    return results


def _read_chunk(
    chunk: Sequence[InputImage], mask_paths: dict[str, Path]
) -> tuple[list[tuple[InputImage, np.ndarray, np.ndarray | None]], list[tuple[InputImage, ImageReadError]]]:
    """Read a chunk's images (and masks): ``(loaded, unreadable)``, both in input order."""
    loaded: list[tuple[InputImage, np.ndarray, np.ndarray | None]] = []
    unreadable: list[tuple[InputImage, ImageReadError]] = []
    for item in chunk:
        try:
            image = read_image(item.path, max_pixels=MAX_WORKING_PIXELS)
            mask = None
            if item.name in mask_paths:
                mask = _fit_mask(read_mask(mask_paths[item.name]), image.shape[:2])
                check_same_size(item.path, mask_paths[item.name], image.shape, mask.shape)
        except ImageReadError as err:
            unreadable.append((item, err))
            continue
        loaded.append((item, image, mask))
    return loaded, unreadable


def _chunks(items: Sequence[InputImage], size: int) -> Iterable[Sequence[InputImage]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def segment_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    masks_dir: str | os.PathLike[str] | None = None,
    size: int | None = None,
    batch_size: int = 8,
    background: str = "auto",
    save_probs: bool = False,
    overwrite: bool = False,
    alpha: float = 0.5,
    checkpoint: str | None = None,
    progress: bool = True,
    crop: str = "auto",
    padding: float | None = None,
    fg_refine: float | None = None,
) -> SegmentSummary:
    """Segment image files and write label maps, colour maps, overlays, ``parts.json`` and ``index.html``.

    Resumable: an image whose files and ``parts.json`` entry exist is skipped (unless ``overwrite``).
    Unreadable images (and unreadable masks) are skipped and listed in the summary and in ``parts.json``.
    ``out_dir`` is created or reused; nothing in it is deleted.

    Args:
        model: a Segmenter, already on its device.
        inputs: files, folders (recursive) and glob patterns (:func:`collect_images`).
        out_dir: output folder.
        masks_dir: foreground masks named like the images (:func:`find_mask`); they define background.
        size: shorter side of the network input; None = the model's training size (:func:`inference_size`).
        batch_size: images per forward pass.
        background: ``"auto"``, ``"none"`` or ``"border"`` (see :func:`segment_images`); must be
            ``"auto"`` with masks.
        save_probs: also write ``probs/NAME.npz`` (float16 (C, H, W)).
        overwrite: recompute images whose outputs exist.
        alpha: part opacity in the overlays.
        checkpoint: checkpoint path, recorded in ``parts.json`` and compared on a rerun.
        progress: show a progress bar.
        crop: object-centric inference, ``"auto"``, ``"object"`` or ``"none"`` (:func:`segment_images`).
        padding: per-side padding of the object crop; None = the checkpoint's ``data.padding_frac``
            (:func:`inference_padding`).
        fg_refine: refinement radius of the predicted foreground (:func:`segment_images`); None = the
            checkpoint's ``eval.fg_refine_radius``.

    Returns:
        A :class:`SegmentSummary`.

    Raises:
        ValueError: no images found; bad arguments; ``out_dir/parts.json`` from a different model or
            settings (without ``overwrite``); a mask whose size differs from its image's (names both files).
        FileNotFoundError: an input does not exist, or an image has no mask in ``masks_dir``.
    """
    from tqdm.auto import tqdm

    check_background(background)
    if masks_dir is not None and background != "auto":
        raise ValueError(
            f"background={background!r} cannot be combined with masks: masks define the background"
        )
    size = inference_size(model, size)
    padding = inference_padding(model, padding)
    refine = inference_fg_refine(model, fg_refine)
    if not 1 <= size <= MAX_IMAGE_SIZE or batch_size < 1:
        raise ValueError(
            f"size must be 1..{MAX_IMAGE_SIZE} and batch_size >= 1, got size={size}, batch_size={batch_size}"
        )
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    items = collect_images(inputs, exclude=[out])
    if not items:
        raise ValueError(
            f"no images found in {', '.join(map(str, inputs))} "
            f"(image suffixes: {', '.join(IMAGE_EXTENSIONS)})"
        )
    mask_paths: dict[str, Path] = {}
    if masks_dir is not None:
        masks_root = Path(masks_dir).expanduser()
        if not masks_root.is_dir():
            raise FileNotFoundError(f"masks folder {str(masks_root)!r} does not exist")
        missing = []
        for item in items:
            found = find_mask(masks_root, item)
            if found is None:
                missing.append(str(item.path))
            else:
                mask_paths[item.name] = found
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) have no mask in {masks_root} (looked for NAME.png etc.), first: "
                + ", ".join(missing[:5])
            )
    num_parts = int(model.num_parts)
    settings = {
        "checkpoint": checkpoint,
        "arch": str(getattr(model, "arch", type(model).__name__)),
        "num_parts": num_parts,
        "background_channel": bool(model.background_channel),
        "size": int(size),
        "background": background,
        "masks": None if masks_dir is None else str(Path(masks_dir).expanduser().resolve()),
        "crop": crop,
        "padding": float(padding),
    }
    if model.background_channel:  # (a key only they have: older parts.json of other models still match)
        settings["fg_refine"] = list(refine)
    settings["weights"] = weights_fingerprint(model)  # a retrained model.pt is another model
    parts_json = out / "parts.json"
    if out.exists():
        require_writable_dir(out, "--out")
    data = read_parts_json(parts_json)
    owned = set(_owned_files(data))  # files of this --out that segment wrote; nothing else is replaced
    if data is not None and data.get("settings") != settings:
        if not overwrite:
            diff = _settings_diff(data.get("settings") or {}, settings)
            raise ValueError(
                f"{parts_json} was written with other settings ({diff}); pass --overwrite to recompute "
                "every image into it, or choose another --out"
            )
        data = None  # different model or settings: the old entries no longer describe the files
    if data is None:
        data = {"format_version": PARTS_JSON_VERSION, "settings": settings, "images": {}, "failed": {}}
    data["palette"] = PALETTE[: num_parts + 1].tolist()
    entries: dict[str, Any] = data["images"]
    failed: dict[str, str] = data.setdefault("failed", {})
    out.mkdir(parents=True, exist_ok=True)
    require_writable_dir(out, "--out")

    summary = SegmentSummary(out_dir=out, parts_json=parts_json)
    pending = []
    for item in items:
        if not overwrite and _is_done(out, item, entries, save_probs):
            summary.skipped.append(item.name)
        else:
            pending.append(item)
    for item in list(pending):
        too_long = _name_too_long(out, item)
        if too_long:
            pending.remove(item)
            failed[str(item.path)] = summary.failed[str(item.path)] = too_long
            logger.warning("skipping %s", too_long)
    with _out_lock(out):  # what a run started meanwhile wrote is segment's too
        disk = read_parts_json(parts_json)
        if disk is not None and disk.get("settings") != settings and not overwrite:
            raise ValueError(
                f"{parts_json} was written meanwhile by another partdisco segment run with other settings "
                f"({_settings_diff(disk.get('settings') or {}, settings)}); choose another --out"
            )
        owned.update(_owned_files(disk))
        _refuse_foreign_files(out, pending, owned, save_probs)
        data["owned_files"] = owned  # a set while running; a sorted list on disk
        if disk is None or disk.get("settings") != settings:  # claim --out for these settings at once
            data["owned_files"] = sorted(owned)
            write_json(parts_json, data, indent=1, sort_keys=False)
            data["owned_files"] = owned
    rank, world = dist_utils.rank(), dist_utils.world_size()
    if world > 1:
        dist_utils.barrier()  # every rank has listed what is pending before any rank writes
        pending = pending[rank::world]  # dealt in input order: the same shares on every rank
    if summary.skipped and rank == 0:
        logger.info("%d of %d images already segmented in %s, skipped", len(summary.skipped), len(items), out)
    bar = tqdm(total=len(pending), unit="img", desc="segment", disable=not progress or rank != 0)
    run = dict(
        size=size,
        background=background,
        batch_size=batch_size,
        with_probs=save_probs,
        crop=crop,
        padding=padding,
        fg_refine=refine,
    )
    # Decoding and encoding (PIL releases the GIL) run in threads while the network runs: chunk k + 1 is
    # read and chunk k - 1's files are written during chunk k's forward passes. Results are taken in input
    # order, so parts.json and every file are what the sequential loop wrote.
    io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="segment-io")
    # A few batches per chunk, so images of equal processing size can share a batch.
    chunks = list(_chunks(pending, 4 * batch_size))
    reads = [io.submit(_read_chunk, chunks[0], mask_paths)] if chunks else []
    writing: list[tuple[InputImage, PartMaps, Future[dict[str, Any]]]] = []

    def finish_writes(interrupted: bool = False) -> None:
        while writing:
            item, maps, job = writing.pop(0)
            if interrupted and (job.cancelled() or job.exception() is not None):
                continue  # stopped: list only the images whose files were all written
            entries[item.name] = job.result()
            owned.update(entries[item.name]["files"].values())
            if entries[item.name]["foreground_area"] == 0:
                summary.no_foreground.append(item.name)
            if maps.note:
                summary.notes[item.name] = maps.note
            failed.pop(str(item.path), None)
            summary.written.append(item.name)
            bar.update(1)
        _merge_and_write(out, data, summary.written)  # after every chunk: a killed run resumes here

    try:
        for k in range(len(chunks)):
            loaded, unreadable = reads[k].result()
            if k + 1 < len(chunks):
                reads.append(io.submit(_read_chunk, chunks[k + 1], mask_paths))
            for item, err in unreadable:
                failed[str(item.path)] = summary.failed[str(item.path)] = str(err)
                logger.warning("skipping an unreadable file: %s", err)
                bar.update(1)
            if loaded:
                # the ledger first: files a killed run leaves are then segment's own on the rerun
                kinds = ("labels", "color", "overlay", "input") + (("probs",) if save_probs else ())
                for item, _, _ in loaded:
                    paths = output_paths(out, item.name)
                    owned.update(paths[kind].relative_to(out).as_posix() for kind in kinds)
                _merge_and_write(out, data, summary.written)
            results = _segment_or_skip(model, loaded, bool(mask_paths), run) if loaded else []
            if k > 0:
                finish_writes()  # chunk k - 1's files, written while this chunk ran
            for (item, image, _), maps in results:
                if isinstance(maps, str):  # could not be processed (memory): skipped by name
                    failed[str(item.path)] = summary.failed[str(item.path)] = maps
                    logger.warning("skipping %s: %s", item.path, maps)
                    bar.update(1)
                else:
                    job = io.submit(write_outputs, out, item, image, maps, save_probs, alpha=alpha)
                    writing.append((item, maps, job))
        if chunks:
            finish_writes()
    except BaseException:
        for job in reads:
            job.cancel()  # no more reading; the segmented images' files are still written (as before)
        io.shutdown(wait=True)
        finish_writes(interrupted=True)  # and listed: a rerun skips them
        raise
    finally:
        io.shutdown(wait=True)
        bar.close()
    if world == 1:
        summary.index_html = _merge_and_write(out, data, summary.written, num_parts=num_parts)
    else:
        dist_utils.barrier()  # every rank's entries are in parts.json
        if rank == 0:  # one final parts.json, in input order, and the one index.html
            _merge_and_write(out, data, summary.written, num_parts=num_parts, order=items)
        _gather_summary(summary, items)
        summary.index_html = out / "index.html"
        dist_utils.barrier()  # no rank reports before index.html exists
    if summary.no_foreground:
        logger.warning(
            "no foreground found in %d image(s) (all background; marked in index.html), first: %s",
            len(summary.no_foreground),
            ", ".join(summary.no_foreground[:5]),
        )
    logger.info(
        "segmented %d images, skipped %d done, %d unreadable -> %s",
        len(summary.written),
        len(summary.skipped),
        len(summary.failed),
        out,
    )
    return summary
