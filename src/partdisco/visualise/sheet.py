"""Compose pictures into grids, write PNGs atomically, and write an HTML contact sheet.

The contact sheet is one self-contained ``index.html`` (inline CSS, no scripts, relative links), so a run
folder can be copied anywhere and opened in a browser without a server.
"""

from __future__ import annotations

import html
import logging
import os
import urllib.parse
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from partdisco.fileio import atomic_write, write_text
from partdisco.visualise.overlay import overlay, resize_labels, to_uint8_image
from partdisco.visualise.palette import (
    NUM_COLORS,
    PALETTE,
    _as_numpy,
    _check_labels,
    _default_font,
    _text_size,
    colorize,
    legend,
    palette_for_png,
)

logger = logging.getLogger(__name__)

PART_GRID_TITLES = ("input", "part map", "overlay")


def _fit_text(text: str, max_width: int, font: Any) -> str:
    """Shorten ``text`` with an ellipsis until it is at most ``max_width`` pixels wide."""
    if _text_size(text, font)[0] <= max_width:
        return text
    while text and _text_size(text + "...", font)[0] > max_width:
        text = text[:-1]
    return text + "..." if text else ""


def _resize_to_height(tile: np.ndarray, height: int) -> np.ndarray:
    """Resize an (h, w, 3) uint8 tile to ``height`` rows keeping its aspect ratio.

    Upscaling is nearest-neighbour so small part maps stay crisp; downscaling is bilinear (antialiased).
    """
    h, w = tile.shape[:2]
    if h == height:
        return tile
    new_w = max(1, round(w * height / h))
    resample = Image.Resampling.NEAREST if height > h else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(tile).resize((new_w, height), resample=resample), dtype=np.uint8)


def image_grid(
    rows: Sequence[Sequence[Any]],
    pad: int = 2,
    bg: int | Sequence[int] = 255,
    titles: Sequence[str] | None = None,
    tile_height: int | None = None,
) -> np.ndarray:
    """Lay out images in a grid of rows and columns.

    Every tile is resized to a common height (keeping its aspect ratio); column j is as wide as its
    widest tile and each tile is centred in its cell. Rows may have different lengths.

    Args:
        rows: list of rows, each a list of images accepted by
            :func:`partdisco.visualise.overlay.to_uint8_image` ((H, W, 3) uint8, float CHW tensors, ...).
        pad: gap in pixels around and between tiles, >= 0.
        bg: background grey level (int) or RGB triple, 0..255.
        titles: optional column titles, one per column, drawn above the first row with PIL's default
            font (shortened with "..." when wider than the column).
        tile_height: common tile height; default the tallest tile.

    Returns:
        (H_grid, W_grid, 3) uint8 with ``H_grid = pad + title_band + R * (tile_height + pad)`` and
        ``W_grid = pad + sum_j (col_width_j + pad)``; ``title_band`` is 0 without titles.

    Raises:
        ValueError: if there are no tiles, ``titles`` has the wrong length, or ``pad``/``tile_height``
            are out of range.

    Example:
        >>> import numpy as np
        >>> tile = np.zeros((8, 8, 3), dtype=np.uint8)
        >>> image_grid([[tile, tile], [tile, tile]], pad=2).shape
        (22, 22, 3)
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if len(rows) == 0 or any(len(row) == 0 for row in rows):
        raise ValueError(
            f"image_grid needs at least one tile in every row, got row lengths {[len(r) for r in rows]}"
        )
    tiles = [[to_uint8_image(t) for t in row] for row in rows]
    height = tile_height if tile_height is not None else max(t.shape[0] for row in tiles for t in row)
    if height < 1:
        raise ValueError(f"tile_height must be >= 1, got {height}")
    tiles = [[_resize_to_height(t, height) for t in row] for row in tiles]
    num_cols = max(len(row) for row in tiles)
    if titles is not None and len(titles) != num_cols:
        raise ValueError(f"titles must have one entry per column ({num_cols}), got {len(titles)}")
    col_widths = [max(row[j].shape[1] for row in tiles if j < len(row)) for j in range(num_cols)]
    col_x = [pad + sum(col_widths[:j]) + j * pad for j in range(num_cols)]
    font = _default_font(12)
    title_band = _text_size("Hg", font)[1] + pad if titles is not None else 0
    grid_h = pad + title_band + len(tiles) * (height + pad)
    grid_w = pad + sum(col_widths) + num_cols * pad
    fill = (int(bg),) * 3 if np.isscalar(bg) else tuple(int(v) for v in bg)  # type: ignore[arg-type]
    if len(fill) != 3 or not all(0 <= v <= 255 for v in fill):
        raise ValueError(f"bg must be an int or an RGB triple in 0..255, got {bg}")
    canvas = np.empty((grid_h, grid_w, 3), dtype=np.uint8)
    canvas[:] = fill
    for i, row in enumerate(tiles):
        y = pad + title_band + i * (height + pad)
        for j, tile in enumerate(row):
            x = col_x[j] + (col_widths[j] - tile.shape[1]) // 2
            canvas[y : y + height, x : x + tile.shape[1]] = tile
    if titles is not None:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        # Dark text on light backgrounds, light text on dark ones.
        text_color = (0, 0, 0) if sum(fill) >= 3 * 128 else (255, 255, 255)
        for j, title in enumerate(titles):
            text = _fit_text(str(title), col_widths[j], font)
            x = col_x[j] + (col_widths[j] - _text_size(text, font)[0]) // 2
            draw.text((x, pad), text, fill=text_color, font=font)
        canvas = np.asarray(pil, dtype=np.uint8).copy()
    return canvas


def part_grid(
    images: Sequence[Any],
    labels: Sequence[Any],
    alpha: float = 0.5,
    pad: int = 2,
    tile_height: int | None = None,
    num_parts: int | None = None,
    part_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Build the standard "input | part map | overlay" grid, one row per image.

    Args:
        images: list of images accepted by :func:`partdisco.visualise.overlay.to_uint8_image`,
            e.g. float (3, H, W) tensors in [0, 1] or (H, W, 3) uint8 arrays.
        labels: list of (h, w) integer part maps (0 = background, 1..K parts), one per image; maps of a
            different size than their image (e.g. the logit grid) are resized with
            :func:`partdisco.visualise.overlay.resize_labels`.
        alpha: part opacity of the overlay column.
        pad: gap between tiles in pixels.
        tile_height: common tile height; default the tallest image.
        num_parts: when given, a legend for parts 1..K is appended on the right.
        part_names: optional K names for the legend.

    Returns:
        (H_grid, W_grid, 3) uint8 RGB grid with titled columns.

    Raises:
        ValueError: if the lists are empty or of different lengths.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((16, 16, 3), dtype=np.uint8); lab = np.ones((8, 8), dtype=np.int64)
        >>> part_grid([img, img], [lab, lab]).shape[1]  # 3 columns of 16 px and 4 gaps of 2 px
        56
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(
            f"need as many label maps as images (>= 1), got {len(images)} images, {len(labels)} labels"
        )
    rows = []
    for image, label in zip(images, labels):
        img = to_uint8_image(image)
        lab = _check_labels(label)
        if lab.shape != img.shape[:2]:
            lab = resize_labels(lab, img.shape[:2])
        rows.append([img, colorize(lab), overlay(img, lab, alpha=alpha)])
    grid = image_grid(rows, pad=pad, titles=list(PART_GRID_TITLES), tile_height=tile_height)
    if num_parts is None:
        return grid
    key = legend(num_parts, names=part_names)
    height = max(grid.shape[0], key.shape[0] + 2 * pad)
    out = np.full((height, grid.shape[1] + key.shape[1] + pad, 3), 255, dtype=np.uint8)
    out[: grid.shape[0], : grid.shape[1]] = grid
    out[pad : pad + key.shape[0], grid.shape[1] : grid.shape[1] + key.shape[1]] = key
    return out


# zlib settings of every PNG we write (issue #24, BENCHMARKS.md). PIL's default (level 6) made encoding a
# 512-px overlay most of segment's writing time; level 1 with zlib's run-length strategy is 3-4x faster and
# its files are within ~5 % of level 6 (smaller than level 1's default strategy). Lossless either way: the
# pixels read back are the same.
PNG_COMPRESS_LEVEL = 1
PNG_COMPRESS_TYPE = zlib.Z_RLE


def _write_png(path: str | os.PathLike[str], pil: Image.Image) -> Path:
    """Save ``pil`` as PNG at ``path`` atomically, with the zlib settings above."""
    options = {"compress_level": PNG_COMPRESS_LEVEL, "compress_type": PNG_COMPRESS_TYPE}
    return atomic_write(Path(path), lambda tmp: pil.save(tmp, "PNG", **options))


def save_png(path: str | os.PathLike[str], array: Any) -> Path:
    """Write an image as PNG atomically (temp file in the same folder, then ``os.replace``).

    Args:
        path: destination file; missing parent folders are created.
        array: uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA array or tensor.

    Returns:
        The destination path.

    Raises:
        ValueError: if the shape is none of the above.
        TypeError: if the array is not uint8 (convert with ``to_uint8_image`` first).

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = save_png(os.path.join(tempfile.mkdtemp(), "a.png"), np.zeros((2, 3, 3), dtype=np.uint8))
        >>> p.name
        'a.png'
    """
    arr = _as_numpy(array)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(
            f"cannot write {path}: expected (H, W), (H, W, 3) or (H, W, 4), got {tuple(arr.shape)}"
        )
    if arr.dtype != np.uint8:
        raise TypeError(f"cannot write {path}: expected uint8, got {arr.dtype}; convert with to_uint8_image")
    pil = Image.fromarray(np.ascontiguousarray(arr))
    return _write_png(path, pil)


def save_label_png(path: str | os.PathLike[str], labels: Any) -> Path:
    """Write a label map as a 'P'-mode (palette) PNG: pixel values are the labels, shown in palette colours.

    Reading it back with ``np.asarray(PIL.Image.open(path))`` returns the labels unchanged.

    Args:
        path: destination file; missing parent folders are created.
        labels: (H, W) integer labels in 0..255.

    Returns:
        The destination path.

    Example:
        >>> import numpy as np, tempfile, os
        >>> from PIL import Image
        >>> p = save_label_png(os.path.join(tempfile.mkdtemp(), "l.png"), np.array([[0, 3]]))
        >>> np.asarray(Image.open(p)).tolist()
        [[0, 3]]
    """
    lab = _check_labels(labels)
    height, width = lab.shape
    pil = Image.frombytes("P", (width, height), np.ascontiguousarray(lab, dtype=np.uint8).tobytes())
    pil.putpalette(palette_for_png())
    return _write_png(path, pil)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px; background: #f4f4f4;
       color: #222; }
h1 { font-size: 20px; margin: 0 0 4px 0; }
.meta { color: #666; margin: 0 0 12px 0; font-size: 13px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin-bottom: 16px; font-size: 13px; }
.legend .item { display: inline-flex; align-items: center; gap: 5px; }
.swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #888; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 8px; }
.card .name { font-size: 13px; font-weight: 600; margin-bottom: 6px; word-break: break-all;
              max-width: 600px; }
.pics { display: flex; gap: 6px; }
figure { margin: 0; text-align: center; }
figure img { width: 192px; height: auto; image-rendering: pixelated; display: block; }
figcaption { font-size: 11px; color: #666; }
.info { font-size: 11px; color: #444; margin: 6px 0 0 0; white-space: pre-wrap; max-width: 600px; }
"""

_ENTRY_KEYS = {"name", "image", "overlay", "color", "info"}
_IMAGE_KEYS = (("image", "input"), ("overlay", "overlay"), ("color", "part map"))


def _relative_href(target: str | os.PathLike[str], base_dir: Path) -> str:
    """Return ``target`` as a URL-quoted POSIX path relative to ``base_dir`` (absolute paths converted)."""
    path = Path(target)
    if path.is_absolute():
        path = Path(os.path.relpath(path, base_dir.resolve()))
    return urllib.parse.quote(os.fsencode(path.as_posix()), safe="/")  # bytes: non-UTF-8 names too


def write_contact_sheet(
    out_html: str | os.PathLike[str],
    entries: Sequence[Mapping[str, Any]],
    title: str,
    num_parts: int,
    part_names: Sequence[str] | None = None,
    *,
    show_background: bool = True,
    failed: Mapping[str, str] | None = None,
) -> Path:
    """Write a self-contained HTML contact sheet: a palette legend, then one card per image.

    Each card shows the name, the input image and its overlay side by side (and the colour part map
    when given), plus an optional info line. Image links are relative to the HTML file's folder
    (absolute paths are converted), so the folder can be moved and opened without a server. All text
    is escaped with ``html.escape``. The file is written atomically.

    Args:
        out_html: destination ``.html`` path (parent folders are created).
        entries: one mapping per image with keys ``name`` (str), ``image`` and ``overlay`` (paths
            relative to ``out_html``'s folder), and optional ``color`` (path of the part map) and
            ``info`` (str).
        title: page title and heading.
        num_parts: K, number of parts in the legend (labels 1..K), 1..255.
        part_names: optional K part names for the legend.
        show_background: list label 0 "background" in the legend (False when no image has background).
        failed: files that could not be read -> reason, listed after the cards.

    Returns:
        The path of the written HTML file.

    Raises:
        ValueError: on a missing/unknown entry key, a bad ``num_parts`` or ``part_names`` length.

    Example:
        >>> import tempfile, os
        >>> p = write_contact_sheet(os.path.join(tempfile.mkdtemp(), "index.html"),
        ...                         [{"name": "a", "image": "a.png", "overlay": "a_ov.png"}], "demo", 4)
        >>> "a_ov.png" in p.read_text()
        True
    """
    out_path = Path(out_html)
    _check_sheet_args(entries, num_parts, part_names)
    base_dir = out_path.parent
    esc = html.escape
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{len(entries)} images, {num_parts} parts</p>',
        *_legend_lines(num_parts, part_names, show_background),
        '<div class="cards">',
    ]
    missing_files: list[str] = []
    for entry in entries:
        lines += _card_lines(entry, base_dir, missing_files)
    lines.append("</div>")
    if failed:
        lines.append(f"<h2>{len(failed)} unreadable file(s), skipped</h2>")
        lines.append('<ul class="failed">')
        lines += [f"<li>{esc(str(path))}: {esc(str(reason))}</li>" for path, reason in sorted(failed.items())]
        lines.append("</ul>")
    lines += ["</body>", "</html>", ""]
    if missing_files:
        logger.warning(
            "contact sheet %s links %d missing file(s), first: %s",
            out_path,
            len(missing_files),
            missing_files[0],
        )
    # A file name that is not UTF-8 (surrogate escapes) shows with U+FFFD; its links are percent-encoded.
    text = "\n".join(lines).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return write_text(out_path, text)


def _check_sheet_args(
    entries: Sequence[Mapping[str, Any]], num_parts: int, part_names: Sequence[str] | None
) -> None:
    """ValueError for a bad ``num_parts``, ``part_names`` length, or a missing / unknown entry key."""
    if not 1 <= num_parts < NUM_COLORS:
        raise ValueError(f"num_parts must be in 1..{NUM_COLORS - 1}, got {num_parts}")
    if part_names is not None and len(part_names) != num_parts:
        raise ValueError(f"part_names must have num_parts={num_parts} entries, got {len(part_names)}")
    for i, entry in enumerate(entries):
        missing = {"name", "image", "overlay"} - set(entry)
        unknown = set(entry) - _ENTRY_KEYS
        if missing or unknown:
            raise ValueError(
                f"contact sheet entry {i} ({entry.get('name', '?')!r}): missing keys {sorted(missing)}, "
                f"unknown keys {sorted(unknown)}; allowed keys are {sorted(_ENTRY_KEYS)}"
            )


def _legend_lines(num_parts: int, part_names: Sequence[str] | None, show_background: bool) -> list[str]:
    """The palette legend: a swatch and a name per label (0 = background when shown, then 1..K)."""
    names = list(part_names) if part_names is not None else [f"part {k}" for k in range(1, num_parts + 1)]
    legend_items = [(0, "background")] if show_background else []
    legend_items += [(k, names[k - 1]) for k in range(1, num_parts + 1)]
    lines = ['<div class="legend">']
    for label, name in legend_items:
        r, g, b = (int(v) for v in PALETTE[label])
        lines.append(
            f'<span class="item"><span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'
            f"{label}: {html.escape(str(name))}</span>"
        )
    lines.append("</div>")
    return lines


def _card_lines(entry: Mapping[str, Any], base_dir: Path, missing_files: list[str]) -> list[str]:
    """One image's card: its name, its pictures (linked relative to ``base_dir``) and the info line.

    Pictures that do not exist are still linked and added to ``missing_files``.
    """
    esc = html.escape
    name = esc(str(entry["name"]))
    lines = ['<div class="card">', f'<div class="name">{name}</div>', '<div class="pics">']
    for key, caption in _IMAGE_KEYS:
        if entry.get(key) is None:
            continue
        target = Path(entry[key])
        if not (target if target.is_absolute() else base_dir / target).exists():
            missing_files.append(str(target))
        href = esc(_relative_href(target, base_dir))
        lines.append(
            f'<figure><a href="{href}"><img src="{href}" alt="{name} {caption}" loading="lazy"></a>'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    lines.append("</div>")
    if entry.get("info"):
        lines.append(f'<pre class="info">{esc(str(entry["info"]))}</pre>')
    lines.append("</div>")
    return lines
