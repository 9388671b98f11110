"""What ``partdisco segment`` writes: each image's files, its ``parts.json`` entry, and ``index.html``.

Per image: labels, colour map, overlay, input thumbnail and optional probabilities (:func:`write_outputs`, at
:func:`output_paths`), all written atomically.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from partdisco.engine.inference import (
    PartMaps,
)
from partdisco.engine.segment.inputs import InputImage
from partdisco.fileio import atomic_write
from partdisco.visualise import (
    colorize,
    overlay,
    save_label_png,
    save_png,
    write_contact_sheet,
)

logger = logging.getLogger(__name__)

INDEX_HTML = "index.html"  # the contact sheet, in --out
THUMB_SIDE = 320  # longer side of the input thumbnails that index.html shows (inside --out: portable)
# Overlays are photos with parts blended in: JPEG (quality 90, full-resolution colour so the one-pixel part
# outlines keep their colour) writes one in ~2.5 ms where PNG took 16.5 ms of the ~32 ms of a 512-px image's
# files, at a fifth of the bytes (issue #24). Label and colour maps stay lossless PNG. Output folders of
# older versions hold ``overlay/NAME.png``: their entries stay done (:func:`.ledger.is_done`).
OVERLAY_SUFFIX = ".jpg"
OVERLAY_JPEG_QUALITY = 90
LEGACY_OVERLAY_SUFFIX = ".png"


def output_paths(out_dir: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Where the outputs of image NAME go.

    Args:
        out_dir: the output folder.
        name: the image's output name (:attr:`InputImage.name`).

    Returns:
        ``{"labels", "color", "overlay", "probs", "input"}`` -> paths (``probs`` is ``.npz``, ``overlay``
        a ``.jpg``, ``input`` the ``.jpg`` thumbnail of the input that ``index.html`` shows, the others
        ``.png``).

    Example:
        >>> output_paths("out", "sub/cat")["overlay"].as_posix()
        'out/overlay/sub/cat.jpg'
    """
    out = Path(out_dir)
    paths = {kind: out / kind / f"{name}.png" for kind in ("labels", "color")}
    paths["overlay"] = out / "overlay" / f"{name}{OVERLAY_SUFFIX}"
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


def _write_overlay(path: Path, image: np.ndarray) -> None:
    """The overlay as a JPEG (:data:`OVERLAY_JPEG_QUALITY`, no chroma subsampling), atomically."""
    from PIL import Image

    pil = Image.fromarray(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: pil.save(tmp, format="JPEG", quality=OVERLAY_JPEG_QUALITY, subsampling=0))


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
    _write_overlay(paths["overlay"], overlay(image, maps.labels, alpha=alpha))
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


NAME_MAX = 255  # bytes of one file name on common file systems
_TMP_OVERHEAD = 14  # fileio's temp name: "." + NAME + "." + 8 random characters + ".tmp"


def name_too_long(out: Path, item: InputImage) -> str | None:
    """Why the outputs of ``item`` cannot be written (a file name over NAME_MAX bytes), or None."""
    longest = max(len(os.fsencode(p.name)) for p in output_paths(out, item.name).values())
    if longest + _TMP_OVERHEAD <= NAME_MAX:
        return None
    return (
        f"{item.path}: its output file names would be {longest + _TMP_OVERHEAD} bytes long "
        f"(the limit is {NAME_MAX}); rename the file"
    )


def _foreground_info(entry: dict[str, Any]) -> str:
    if "foreground_area" not in entry:
        return ""
    if entry["foreground_area"] == 0:
        return ", NO FOREGROUND FOUND (all background)"
    share = 100.0 * entry["foreground_area"] / max(1, entry["width"] * entry["height"])
    return f", foreground {share:.0f}%"


def write_index(out_dir: Path, data: dict[str, Any], num_parts: int) -> Path:
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
        out_dir / INDEX_HTML,
        cards,
        f"partdisco segment: {out_dir.name}",
        num_parts,
        show_background=has_background,
        failed=data.get("failed") or {},
    )
