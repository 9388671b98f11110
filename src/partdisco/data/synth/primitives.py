"""Synthetic scenes' building blocks: the random stream of a sample, paints, shapes, the scene record.

Everything is resolution independent (lengths are fractions of the image side); :mod:`.render` draws it.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

SPLIT_IDS = {"train": 0, "test": 1}
TEXTURES = ("flat", "gradient", "spots", "stripes", "checker", "grid", "waves")
# Smallest texture period in pixels (keeps the pattern resolvable and un-aliased at 64 px).
MIN_PERIOD_PX = {"spots": 3.5, "stripes": 3.0, "checker": 4.0, "grid": 4.0, "waves": 4.0, "gradient": 1.0}


def split_id(split: str) -> int:
    """The stream id of ``split`` (``train`` 0, ``test`` 1); ValueError naming the splits otherwise."""
    if split not in SPLIT_IDS:
        raise ValueError(f"synthetic data: unknown split {split!r}; choose from {sorted(SPLIT_IDS)}")
    return SPLIT_IDS[split]


@dataclass(frozen=True)
class Paint:
    """How a shape is coloured: two colours mixed by a texture pattern, then darkened towards the rim.

    Attributes:
        colour: base RGB in [0, 1].
        colour2: second RGB in [0, 1], shown where the pattern is 1.
        texture: ``flat``, ``gradient``, ``spots``, ``stripes``, ``checker``, ``grid`` or ``waves``.
        period: pattern period (for ``gradient``: half its length), fraction of the image side.
        angle: pattern orientation in radians.
        origin: (x, y) pattern origin (sets the phase), fraction of the image side.
        shade: rim darkening in [0, 1] (0 = none).
    """

    colour: tuple[float, float, float]
    colour2: tuple[float, float, float]
    texture: str
    period: float
    angle: float
    origin: tuple[float, float]
    shade: float

    def __post_init__(self) -> None:
        if self.texture not in TEXTURES:
            raise ValueError(f"synthetic data: unknown texture {self.texture!r}; choose from {TEXTURES}")
        if self.period <= 0:
            raise ValueError(f"synthetic data: texture period must be > 0, got {self.period}")


@dataclass(frozen=True)
class Shape:
    """One primitive in draw order.

    Attributes:
        kind: ``ellipse`` (cx, cy, rx, ry, angle), ``capsule`` (ax, ay, bx, by, ra, rb; a segment with a
            radius going linearly from ra to rb) or ``polygon`` (x0, y0, x1, y1, ...; convex).
        params: geometry, lengths as fractions of the image side.
        label: label written where the shape is on top: 0 background/occluder, 1..P a part, -1 paint only
            (keeps the labels underneath, e.g. eyes on the head).
        paint: its appearance.
    """

    kind: str
    params: tuple[float, ...]
    label: int
    paint: Paint

    def __post_init__(self) -> None:
        n = len(self.params)
        ok = {"ellipse": n == 5, "capsule": n == 6, "polygon": n >= 6 and n % 2 == 0}.get(self.kind)
        if ok is None:
            raise ValueError(f"synthetic data: unknown shape {self.kind!r}; choose ellipse|capsule|polygon")
        if not ok:
            raise ValueError(f"synthetic data: wrong number of parameters ({n}) for a {self.kind}")


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one sample at any size.

    Attributes:
        corners: RGB of the background's top-left, top-right, bottom-left, bottom-right corners.
        waves: background plane waves (kx, ky, phase, r, g, b): cycles per image side, radians, amplitude.
        shapes: primitives in draw order (distractors, creature back to front, occluder).
        keypoints: (x, y, part label) per keypoint, fractions of the image side.
        noise_sigma: standard deviation of the additive Gaussian pixel noise.
        noise_seed: seed of the pixel-noise stream.
    """

    corners: tuple[tuple[float, float, float], ...]
    waves: tuple[tuple[float, ...], ...]
    shapes: tuple[Shape, ...]
    keypoints: tuple[tuple[float, float, int], ...]
    noise_sigma: float
    noise_seed: int


def sample_generator(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one sample: depends only on ``(seed, split, index)``.

    Args:
        seed: data set seed (``DataConfig.synthetic_seed``), >= 0.
        split: ``train`` or ``test`` (disjoint streams).
        index: sample index, >= 0.

    Returns:
        A fresh ``numpy.random.Generator`` seeded with ``SeedSequence([seed, split_id, index])``.

    Example:
        >>> a = sample_generator(0, "train", 3).random()
        >>> b = sample_generator(0, "train", 3).random()
        >>> a == b
        True
    """
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(seed), split_id(split), int(index)]))
    )


class Draws:
    """Uniform draws taken from ``rng`` in blocks (scalar Generator calls cost about 1 us each)."""

    def __init__(self, rng: np.random.Generator, block: int = 256) -> None:
        self.rng = rng
        self.block = block
        self.values: list[float] = []
        self.pos = 0

    def random(self) -> float:
        """One uniform draw in [0, 1)."""
        if self.pos == len(self.values):
            self.values = self.rng.random(self.block).tolist()
            self.pos = 0
        self.pos += 1
        return self.values[self.pos - 1]

    def uniform(self, lo: float, hi: float) -> float:
        """One uniform draw in [lo, hi)."""
        return lo + (hi - lo) * self.random()

    def integers(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi)."""
        return min(lo + int(self.random() * (hi - lo)), hi - 1)

    def choice(self, items: tuple[str, ...]) -> str:
        """One of ``items``, uniformly."""
        return items[self.integers(0, len(items))]

    def angle(self, lo_deg: float, hi_deg: float) -> float:
        """An angle in radians, uniform between two angles given in degrees."""
        return math.radians(self.uniform(lo_deg, hi_deg))


Point = tuple[float, float]


def point_at(p: Point, length: float, angle: float) -> Point:
    """The point ``length`` away from ``p`` in direction ``angle``."""
    return (p[0] + length * math.cos(angle), p[1] + length * math.sin(angle))


def hsv_colour(h: float, s: float, v: float) -> tuple[float, float, float]:
    """RGB of a hue (wrapped) and a saturation and value (clipped to [0, 1])."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (r, g, b)


def shape_extent(kind: str, p: tuple[float, ...]) -> tuple[float, float, float, float]:
    """Axis-aligned bounds (x0, y0, x1, y1) of a shape, in the shape's units."""
    if kind == "ellipse":
        c, s = math.cos(p[4]), math.sin(p[4])
        hx = math.sqrt((p[2] * c) ** 2 + (p[3] * s) ** 2)
        hy = math.sqrt((p[2] * s) ** 2 + (p[3] * c) ** 2)
        return (p[0] - hx, p[1] - hy, p[0] + hx, p[1] + hy)
    if kind == "capsule":
        r = max(p[4], p[5])
        return (min(p[0], p[2]) - r, min(p[1], p[3]) - r, max(p[0], p[2]) + r, max(p[1], p[3]) + r)
    xs, ys = p[0::2], p[1::2]
    return (min(xs), min(ys), max(xs), max(ys))
