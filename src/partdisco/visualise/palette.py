"""One fixed colour palette, so part k has the same colour in every picture partdisco writes.

``PALETTE[0]`` is the background and is **black** ``(0, 0, 0)``: it matches the VOC/'P'-mode PNG
convention (index 0 = black), so label PNGs written with :func:`palette_for_png` look like the usual
part-annotation files, and :func:`partdisco.visualise.overlay.overlay` never paints it by default.
``PALETTE[1..7]`` are the Okabe-Ito colour-blind-safe colours, ``PALETTE[8..20]`` are hand-picked from
Kelly's and Paul Tol's high-contrast sets (minimum CIE76 distance of about 22 between any two of 0..20),
and ``PALETTE[21..255]`` are generated deterministically by greedy farthest-point sampling in CIE-Lab
over a 9-level RGB grid, each new colour as far as possible from all earlier ones.

Labels follow the evaluation convention ``labels = fg * (argmax + 1)``: 0 is background, 1..K are parts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from partdisco.imaging.color import rgb_to_lab

logger = logging.getLogger(__name__)

NUM_COLORS = 256
BACKGROUND_COLOR = (0, 0, 0)

# Index 1.. in order; the first seven are Okabe & Ito (2008), the safest for colour-blind readers, so
# the usual K = 4..8 runs use them only.
_HAND_PICKED: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),  # 1 orange (Okabe-Ito)
    (86, 180, 233),  # 2 sky blue (Okabe-Ito)
    (0, 158, 115),  # 3 bluish green (Okabe-Ito)
    (240, 228, 66),  # 4 yellow (Okabe-Ito)
    (0, 114, 178),  # 5 blue (Okabe-Ito)
    (213, 94, 0),  # 6 vermillion (Okabe-Ito)
    (204, 121, 167),  # 7 reddish purple (Okabe-Ito)
    (135, 86, 146),  # 8 purple (Kelly)
    (190, 0, 50),  # 9 crimson (Kelly)
    (194, 178, 128),  # 10 buff (Kelly)
    (141, 182, 0),  # 11 yellow green (Kelly)
    (136, 45, 23),  # 12 reddish brown (Kelly)
    (51, 34, 136),  # 13 indigo (Tol)
    (255, 170, 187),  # 14 light pink (Tol)
    (17, 119, 51),  # 15 dark green (Tol)
    (238, 51, 119),  # 16 magenta (Tol vibrant)
    (170, 255, 195),  # 17 mint
    (230, 230, 230),  # 18 near white
    (0, 200, 200),  # 19 cyan
    (153, 153, 51),  # 20 olive (Tol muted)
)

# Rounding the Lab distances before argmax makes ties resolve by grid index on every platform.
_DISTANCE_DECIMALS = 6


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert sRGB uint8 colours (..., 3) to CIE-Lab float64 (..., 3) with :func:`rgb_to_lab`."""
    flat = torch.from_numpy(rgb.reshape(-1, 3).astype(np.float64) / 255.0).float()  # (N, 3)
    lab = rgb_to_lab(flat.T.reshape(1, 3, -1, 1))  # (1, 3, N, 1)
    return lab.reshape(3, -1).T.double().numpy().reshape(rgb.shape)


def _build_palette() -> np.ndarray:
    """Build the (256, 3) uint8 palette: background, hand-picked colours, then farthest-point fill."""
    fixed = np.array((BACKGROUND_COLOR, *_HAND_PICKED), dtype=np.int64)  # (21, 3)
    levels = np.linspace(0, 255, 9).round().astype(np.int64)
    candidates = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    candidate_lab = _srgb_to_lab(candidates)  # (729, 3)
    fixed_lab = _srgb_to_lab(fixed)  # (21, 3)
    min_dist = np.linalg.norm(candidate_lab[:, None] - fixed_lab[None], axis=-1).min(axis=1)  # (729,)
    chosen = [fixed]
    for _ in range(NUM_COLORS - len(fixed)):
        i = int(np.argmax(np.round(min_dist, _DISTANCE_DECIMALS)))
        chosen.append(candidates[i : i + 1])
        min_dist = np.minimum(min_dist, np.linalg.norm(candidate_lab - candidate_lab[i], axis=-1))
    return np.concatenate(chosen, axis=0).astype(np.uint8)


PALETTE: np.ndarray = _build_palette()
"""(256, 3) uint8 RGB: row 0 = background (black), row k = colour of part k. Read-only."""
PALETTE.setflags(write=False)


def _as_numpy(x: Any) -> np.ndarray:
    """Return a NumPy view/copy of an array-like or a torch tensor (any device, bf16/fp16 -> fp32)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        t = x.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def _check_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Validate a (H, W) integer label map in 0..255 and return it as int64."""
    arr = _as_numpy(labels)
    if arr.ndim != 2:
        raise ValueError(f"expected {name} (H, W), got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"expected integer {name} (H, W), got dtype {arr.dtype}; pass argmax labels")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_COLORS):
        raise ValueError(
            f"{name} must lie in 0..{NUM_COLORS - 1} (0 = background), got range {arr.min()}..{arr.max()}"
        )
    return arr


def colorize(labels: Any) -> np.ndarray:
    """Map a part label map to RGB colours with the fixed :data:`PALETTE`.

    Args:
        labels: (H, W) integer array or tensor, values in 0..255; 0 = background (black).

    Returns:
        (H, W, 3) uint8 RGB image with ``out[i, j] == PALETTE[labels[i, j]]``.

    Raises:
        ValueError: if ``labels`` is not 2-D or holds values outside 0..255.
        TypeError: if ``labels`` is not an integer array.

    Example:
        >>> import numpy as np
        >>> colorize(np.array([[0, 1]]))[0].tolist()
        [[0, 0, 0], [230, 159, 0]]
    """
    arr = _check_labels(labels)
    return PALETTE[arr]  # (H, W, 3)


def palette_for_png() -> list[int]:
    """Return the palette as the flat list PIL's ``Image.putpalette`` takes for 'P'-mode PNGs.

    Returns:
        list of 768 ints ``[r0, g0, b0, r1, g1, b1, ...]`` in 0..255.

    Example:
        >>> flat = palette_for_png()
        >>> len(flat), flat[3:6]
        (768, [230, 159, 0])
    """
    return [int(v) for v in PALETTE.reshape(-1)]


def _default_font(size: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` px when Pillow >= 10.1 supports it, else the bitmap default."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font, no size argument
        return ImageFont.load_default()


def _text_size(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> tuple[int, int]:
    """Width and height in pixels of ``text`` drawn with ``font`` (height covers ascenders/descenders)."""
    left, _, right, _ = font.getbbox(text)
    _, top, _, bottom = font.getbbox("Hgy|")
    return int(right - left), int(bottom - min(top, 0))


def legend(
    num_parts: int,
    names: Sequence[str] | None = None,
    include_background: bool = True,
    swatch: int = 12,
    font_size: int = 12,
) -> np.ndarray:
    """Render a small legend: one row per label with its palette swatch and its name.

    Args:
        num_parts: K, the number of parts (labels 1..K), 1 <= K <= 255.
        names: optional K names for parts 1..K; default ``"part k"``.
        include_background: add a first row for label 0 ("background").
        swatch: side of each colour square in pixels.
        font_size: text size in pixels (ignored on Pillow < 10.1, which has one bitmap size).

    Returns:
        (h, w, 3) uint8 RGB image, white background, black text.

    Raises:
        ValueError: if ``num_parts`` is out of range or ``names`` has the wrong length.

    Example:
        >>> img = legend(4)
        >>> img.dtype, img.ndim, img.shape[2]
        (dtype('uint8'), 3, 3)
    """
    if not 1 <= num_parts < NUM_COLORS:
        raise ValueError(f"num_parts must be in 1..{NUM_COLORS - 1}, got {num_parts}")
    if names is not None and len(names) != num_parts:
        raise ValueError(f"names must have num_parts={num_parts} entries, got {len(names)}")
    part_names = list(names) if names is not None else [f"part {k}" for k in range(1, num_parts + 1)]
    rows = [(k, f"{k}: {part_names[k - 1]}") for k in range(1, num_parts + 1)]
    if include_background:
        rows.insert(0, (0, "0: background"))
    font = _default_font(font_size)
    pad = 3
    text_w = max(_text_size(text, font)[0] for _, text in rows)
    line_h = max(swatch, _text_size("Hg", font)[1]) + pad
    width = pad + swatch + pad + text_w + pad
    height = pad + line_h * len(rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row, (label, text) in enumerate(rows):
        y = pad + row * line_h
        color = tuple(int(v) for v in PALETTE[label])
        # Grey outline so black (background) and near-white swatches stay visible on white.
        draw.rectangle([pad, y, pad + swatch - 1, y + swatch - 1], fill=color, outline=(128, 128, 128))
        draw.text((pad + swatch + pad, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8).copy()
