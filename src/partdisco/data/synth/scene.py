"""Sampling one synthetic scene: background, distractors, the posed creature, keypoints, stress variants.

:func:`sample_scene` turns a sample's random stream into a :class:`~.primitives.Scene`; :class:`SceneOptions`
and :func:`stress_options` are the stress variants of ``partdisco data synth --stress`` (issue #21).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from partdisco.data.synth.creature import (
    GAP_HUES,
    RawShape,
    check_num_parts,
    creature_parts,
    keypoint_specs,
    part_paint,
)
from partdisco.data.synth.primitives import (
    Draws,
    Paint,
    Point,
    Scene,
    Shape,
    hsv_colour,
    point_at,
    shape_extent,
)


class _Pose:
    """Canonical -> image fractions: mirror y (flip), rotate, scale by the unit, then translate."""

    def __init__(self, angle: float, flip: bool, unit: float, shift: Point) -> None:
        self.cos, self.sin = math.cos(angle) * unit, math.sin(angle) * unit
        self.angle, self.flip, self.unit, self.shift = angle, flip, unit, shift

    def point(self, x: float, y: float) -> Point:
        if self.flip:
            y = -y
        return (self.cos * x - self.sin * y + self.shift[0], self.sin * x + self.cos * y + self.shift[1])

    def shape(self, kind: str, p: list[float]) -> tuple[float, ...]:
        if kind == "ellipse":
            theta = (-p[4] if self.flip else p[4]) + self.angle
            return (*self.point(p[0], p[1]), p[2] * self.unit, p[3] * self.unit, theta)
        if kind == "capsule":
            return (*self.point(p[0], p[1]), *self.point(p[2], p[3]), p[4] * self.unit, p[5] * self.unit)
        out: list[float] = []
        for i in range(0, len(p), 2):
            out.extend(self.point(p[i], p[i + 1]))
        return tuple(out)


_DISTRACTOR_TEXTURES = ("flat", "flat", "flat", "waves", "gradient", "spots", "stripes", "checker", "grid")


def _distractor(draw: Draws) -> Shape:
    """A background shape; a patterned one takes a hue from :data:`GAP_HUES`."""
    texture = draw.choice(_DISTRACTOR_TEXTURES)
    if texture == "flat":
        hue = draw.random()
    else:  # a pattern: never in a part's colour family
        lo, hi = GAP_HUES[draw.integers(0, len(GAP_HUES))]
        hue = draw.uniform(lo, hi)
    sat, val = draw.uniform(0.15, 0.7), draw.uniform(0.3, 0.9)
    second = hsv_colour(
        hue + draw.uniform(-0.05, 0.05), sat * draw.uniform(0.3, 1.0), val * draw.uniform(0.4, 1.3)
    )
    size = draw.uniform(0.04, 0.2)
    paint = Paint(
        colour=hsv_colour(hue, sat, val),
        colour2=second,
        texture=texture,
        period=size * draw.uniform(0.25, 0.6),
        angle=draw.uniform(0.0, math.pi),
        origin=(draw.random(), draw.random()),
        shade=draw.uniform(0.0, 0.3),
    )
    centre = (draw.uniform(-0.05, 1.05), draw.uniform(-0.05, 1.05))
    kind = draw.choice(("ellipse", "polygon", "capsule"))
    if kind == "ellipse":
        params: tuple[float, ...] = (*centre, size, size * draw.uniform(0.3, 1.0), draw.uniform(0.0, math.pi))
    elif kind == "capsule":
        direction, half = draw.uniform(0.0, 2 * math.pi), size * draw.uniform(0.8, 2.0)
        a, b = point_at(centre, -half, direction), point_at(centre, half, direction)
        params = (*a, *b, size * draw.uniform(0.1, 0.3), size * draw.uniform(0.1, 0.3))
    else:  # convex polygon: vertices at increasing angles around the centre, radius 0.7-1.3 size
        n = draw.integers(3, 7)
        angles = sorted(draw.uniform(0.0, 2 * math.pi) for _ in range(n))
        params = tuple(v for a in angles for v in point_at(centre, size * draw.uniform(0.7, 1.3), a))
        params = tuple(v for p in _convex_hull(params) for v in p)
    return Shape(kind, params, 0, paint)


def _branch(draw: Draws) -> Shape:
    """A thin brown stick drawn in front of the creature (label 0: it occludes parts and keypoints)."""
    a = (draw.random(), draw.random())
    b = point_at(a, draw.uniform(0.6, 1.2), draw.uniform(0.0, 2 * math.pi))
    width = draw.uniform(0.012, 0.025)
    colour = hsv_colour(draw.uniform(0.05, 0.11), draw.uniform(0.3, 0.6), draw.uniform(0.2, 0.45))
    paint = Paint(colour, colour, "flat", 1.0, 0.0, (0.0, 0.0), draw.uniform(0.2, 0.4))
    return Shape("capsule", (*a, *b, width, width * draw.uniform(0.6, 1.0)), 0, paint)


def _convex_hull(flat: tuple[float, ...]) -> list[Point]:
    """Convex hull (monotone chain) of points given as (x0, y0, x1, y1, ...)."""
    order = sorted(zip(flat[0::2], flat[1::2]))

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[Point] = []
    for p in order:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[Point] = []
    for p in reversed(order):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


@dataclass(frozen=True)
class SceneOptions:
    """How scenes are drawn; the defaults are the built-in data set (stress variants of issue #21).

    Attributes:
        object_scale: (lo, hi) range of the posed creature box's longer side, as a fraction of S.
        salient: (lo, hi) inclusive range of the number of salient distractors per image: saturated flat
            disks and rectangles of any hue (part hues included), behind the creature, label 0.
        clutter: a full-frame fine texture plus 15-30 extra patterned shapes in the background.

    Example:
        >>> SceneOptions() == stress_options([])
        True
        >>> stress_options(["small", "salient"]).object_scale
        (0.25, 0.7)
    """

    object_scale: tuple[float, float] = (0.6, 0.95)
    salient: tuple[int, int] = (0, 0)
    clutter: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.object_scale
        if not 0.0 < lo <= hi <= 2.0:
            raise ValueError(
                f"synthetic data: object_scale must satisfy 0 < lo <= hi <= 2, got {self.object_scale}"
            )
        if not 0 <= self.salient[0] <= self.salient[1]:
            raise ValueError(f"synthetic data: salient must be a range 0 <= lo <= hi, got {self.salient}")

    @property
    def is_default(self) -> bool:
        """True when the scenes are the built-in data set's."""
        return self == SceneOptions()


# The named stress variants of ``partdisco data synth --stress``.
STRESS_PRESETS: dict[str, dict[str, Any]] = {
    "small": {"object_scale": (0.25, 0.7)},  # the box covers about 5-40 % of the frame
    "salient": {"salient": (1, 4)},
    "clutter": {"clutter": True},
}


def stress_options(
    names: list[str] | tuple[str, ...], object_scale: tuple[float, float] | None = None
) -> SceneOptions:
    """Scene options combining named stress variants (``small``, ``salient``, ``clutter``, ``all``).

    Args:
        names: variant names; empty = the built-in data set.
        object_scale: overrides the creature's scale range (see :class:`SceneOptions`).

    Returns:
        The options.

    Raises:
        ValueError: an unknown name (the message lists the known ones).

    Example:
        >>> stress_options(["all"]).clutter
        True
    """
    fields: dict[str, Any] = {}
    for name in names:
        if name == "all":
            for preset in STRESS_PRESETS.values():
                fields.update(preset)
        elif name in STRESS_PRESETS:
            fields.update(STRESS_PRESETS[name])
        else:
            raise ValueError(
                f"synthetic data: unknown stress variant {name!r}; choose from {[*STRESS_PRESETS, 'all']}"
            )
    if object_scale is not None:
        fields["object_scale"] = (float(object_scale[0]), float(object_scale[1]))
    return SceneOptions(**fields)


def _salient_distractor(draw: Draws) -> Shape:
    """A saturated flat disk or rectangle of any hue (label 0): bright, but not part of the object."""
    colour = hsv_colour(draw.random(), draw.uniform(0.8, 1.0), draw.uniform(0.8, 1.0))
    paint = Paint(colour, colour, "flat", 1.0, 0.0, (0.0, 0.0), draw.uniform(0.0, 0.15))
    centre = (draw.uniform(0.05, 0.95), draw.uniform(0.05, 0.95))
    if draw.random() < 0.5:
        radius = draw.uniform(0.04, 0.12)
        return Shape("ellipse", (*centre, radius, radius, 0.0), 0, paint)
    half_w, half_h, angle = draw.uniform(0.04, 0.12), draw.uniform(0.04, 0.12), draw.uniform(0.0, math.pi)
    corners = []
    for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        x, y = sx * half_w, sy * half_h
        corners += [
            centre[0] + x * math.cos(angle) - y * math.sin(angle),
            centre[1] + x * math.sin(angle) + y * math.cos(angle),
        ]
    return Shape("polygon", tuple(corners), 0, paint)


def _clutter(draw: Draws) -> list[Shape]:
    """A full-frame fine texture (hue from the gaps between part families) and 15-30 patterned shapes."""
    lo, hi = GAP_HUES[draw.integers(0, len(GAP_HUES))]
    hue = draw.uniform(lo, hi)
    sat, val = draw.uniform(0.2, 0.6), draw.uniform(0.35, 0.8)
    paint = Paint(
        colour=hsv_colour(hue, sat, val),
        colour2=hsv_colour(
            hue + draw.uniform(-0.05, 0.05), sat * draw.uniform(0.3, 1.0), val * draw.uniform(0.4, 0.8)
        ),
        texture=draw.choice(("waves", "stripes", "checker", "grid", "spots")),
        period=draw.uniform(0.03, 0.08),
        angle=draw.uniform(0.0, math.pi),
        origin=(draw.random(), draw.random()),
        shade=0.0,
    )
    shapes = [Shape("polygon", (-0.01, -0.01, 1.01, -0.01, 1.01, 1.01, -0.01, 1.01), 0, paint)]
    shapes += [_distractor(draw) for _ in range(draw.integers(15, 31))]
    return shapes


def sample_scene(rng: np.random.Generator, num_parts: int = 4, options: SceneOptions | None = None) -> Scene:
    """Draw one random scene (creature pose, articulation, appearance, background).

    Args:
        rng: the sample's stream, e.g. from :func:`sample_generator`.
        num_parts: P, 4 or 5.
        options: stress variants (:class:`SceneOptions`); None = the built-in data set.

    Returns:
        A :class:`Scene`; lengths are fractions of the image side, so it renders at any size.

    Example:
        >>> from partdisco.data.synth.primitives import sample_generator
        >>> scene = sample_scene(sample_generator(0, "train", 0))
        >>> len(scene.keypoints)
        9
    """
    check_num_parts(num_parts)
    options = options or SceneOptions()
    draw = Draws(rng)
    corners, waves, shapes = _background(draw)
    # Creature in canonical units; the scale is set by the size of its posed box, the shift keeps it in.
    angle, flip = draw.uniform(0.0, 2 * math.pi), draw.random() < 0.5
    raw_shapes, raw_kps = creature_parts(draw, num_parts)
    pose = _fit_pose(draw, raw_shapes, angle, flip, options.object_scale)
    paints = {label: part_paint(draw, label, pose.unit) for label in range(1, num_parts + 1)}
    eye_colour = hsv_colour(draw.random(), draw.uniform(0.0, 0.3), draw.uniform(0.02, 0.15))
    paints[-1] = Paint(eye_colour, eye_colour, "flat", 1.0, 0.0, (0.0, 0.0), 0.0)
    background_end = len(shapes)
    shapes += [
        Shape(kind, pose.shape(kind, params), label, paints[label]) for kind, params, label in raw_shapes
    ]
    if draw.random() < 0.15:
        shapes.append(_branch(draw))
    keypoints = [
        (*pose.point(*raw_kps[source][0]), label) for source, label in _posed_keypoints(pose, num_parts)
    ]
    noise_sigma = draw.uniform(0.005, 0.03)
    noise_seed = int(rng.integers(0, 2**63 - 1))
    if options.clutter or options.salient[1] > 0:
        shapes = _with_stress_shapes(rng, options, shapes, background_end)
    return Scene(
        corners=corners,
        waves=tuple(waves),
        shapes=tuple(shapes),
        keypoints=tuple(keypoints),
        noise_sigma=noise_sigma,
        noise_seed=noise_seed,
    )


def _background(
    draw: Draws,
) -> tuple[tuple[tuple[float, float, float], ...], list[tuple[float, ...]], list[Shape]]:
    """The background: four corner colours, two plane waves and 3-8 distractor shapes."""
    corners = tuple(
        hsv_colour(draw.random(), draw.uniform(0.05, 0.35), draw.uniform(0.25, 0.9)) for _ in range(4)
    )
    waves = []
    for _ in range(2):
        freq, direction = draw.uniform(1.0, 4.0), draw.uniform(0.0, 2 * math.pi)
        amp = tuple(draw.uniform(-0.08, 0.08) for _ in range(3))
        waves.append(
            (freq * math.cos(direction), freq * math.sin(direction), draw.uniform(0, 2 * math.pi), *amp)
        )
    shapes = [_distractor(draw) for _ in range(draw.integers(3, 9))]
    return corners, waves, shapes


def _fit_pose(
    draw: Draws, raw_shapes: list[RawShape], angle: float, flip: bool, object_scale: tuple[float, float]
) -> _Pose:
    """The pose that scales the creature's posed box to ``object_scale`` of S and shifts it into the image."""
    canonical = _Pose(angle, flip, unit=1.0, shift=(0.0, 0.0))
    extents = [shape_extent(kind, canonical.shape(kind, params)) for kind, params, _ in raw_shapes]
    lo = (min(e[0] for e in extents), min(e[1] for e in extents))
    hi = (max(e[2] for e in extents), max(e[3] for e in extents))
    # longer box side: 60-95 % of S by default (one draw whatever the range, so the stream stays in step)
    unit = draw.uniform(*object_scale) / max(hi[0] - lo[0], hi[1] - lo[1])
    truncate = draw.random() < 0.1
    shift = []
    for d in range(2):  # keep the creature inside [0, 1], or up to 15 % of it outside when truncating
        slack = 0.15 * (hi[d] - lo[d]) * unit if truncate else 0.0
        t_min, t_max = -lo[d] * unit - slack, 1.0 - hi[d] * unit + slack
        shift.append(draw.uniform(t_min, t_max) if t_min < t_max else 0.5 * (t_min + t_max))
    return _Pose(angle, flip, unit=unit, shift=(shift[0], shift[1]))


def _posed_keypoints(pose: _Pose, num_parts: int) -> list[tuple[str, int]]:
    """``(canonical keypoint name, label)`` per keypoint: a mirrored creature swaps left and right."""
    out = []
    for name, label in keypoint_specs(num_parts):
        source = name
        if pose.flip and name.startswith(("left_", "right_")):
            source = ("right_" + name[5:]) if name.startswith("left_") else ("left_" + name[6:])
        out.append((source, label))
    return out


def _with_stress_shapes(
    rng: np.random.Generator, options: SceneOptions, shapes: list[Shape], background_end: int
) -> list[Shape]:
    """Clutter under the background and salient distractors between it and the creature.

    Their draws come from a second stream, seeded after every default draw: the default scene stays bit
    for bit the same.
    """
    extra = Draws(np.random.Generator(np.random.PCG64(int(rng.integers(0, 2**63 - 1)))))
    under = _clutter(extra) if options.clutter else []
    lo_n, hi_n = options.salient
    salient = [_salient_distractor(extra) for _ in range(extra.integers(lo_n, hi_n + 1))]
    return under + shapes[:background_end] + salient + shapes[background_end:]
