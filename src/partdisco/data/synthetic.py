"""Built-in procedural part-annotated data set: articulated "creatures" on cluttered backgrounds.

Zero downloads; the default data set for tests, the quick start and the acceptance run. Every sample is a
pure function of ``(seed, split, index)`` and is rendered at any square size S.

**The creature** is seen from above, built in a canonical frame (x forward, y towards its right side,
lengths in a body unit ``u``) and made of P semantic parts (labels 1..P, 0 = background). Each part has
its own shape, colour family (a hue interval) and texture family:

- 1 ``head``: disc + triangular beak (+ two painted eyes); red (hue 0.96-1.04); spots.
- 2 ``body``: ellipse; blue (hue 0.55-0.65); smooth linear gradient + strong rim shading.
- 3 ``wings``: two limbs of two tapered capsules (upper arm, forearm); green (hue 0.25-0.35); stripes.
- 4 ``tail``: two tapered capsules, half of them ending in a triangular fan; purple (hue 0.77-0.87);
  checker.
- 5 ``legs`` (only with ``num_parts=5``): two limbs (thigh, shin, foot ellipse); yellow (hue
  0.115-0.165); grid lines.

Per image the exact hue (within the family), saturation, brightness, the second texture shade (darker or
paler) and the texture's period, orientation and phase are random, so each part has a consistent identity
cue (colour family + texture family + shape) but no constant colour. Draw order, back to front: legs,
tail, wings, body, head.

**Articulation.** Neck, beak, shoulder, elbow, tail-root, tail-bend, hip and knee angles vary
independently per image (left and right limbs separately), as do all lengths and widths.

**Pose.** Full 360 degree rotation, a mirror flip (p = 0.5), a scale that makes the longer side of the
posed creature's box 60-95 % of S, and a translation that keeps the creature inside the image, except for
10 % of images where up to 15 % of its box may leave it. Because of the rotation, part identity is not
given by the position inside the object box: k-means on bbox-normalised (x, y) of the foreground pixels
of 200 images at 64 px scores an NMI against the true parts of about 0.005 with K = 4 clusters and
0.12-0.14 with K = 5 or 8 (one cluster then takes the box centre, where the body tends to be). Clustering
each image's coordinates separately scores about 0.55: parts are contiguous regions, which no data set can
avoid, so the position baseline must be fitted across images.

**Background.** A bilinear gradient between four desaturated colours plus two coloured plane waves, then
3-8 distractor shapes (ellipses, convex polygons, sticks) drawn behind the creature, each flat (any hue)
or patterned (a part texture or wavy stripes) with a hue from the gaps between the part colour families,
so no distractor has both a part's colour family and its texture family. With p = 0.15 a thin brown
"branch" is drawn in front of the creature: it occludes parts (label 0 there) and hides keypoints.
Finally Gaussian pixel noise (sigma in [0.005, 0.03]) is added.

**Keypoints** (named, in pixels of the returned image, "pixel i covers [i, i+1)"): ``beak_tip``,
``head_center``, ``body_center``, ``tail_base``, ``tail_tip``, ``left_wing_elbow``, ``right_wing_elbow``,
``left_wing_tip``, ``right_wing_tip`` (+ ``left_foot``, ``right_foot`` with legs). Each lies inside its
part; it is visible iff it falls inside the image and the rendered label of its pixel is its part (so a
keypoint under the branch, under another part or lost at a tiny size is invisible; invisible rows are
``(0, 0, 0)``). Left and right are the creature's own sides as seen from above in the image, so a
mirrored image swaps them (:attr:`SyntheticParts.flip_permutation`).

**Rendering** is anti-aliased analytically rather than by supersampling: every shape has a signed
distance function d (in pixels, evaluated at pixel centres) and covers a pixel by
``clip(0.5 - d, 0, 1)`` (a one-pixel box filter); textures are band-limited (sinusoids and smoothed
thresholds with transitions of about one pixel, periods of at least 3-4 pixels). Labels are the nearest
(centre-sample) rendering: a pixel takes the label of the topmost shape whose distance at the centre is
negative, i.e. the shape covering the majority of the pixel. Each shape is evaluated only inside its own
bounding box: about 700 samples/s at 64 px and 150 samples/s at 256 px on one core.

**Stress variants** (:class:`SceneOptions`, ``partdisco data synth --stress``; issue #21): ``small``
objects (the posed box's longer side 25-70 % of S instead of 60-95 %: the box covers 6-38 % of the frame
and the creature 2-12 %, 5th-95th percentiles, against 27-73 % and 8-24 % by default), ``salient``
distractors (1-4 saturated flat disks and rectangles per image, any hue, part hues included, each 8-24 %
of S across, drawn behind the creature with label 0) and ``clutter`` (a full-frame fine texture under
15-30 extra patterned background shapes). Their draws come from a second stream seeded from the sample's
stream after every default draw, so the default options give the built-in data set bit for bit, and a
variant keeps each sample's creature, pose and colours (only the scale differs with ``small``).

Resolution independence: the random draws do not depend on S, so the same ``(seed, split, index)`` gives
the same scene at every size (only the pixel noise field differs).

Example:
    >>> ds = SyntheticParts(4, image_size=64)
    >>> sample = ds[0]
    >>> tuple(sample["image"].shape), tuple(sample["parts"].shape), ds.part_names
    ((3, 64, 64), (64, 64), ['head', 'body', 'wings', 'tail'])
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from partdisco.config import MAX_IMAGE_SIZE, DataConfig
from partdisco.data.batch import PartsDataset

logger = logging.getLogger(__name__)

ALL_PART_NAMES = ("head", "body", "wings", "tail", "legs")
SUPPORTED_NUM_PARTS = (4, 5)
SPLIT_IDS = {"train": 0, "test": 1}
HEAD, BODY, WINGS, TAIL, LEGS = 1, 2, 3, 4, 5

# Colour family per part: (hue centre, half width) on the [0, 1) hue circle.
PART_HUES = {
    HEAD: (0.0, 0.04),
    BODY: (0.60, 0.05),
    WINGS: (0.30, 0.05),
    TAIL: (0.82, 0.05),
    LEGS: (0.14, 0.025),
}
# Texture family per part.
PART_TEXTURES = {HEAD: "spots", BODY: "gradient", WINGS: "stripes", TAIL: "checker", LEGS: "grid"}
# Hue intervals between the part families; distractors with a part texture take their hue from here.
GAP_HUES = ((0.05, 0.105), (0.175, 0.24), (0.36, 0.54), (0.66, 0.76), (0.88, 0.95))
# Smallest texture period in pixels (keeps the pattern resolvable and un-aliased at 64 px).
TEXTURES = ("flat", "gradient", "spots", "stripes", "checker", "grid", "waves")
MIN_PERIOD_PX = {"spots": 3.5, "stripes": 3.0, "checker": 4.0, "grid": 4.0, "waves": 4.0, "gradient": 1.0}

_BASE_KEYPOINTS = (
    ("beak_tip", HEAD),
    ("head_center", HEAD),
    ("body_center", BODY),
    ("tail_base", TAIL),
    ("tail_tip", TAIL),
    ("left_wing_elbow", WINGS),
    ("right_wing_elbow", WINGS),
    ("left_wing_tip", WINGS),
    ("right_wing_tip", WINGS),
)
_LEG_KEYPOINTS = (("left_foot", LEGS), ("right_foot", LEGS))


def part_names_for(num_parts: int) -> list[str]:
    """Names of the ground-truth labels 1..P.

    Args:
        num_parts: P, 4 or 5.

    Returns:
        P names, e.g. ``['head', 'body', 'wings', 'tail']``.

    Raises:
        ValueError: ``num_parts`` is not supported.

    Example:
        >>> part_names_for(5)
        ['head', 'body', 'wings', 'tail', 'legs']
    """
    _check_num_parts(num_parts)
    return list(ALL_PART_NAMES[:num_parts])


def keypoint_names_for(num_parts: int) -> list[str]:
    """Names of the N keypoints of creatures with ``num_parts`` parts (9 for P=4, 11 for P=5).

    Example:
        >>> keypoint_names_for(4)[:3]
        ['beak_tip', 'head_center', 'body_center']
    """
    _check_num_parts(num_parts)
    return [name for name, _ in _keypoint_specs(num_parts)]


def flip_permutation_for(num_parts: int) -> list[int]:
    """Keypoint permutation under a horizontal image flip: ``kp_flipped = kp[perm]`` swaps left/right.

    Example:
        >>> flip_permutation_for(4)
        [0, 1, 2, 3, 4, 6, 5, 8, 7]
    """
    names = keypoint_names_for(num_parts)
    index = {name: i for i, name in enumerate(names)}
    perm = []
    for name in names:
        if name.startswith("left_"):
            perm.append(index["right_" + name[len("left_") :]])
        elif name.startswith("right_"):
            perm.append(index["left_" + name[len("right_") :]])
        else:
            perm.append(index[name])
    return perm


def _keypoint_specs(num_parts: int) -> tuple[tuple[str, int], ...]:
    return _BASE_KEYPOINTS + (_LEG_KEYPOINTS if num_parts >= 5 else ())


def _check_num_parts(num_parts: int) -> None:
    if num_parts not in SUPPORTED_NUM_PARTS:
        raise ValueError(f"synthetic data: num_parts must be one of {SUPPORTED_NUM_PARTS}, got {num_parts!r}")


def _split_id(split: str) -> int:
    if split not in SPLIT_IDS:
        raise ValueError(f"synthetic data: unknown split {split!r}; choose from {sorted(SPLIT_IDS)}")
    return SPLIT_IDS[split]


# --------------------------------------------------------------------------------------------------
# Scene description (sampling, resolution independent; lengths are fractions of the image side)


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
        np.random.PCG64(np.random.SeedSequence([int(seed), _split_id(split), int(index)]))
    )


class _Draws:
    """Uniform draws taken from ``rng`` in blocks (scalar Generator calls cost about 1 us each)."""

    def __init__(self, rng: np.random.Generator, block: int = 256) -> None:
        self.rng = rng
        self.block = block
        self.values: list[float] = []
        self.pos = 0

    def random(self) -> float:
        if self.pos == len(self.values):
            self.values = self.rng.random(self.block).tolist()
            self.pos = 0
        self.pos += 1
        return self.values[self.pos - 1]

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def integers(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi)."""
        return min(lo + int(self.random() * (hi - lo)), hi - 1)

    def choice(self, items: tuple[str, ...]) -> str:
        return items[self.integers(0, len(items))]

    def angle(self, lo_deg: float, hi_deg: float) -> float:
        """An angle in radians, uniform between two angles given in degrees."""
        return math.radians(self.uniform(lo_deg, hi_deg))


Point = tuple[float, float]


def _at(p: Point, length: float, angle: float) -> Point:
    """The point ``length`` away from ``p`` in direction ``angle``."""
    return (p[0] + length * math.cos(angle), p[1] + length * math.sin(angle))


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (r, g, b)


def _part_paint(draw: _Draws, label: int, unit: float) -> Paint:
    """Random appearance of one part within its colour and texture family."""
    centre, half = PART_HUES[label]
    hue = centre + draw.uniform(-half, half)
    sat = draw.uniform(0.55, 0.95)
    val = draw.uniform(0.55, 0.95)
    jitter = draw.uniform(-0.015, 0.015)
    if draw.random() < 0.5:  # darker pattern
        second = _hsv(hue + jitter, sat * draw.uniform(0.8, 1.0), val * draw.uniform(0.3, 0.55))
    else:  # lighter, paler pattern
        second = _hsv(hue + jitter, sat * draw.uniform(0.3, 0.55), min(1.0, val + 0.35))
    texture = PART_TEXTURES[label]
    period_range = {
        "spots": (0.3, 0.45),
        "gradient": (0.9, 1.3),
        "stripes": (0.3, 0.5),
        "checker": (0.45, 0.65),
        "grid": (0.3, 0.45),
    }[texture]
    shade = draw.uniform(0.3, 0.5) if label == BODY else draw.uniform(0.0, 0.15)
    return Paint(
        colour=_hsv(hue, sat, val),
        colour2=second,
        texture=texture,
        period=draw.uniform(*period_range) * unit,
        angle=draw.uniform(0.0, math.pi),
        origin=(draw.random(), draw.random()),
        shade=shade,
    )


_RawShape = tuple[str, list[float], int]  # kind, canonical params, label (-1 = paint only)


def _creature_parts(draw: _Draws, num_parts: int) -> tuple[list[_RawShape], dict[str, tuple[Point, int]]]:
    """Canonical creature (x forward, y to its right, body half-length about 1): shapes back to front.

    Returns:
        shapes: (kind, canonical params, label) in draw order; label -1 paints without labelling (eyes).
        keypoints: name -> (canonical point, label); sided names use the canonical side (left = y < 0).
    """
    shapes: list[_RawShape] = []
    kps: dict[str, tuple[Point, int]] = {}
    rx, ry = draw.uniform(0.85, 1.15), draw.uniform(0.45, 0.62)

    def capsule(a: Point, b: Point, ra: float, rb: float, label: int) -> None:
        shapes.append(("capsule", [a[0], a[1], b[0], b[1], ra, rb], label))

    # Legs (bottom layer): hip -> knee -> foot, sideways-backwards.
    if num_parts >= 5:
        for side, sign in (("left", -1.0), ("right", 1.0)):
            hip = (draw.uniform(-0.65, -0.3) * rx, sign * 0.7 * ry)
            thigh_dir = sign * draw.angle(95, 150)
            knee = _at(hip, draw.uniform(0.45, 0.65), thigh_dir)
            shin_dir = thigh_dir + sign * draw.angle(-70, 30)
            foot = _at(knee, draw.uniform(0.4, 0.6), shin_dir)
            capsule(hip, knee, 0.17, 0.14, LEGS)
            capsule(knee, foot, 0.14, 0.12, LEGS)
            shapes.append(("ellipse", [foot[0], foot[1], 0.22, 0.15, shin_dir], LEGS))
            kps[f"{side}_foot"] = (foot, LEGS)

    # Tail: root -> bend -> tip, half of them ending in a fan.
    root = (-0.8 * rx, 0.0)
    dir1 = math.pi + draw.angle(-35, 35)
    len1, len2 = draw.uniform(0.7, 1.0), draw.uniform(0.6, 1.0)
    bend = _at(root, len1, dir1)
    dir2 = dir1 + draw.angle(-55, 55)
    tip = _at(bend, len2, dir2)
    r_root = draw.uniform(0.26, 0.34)
    capsule(root, bend, r_root, 0.75 * r_root, TAIL)
    capsule(bend, tip, 0.75 * r_root, draw.uniform(0.12, 0.16), TAIL)
    if draw.random() < 0.5:
        spread = draw.uniform(0.25, 0.4)
        apex = _at(bend, 0.5 * len2, dir2)
        end = _at(tip, draw.uniform(0.25, 0.4), dir2)
        side_a, side_b = _at(end, spread, dir2 + math.pi / 2), _at(end, spread, dir2 - math.pi / 2)
        shapes.append(("polygon", [*apex, *side_a, *side_b], TAIL))
    kps["tail_base"] = (_at(root, 0.2 * rx + 0.15, dir1), TAIL)  # just outside the body rim
    kps["tail_tip"] = (_at(bend, 0.8 * len2, dir2), TAIL)

    # Wings: shoulder -> elbow -> tip, bending backwards.
    for side, sign in (("left", -1.0), ("right", 1.0)):
        shoulder = (draw.uniform(0.0, 0.35) * rx, sign * 0.5 * ry)
        upper_dir = sign * draw.angle(55, 130)
        elbow = _at(shoulder, draw.uniform(0.7, 1.0), upper_dir)
        fore_dir = upper_dir + sign * draw.angle(-25, 80)
        fore_len = draw.uniform(0.75, 1.1)
        wing_tip = _at(elbow, fore_len, fore_dir)
        r_root = draw.uniform(0.26, 0.34)
        capsule(shoulder, elbow, r_root, 0.85 * r_root, WINGS)
        capsule(elbow, wing_tip, 0.85 * r_root, draw.uniform(0.12, 0.16), WINGS)
        kps[f"{side}_wing_elbow"] = (elbow, WINGS)
        kps[f"{side}_wing_tip"] = (_at(elbow, 0.8 * fore_len, fore_dir), WINGS)

    # Body.
    shapes.append(("ellipse", [0.0, 0.0, rx, ry, 0.0], BODY))
    kps["body_center"] = ((0.0, 0.0), BODY)

    # Head with a beak and two painted eyes (top layer).
    head_r = draw.uniform(0.42, 0.55)
    neck_dir = draw.angle(-40, 40)
    head = _at((0.8 * rx, 0.0), 0.55 * head_r + 0.1, neck_dir)
    beak_dir = neck_dir + draw.angle(-25, 25)
    beak_len = draw.uniform(0.3, 0.5)
    base = _at(head, 0.55 * head_r, beak_dir)
    beak_tip = _at(head, head_r + beak_len, beak_dir)
    corner_a, corner_b = (
        _at(base, 0.5 * head_r, beak_dir + math.pi / 2),
        _at(base, 0.5 * head_r, beak_dir - math.pi / 2),
    )
    shapes.append(("polygon", [*beak_tip, *corner_a, *corner_b], HEAD))
    shapes.append(("ellipse", [head[0], head[1], head_r, head_r * draw.uniform(0.85, 1.0), beak_dir], HEAD))
    for sign in (-1.0, 1.0):
        eye = _at(head, 0.5 * head_r, beak_dir + sign * math.radians(50))
        shapes.append(("ellipse", [eye[0], eye[1], 0.14 * head_r, 0.14 * head_r, 0.0], -1))
    kps["beak_tip"] = (_at(head, head_r + 0.3 * beak_len, beak_dir), HEAD)
    kps["head_center"] = (head, HEAD)
    return shapes, kps


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


def _shape_extent(kind: str, p: tuple[float, ...]) -> tuple[float, float, float, float]:
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


_DISTRACTOR_TEXTURES = ("flat", "flat", "flat", "waves", "gradient", "spots", "stripes", "checker", "grid")


def _distractor(draw: _Draws) -> Shape:
    """A background shape; a patterned one takes a hue from :data:`GAP_HUES`."""
    texture = draw.choice(_DISTRACTOR_TEXTURES)
    if texture == "flat":
        hue = draw.random()
    else:  # a pattern: never in a part's colour family
        lo, hi = GAP_HUES[draw.integers(0, len(GAP_HUES))]
        hue = draw.uniform(lo, hi)
    sat, val = draw.uniform(0.15, 0.7), draw.uniform(0.3, 0.9)
    second = _hsv(hue + draw.uniform(-0.05, 0.05), sat * draw.uniform(0.3, 1.0), val * draw.uniform(0.4, 1.3))
    size = draw.uniform(0.04, 0.2)
    paint = Paint(
        colour=_hsv(hue, sat, val),
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
        a, b = _at(centre, -half, direction), _at(centre, half, direction)
        params = (*a, *b, size * draw.uniform(0.1, 0.3), size * draw.uniform(0.1, 0.3))
    else:  # convex polygon: vertices at increasing angles around the centre, radius 0.7-1.3 size
        n = draw.integers(3, 7)
        angles = sorted(draw.uniform(0.0, 2 * math.pi) for _ in range(n))
        params = tuple(v for a in angles for v in _at(centre, size * draw.uniform(0.7, 1.3), a))
        params = tuple(v for p in _convex_hull(params) for v in p)
    return Shape(kind, params, 0, paint)


def _branch(draw: _Draws) -> Shape:
    """A thin brown stick drawn in front of the creature (label 0: it occludes parts and keypoints)."""
    a = (draw.random(), draw.random())
    b = _at(a, draw.uniform(0.6, 1.2), draw.uniform(0.0, 2 * math.pi))
    width = draw.uniform(0.012, 0.025)
    colour = _hsv(draw.uniform(0.05, 0.11), draw.uniform(0.3, 0.6), draw.uniform(0.2, 0.45))
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


def _salient_distractor(draw: _Draws) -> Shape:
    """A saturated flat disk or rectangle of any hue (label 0): bright, but not part of the object."""
    colour = _hsv(draw.random(), draw.uniform(0.8, 1.0), draw.uniform(0.8, 1.0))
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


def _clutter(draw: _Draws) -> list[Shape]:
    """A full-frame fine texture (hue from the gaps between part families) and 15-30 patterned shapes."""
    lo, hi = GAP_HUES[draw.integers(0, len(GAP_HUES))]
    hue = draw.uniform(lo, hi)
    sat, val = draw.uniform(0.2, 0.6), draw.uniform(0.35, 0.8)
    paint = Paint(
        colour=_hsv(hue, sat, val),
        colour2=_hsv(
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
        >>> scene = sample_scene(sample_generator(0, "train", 0))
        >>> len(scene.keypoints)
        9
    """
    _check_num_parts(num_parts)
    options = options or SceneOptions()
    draw = _Draws(rng)
    # Background.
    corners = tuple(_hsv(draw.random(), draw.uniform(0.05, 0.35), draw.uniform(0.25, 0.9)) for _ in range(4))
    waves = []
    for _ in range(2):
        freq, direction = draw.uniform(1.0, 4.0), draw.uniform(0.0, 2 * math.pi)
        amp = tuple(draw.uniform(-0.08, 0.08) for _ in range(3))
        waves.append(
            (freq * math.cos(direction), freq * math.sin(direction), draw.uniform(0, 2 * math.pi), *amp)
        )
    shapes = [_distractor(draw) for _ in range(draw.integers(3, 9))]

    # Creature in canonical units, posed with a shift chosen from its extent.
    # Creature in canonical units; the scale is set by the size of its posed box, the shift keeps it in.
    angle, flip = draw.uniform(0.0, 2 * math.pi), draw.random() < 0.5
    raw_shapes, raw_kps = _creature_parts(draw, num_parts)
    canonical = _Pose(angle, flip, unit=1.0, shift=(0.0, 0.0))
    extents = [_shape_extent(kind, canonical.shape(kind, params)) for kind, params, _ in raw_shapes]
    lo = (min(e[0] for e in extents), min(e[1] for e in extents))
    hi = (max(e[2] for e in extents), max(e[3] for e in extents))
    # longer box side: 60-95 % of S by default (one draw whatever the range, so the stream stays in step)
    unit = draw.uniform(*options.object_scale) / max(hi[0] - lo[0], hi[1] - lo[1])
    truncate = draw.random() < 0.1
    shift = []
    for d in range(2):  # keep the creature inside [0, 1], or up to 15 % of it outside when truncating
        slack = 0.15 * (hi[d] - lo[d]) * unit if truncate else 0.0
        t_min, t_max = -lo[d] * unit - slack, 1.0 - hi[d] * unit + slack
        shift.append(draw.uniform(t_min, t_max) if t_min < t_max else 0.5 * (t_min + t_max))
    pose = _Pose(angle, flip, unit=unit, shift=(shift[0], shift[1]))
    paints = {label: _part_paint(draw, label, unit) for label in range(1, num_parts + 1)}
    eye_colour = _hsv(draw.random(), draw.uniform(0.0, 0.3), draw.uniform(0.02, 0.15))
    paints[-1] = Paint(eye_colour, eye_colour, "flat", 1.0, 0.0, (0.0, 0.0), 0.0)
    background_end = len(shapes)
    shapes += [
        Shape(kind, pose.shape(kind, params), label, paints[label]) for kind, params, label in raw_shapes
    ]
    if draw.random() < 0.15:
        shapes.append(_branch(draw))

    keypoints = []
    for name, label in _keypoint_specs(num_parts):
        source = name
        if pose.flip and name.startswith(
            ("left_", "right_")
        ):  # a mirrored creature's canonical left is its right
            source = ("right_" + name[5:]) if name.startswith("left_") else ("left_" + name[6:])
        keypoints.append((*pose.point(*raw_kps[source][0]), label))
    noise_sigma = draw.uniform(0.005, 0.03)
    noise_seed = int(rng.integers(0, 2**63 - 1))
    if options.clutter or options.salient[1] > 0:
        # a second stream, seeded after every default draw: the default scene stays bit for bit the same
        extra = _Draws(np.random.Generator(np.random.PCG64(int(rng.integers(0, 2**63 - 1)))))
        under = _clutter(extra) if options.clutter else []
        lo_n, hi_n = options.salient
        salient = [_salient_distractor(extra) for _ in range(extra.integers(lo_n, hi_n + 1))]
        shapes = under + shapes[:background_end] + salient + shapes[background_end:]
    return Scene(
        corners=corners,
        waves=tuple(waves),
        shapes=tuple(shapes),
        keypoints=tuple(keypoints),
        noise_sigma=noise_sigma,
        noise_seed=noise_seed,
    )


# --------------------------------------------------------------------------------------------------
# Rendering (deterministic, vectorised numpy)


def _signed_distance(
    kind: str, p: list[float], xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Signed distance (pixels, < 0 inside) and squared normalised radius (0 centre, 1 rim) on a crop.

    Args:
        kind: shape kind.
        p: geometry in pixels (angles in radians).
        xs: (1, w) float32 pixel-centre x.
        ys: (h, 1) float32 pixel-centre y.

    Returns:
        sd (h, w) float32, and radial (h, w) float32 in [0, inf) or None for polygons (no shading).
    """
    if kind == "ellipse":
        c, s = math.cos(p[4]), math.sin(p[4])
        dx, dy = xs - p[0], ys - p[1]
        ax = (dx * c + dy * s) * (1.0 / p[2])  # (h, w) local coordinates in radii
        ay = (dy * c - dx * s) * (1.0 / p[3])
        radial = ax * ax + ay * ay
        k0 = np.sqrt(radial)
        bx, by = ax * (1.0 / p[2]), ay * (1.0 / p[3])
        k1 = np.sqrt(bx * bx + by * by)
        # Distance estimate k0 (k0 - 1) / k1, exact on the rim; k1 = 0 only at the centre.
        sd = k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)
        return sd, radial
    if kind == "capsule":
        bax, bay = p[2] - p[0], p[3] - p[1]
        dx, dy = xs - p[0], ys - p[1]
        inv_len2 = 1.0 / max(bax * bax + bay * bay, 1e-9)
        t = (dx * (bax * inv_len2) + dy * (bay * inv_len2)).clip(0.0, 1.0)  # (h, w) projection on the axis
        ex, ey = dx - t * bax, dy - t * bay
        dist = np.sqrt(ex * ex + ey * ey)
        radius = p[4] + t * (p[5] - p[4])
        return dist - radius, np.square(dist / radius)
    vx, vy = p[0::2], p[1::2]
    n = len(vx)
    area2 = sum(vx[i] * vy[(i + 1) % n] - vx[(i + 1) % n] * vy[i] for i in range(n))
    orient = 1.0 if area2 >= 0 else -1.0  # the outward normal's side depends on the winding
    sd = None
    for i in range(n):
        ex, ey = vx[(i + 1) % n] - vx[i], vy[(i + 1) % n] - vy[i]
        norm = orient / max(math.hypot(ex, ey), 1e-9)
        d = (xs - vx[i]) * (ey * norm) + (ys - vy[i]) * (-ex * norm)  # distance to the edge's line
        sd = d if sd is None else np.maximum(sd, d)
    if sd is None:
        raise ValueError("synthetic data: a polygon needs at least one vertex")
    return sd, None


def _pattern(paint: Paint, xs: np.ndarray, ys: np.ndarray, size: int) -> np.ndarray | None:
    """Texture mix weight in [0, 1] on a crop ((h, w) float32), or None for a flat paint."""
    if paint.texture == "flat":
        return None
    period = max(paint.period * size, MIN_PERIOD_PX[paint.texture])  # pixels
    c, s = math.cos(paint.angle) / period, math.sin(paint.angle) / period
    dx, dy = xs - paint.origin[0] * size, ys - paint.origin[1] * size
    u = dx * c + dy * s  # (h, w) pattern coordinates in periods
    v = dy * c - dx * s
    px = 1.0 / period  # one pixel in periods
    gain = min(max(period / (2 * math.pi), 0.5), 6.0)  # sinusoid transitions about one pixel wide
    tau = 2 * math.pi
    if paint.texture == "gradient":
        t = 0.5 + 0.5 * u
    elif paint.texture == "stripes":
        t = 0.5 + gain * np.sin(tau * u)
    elif paint.texture == "waves":
        t = 0.5 + gain * np.sin(tau * u + 1.9 * np.sin(math.pi * v))
    elif paint.texture == "checker":
        t = 0.5 + (1.5 * gain) * (np.sin(tau * u) * np.sin(tau * v))
    elif paint.texture == "spots":  # hexagonal lattice of discs of radius 0.3 period
        row = np.floor(v)
        du = (u + 0.5 * row) % 1.0 - 0.5
        dv = v - row - 0.5
        t = (0.3 - np.sqrt(du * du + dv * dv)) * (1.0 / px) + 0.5
    elif paint.texture == "grid":  # lines of half-width 0.1 period
        fu = np.abs((u + 0.5) % 1.0 - 0.5)
        fv = np.abs((v + 0.5) % 1.0 - 0.5)
        t = (0.1 - np.minimum(fu, fv)) * (1.0 / px) + 0.5
    else:
        raise ValueError(f"synthetic data: unknown texture {paint.texture!r}")
    return t.clip(0.0, 1.0)


def _draw(canvas: np.ndarray, labels: np.ndarray, shape: Shape, size: int) -> None:
    """Composite one anti-aliased shape onto ``canvas`` (S, S, 3) and write its label into ``labels``."""
    p = [v * size for v in shape.params]
    if shape.kind == "ellipse":
        p[4] = shape.params[4]  # the angle is not a length
    x0, y0, x1, y1 = _shape_extent(shape.kind, tuple(p))
    ix0, iy0 = max(math.floor(x0 - 1.0), 0), max(math.floor(y0 - 1.0), 0)
    ix1, iy1 = min(math.ceil(x1 + 1.0), size), min(math.ceil(y1 + 1.0), size)
    if ix0 >= ix1 or iy0 >= iy1:
        return
    xs = np.arange(ix0 + 0.5, ix1, dtype=np.float32)[None, :]  # (1, w) pixel centres
    ys = np.arange(iy0 + 0.5, iy1, dtype=np.float32)[:, None]  # (h, 1)
    sd, radial = _signed_distance(shape.kind, p, xs, ys)  # (h, w)
    alpha = (0.5 - sd).clip(0.0, 1.0)[..., None]  # (h, w, 1) pixel coverage
    if shape.label >= 0:
        labels[iy0:iy1, ix0:ix1][sd < 0] = shape.label
    paint = shape.paint
    base = np.array(paint.colour, dtype=np.float32)
    weight = _pattern(paint, xs, ys, size)
    if weight is None:
        colour = base
    else:
        colour = base + weight[..., None] * (np.array(paint.colour2, dtype=np.float32) - base)  # (h, w, 3)
    if paint.shade > 0 and radial is not None:
        colour = colour * (1.0 - paint.shade * np.minimum(radial, 1.0))[..., None]
    region = canvas[iy0:iy1, ix0:ix1]
    region += alpha * (colour - region)


def _background(scene: Scene, size: int) -> np.ndarray:
    """(S, S, 3) float32 bilinear corner gradient plus plane waves."""
    t = np.arange(0.5, size, dtype=np.float32) / size
    tl, tr, bl, br = (np.array(c, dtype=np.float32) for c in scene.corners)
    top = tl + t[:, None] * (tr - tl)  # (S, 3) along x
    bottom = bl + t[:, None] * (br - bl)
    canvas = top[None] + t[:, None, None] * (bottom - top)[None]  # (S, S, 3), indexed [y, x]
    tau = 2 * math.pi
    for kx, ky, phase, r, g, b in scene.waves:
        wave = np.cos((tau * kx) * t[None, :] + ((tau * ky) * t[:, None] + phase))  # (S, S)
        canvas += wave[..., None] * np.array([r, g, b], dtype=np.float32)
    return canvas


def render_scene(scene: Scene, image_size: int) -> dict[str, np.ndarray]:
    """Render a scene at S x S pixels.

    Args:
        scene: from :func:`sample_scene`.
        image_size: S, >= 8.

    Returns:
        Numpy arrays: ``image`` float32 (3, S, S) in [0, 1] RGB; ``parts`` int64 (S, S) labels 0..P;
        ``fg_mask`` float32 (1, S, S) equal to ``parts > 0``; ``keypoints`` float32 (N, 3) (x, y, visible)
        in pixels, invisible rows (0, 0, 0); ``bbox`` float32 (4,) (x0, y0, x1, y1) in pixels enclosing
        the foreground pixels (pixel i covers [i, i+1)), the whole image if there is none.

    Example:
        >>> out = render_scene(sample_scene(sample_generator(0, "test", 1)), 32)
        >>> out["image"].shape, out["keypoints"].shape
        ((3, 32, 32), (9, 3))
    """
    if image_size < 8:
        raise ValueError(f"synthetic data: image_size must be >= 8 pixels, got {image_size}")
    size = int(image_size)
    canvas = _background(scene, size)
    labels = np.zeros((size, size), dtype=np.int64)
    for shape in scene.shapes:
        _draw(canvas, labels, shape, size)
    if scene.noise_sigma > 0:
        noise = np.random.Generator(np.random.PCG64(scene.noise_seed)).standard_normal(
            (size, size, 3), dtype=np.float32
        )
        canvas += scene.noise_sigma * noise
    np.clip(canvas, 0.0, 1.0, out=canvas)
    image = np.ascontiguousarray(canvas.transpose(2, 0, 1))  # (3, S, S)

    keypoints = np.zeros((len(scene.keypoints), 3), dtype=np.float32)
    for k, (fx, fy, label) in enumerate(scene.keypoints):
        x, y = fx * size, fy * size
        ix, iy = math.floor(x), math.floor(y)
        if 0 <= ix < size and 0 <= iy < size and labels[iy, ix] == label:
            keypoints[k] = (x, y, 1.0)

    fg = labels > 0
    cols, rows = np.flatnonzero(fg.any(axis=0)), np.flatnonzero(fg.any(axis=1))
    if cols.size:
        bbox = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)
    else:
        bbox = np.array([0, 0, size, size], dtype=np.float32)
    return {
        "image": image,
        "parts": labels,
        "fg_mask": fg[None].astype(np.float32),
        "keypoints": keypoints,
        "bbox": bbox,
    }


def generate_sample(
    seed: int,
    split: str,
    index: int,
    image_size: int,
    num_parts: int = 4,
    options: SceneOptions | None = None,
) -> dict[str, np.ndarray]:
    """Sample ``index`` of a split as numpy arrays (see :func:`render_scene` for the keys).

    Args:
        seed: data set seed.
        split: ``train`` or ``test``.
        index: sample index, >= 0.
        image_size: S.
        num_parts: P, 4 or 5.
        options: stress variants (:class:`SceneOptions`); None = the built-in data set.

    Returns:
        The arrays of :func:`render_scene`; a pure function of the arguments.

    Example:
        >>> a = generate_sample(0, "train", 5, 32)
        >>> b = generate_sample(0, "train", 5, 32)
        >>> bool((a["image"] == b["image"]).all())
        True
    """
    if index < 0:
        raise ValueError(f"synthetic data: index must be >= 0, got {index}")
    return render_scene(sample_scene(sample_generator(seed, split, index), num_parts, options), image_size)


def sample_name(split: str, index: int) -> str:
    """File name of a sample, e.g. ``synth_train_000123.png`` (also its ``name`` in the data set)."""
    _split_id(split)
    return f"synth_{split}_{index:06d}.png"


# --------------------------------------------------------------------------------------------------
# Dataset


class SyntheticParts(PartsDataset):
    """The procedural creatures as a map-style data set (the ``synthetic`` entry of ``build_dataset``).

    Args:
        n: number of samples.
        image_size: S, >= 16.
        split: ``train`` or ``test``; the two use disjoint random streams.
        seed: data set seed; sample i depends only on (seed, split, i).
        num_parts: P, 4 or 5.
        cache: keep rendered samples in memory (about 24 S^2 bytes each).
        options: stress variants (:class:`SceneOptions`); None = the built-in data set.

    Each item is the dict of ``docs/ARCHITECTURE.md``: ``image`` float32 (3, S, S) in [0, 1], ``fg_mask``
    float32 (1, S, S), ``parts`` int64 (S, S) in 0..P, ``keypoints`` float32 (N, 3), ``bbox`` float32 (4,),
    ``class_id`` int64 () = 0, ``index`` int64 (), ``name`` str.

    Example:
        >>> ds = SyntheticParts(2, image_size=32, split="test", seed=1)
        >>> len(ds), ds.keypoint_names[0], ds.flip_permutation[5]
        (2, 'beak_tip', 6)
    """

    has_masks = True

    def __init__(
        self,
        n: int,
        image_size: int,
        split: str = "train",
        seed: int = 0,
        num_parts: int = 4,
        cache: bool = False,
        options: SceneOptions | None = None,
    ) -> None:
        if int(n) < 0:
            raise ValueError(f"synthetic data: n must be >= 0, got {n}")
        if int(image_size) < 16:
            raise ValueError(f"synthetic data: image_size must be >= 16 pixels, got {image_size}")
        _split_id(split)
        _check_num_parts(num_parts)
        super().__init__()
        self.n = int(n)
        self.image_size = int(image_size)
        self.split = split
        self.seed = int(seed)
        self.num_parts = int(num_parts)
        self.part_names: list[str] = part_names_for(num_parts)
        self.keypoint_names: list[str] = keypoint_names_for(num_parts)
        self.flip_permutation: list[int] = flip_permutation_for(num_parts)
        self.options = options or SceneOptions()
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """Numpy arrays of sample ``index`` (cached if the data set caches)."""
        if not 0 <= index < self.n:
            raise IndexError(f"synthetic data: index {index} out of range for {self.n} samples")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        out = generate_sample(self.seed, self.split, index, self.image_size, self.num_parts, self.options)
        if self._cache is not None:
            self._cache[index] = out
        return out

    def whole_image(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index`` as :func:`write_folder` saves it: uint8 (S, S, 3) RGB and bool (S, S) mask.

        The samples are whole images already; this is what ``partdisco segment`` would read from the files
        (:func:`partdisco.engine.evaluate_full.whole_image_fg_iou` scores these).
        """
        arrays = self.arrays(index)
        rgb = np.round(arrays["image"].transpose(1, 2, 0) * 255.0).astype(np.uint8)
        return rgb, arrays["fg_mask"][0] > 0.5

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        # the training sampler passes (index, epoch): a scene does not depend on the epoch
        index = int(item[0] if isinstance(item, tuple) else item)
        if index < 0:
            index += self.n
        arrays = self.arrays(index)
        copy = self._cache is not None  # never hand out views of cached arrays
        sample: dict[str, Any] = {
            key: torch.from_numpy(arrays[key].copy() if copy else arrays[key])
            for key in ("image", "fg_mask", "parts", "keypoints", "bbox")
        }
        sample["class_id"] = torch.tensor(0, dtype=torch.int64)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        sample["name"] = sample_name(self.split, index)
        return sample


def build(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> SyntheticParts:
    """Build the synthetic split from the data config.

    Args:
        cfg: uses ``synthetic_train`` / ``synthetic_test`` (sizes), ``synthetic_seed`` and ``image_size``;
            ``synthetic_parts`` (P) if the config has it, else 4.
        split: ``train`` or ``test``.
        train: unused: the scenes already carry random flips, rotations and scales, and a sample must not
            depend on how it is loaded.
        seed: unused: the scenes come from ``data.synthetic_seed``, so that every run sees the same images.

    Returns:
        The data set.

    Raises:
        ValueError: an unknown split (named in the message).

    Example:
        >>> len(build(DataConfig(synthetic_test=7), "test", train=False))
        7
    """
    del train, seed
    if split not in SPLIT_IDS:
        raise ValueError(f"synthetic data: unknown split {split!r}; choose from {sorted(SPLIT_IDS)}")
    n = cfg.synthetic_train if split == "train" else cfg.synthetic_test
    num_parts = int(cfg.synthetic_parts)
    return SyntheticParts(n, cfg.image_size, split=split, seed=cfg.synthetic_seed, num_parts=num_parts)


def write_folder(
    out: str | Path,
    n: int,
    image_size: int = 128,
    seed: int = 0,
    test_fraction: float = 0.1,
    progress: bool = True,
    num_parts: int = 4,
    options: SceneOptions | None = None,
) -> dict[str, int]:
    """Write ``n`` samples in the generic folder layout (for the folder loader and for inspection).

    Layout: ``out/images/NAME`` (RGB PNG), ``out/masks/NAME`` (uint8 0/255), ``out/parts/NAME`` (uint8
    labels 0..P), ``out/keypoints.json`` (``{"names": [...], "keypoints": {NAME: [[x, y, visible], ...]}}``,
    pixels), ``out/train.txt`` / ``out/test.txt`` (one NAME per line), ``out/part_names.json`` (P names of
    labels 1..P). The first ``n - round(n * test_fraction)`` images are train samples 0.. of
    ``SyntheticParts(split="train")``, the rest test samples 0.. of the test split, so every file equals
    the data set sample of the same name (up to 8-bit quantisation of the image). When all images come
    from one split (``test_fraction`` 0 or 1), no list is written, so the folder loader puts every image
    in both splits (an empty ``train.txt`` would leave nothing to train on).

    Args:
        out: folder to create or fill.
        n: total number of images, >= 1.
        image_size: S.
        seed: data set seed.
        test_fraction: share of test images in [0, 1].
        progress: show a tqdm bar.
        num_parts: P, 4 or 5.
        options: stress variants (:class:`SceneOptions`); None = the built-in data set. Non-default
            options are recorded in ``out/synthetic.json``.

    Returns:
        Counts ``{"train": ..., "test": ..., "images": n}``.

    Example:
        >>> import tempfile
        >>> write_folder(tempfile.mkdtemp(), 3, image_size=32, test_fraction=0.34, progress=False)
        {'train': 2, 'test': 1, 'images': 3}
    """
    if n < 1:
        raise ValueError(f"write_folder: n must be >= 1, got {n}")
    if not 16 <= image_size <= MAX_IMAGE_SIZE:  # (100000 asked for a 112 GiB canvas)
        raise ValueError(f"write_folder: image_size (--size) must be 16..{MAX_IMAGE_SIZE}, got {image_size}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"write_folder: test_fraction must be in [0, 1], got {test_fraction}")
    root = Path(out)
    # Never overwrite a data set (its keypoints and split lists would silently stop matching its images), nor
    # mix generated files into a folder of other files: only a new or empty folder is written.
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        names = ("images", "masks", "parts", "keypoints.json", "part_names.json", "train.txt", "test.txt")
        existing = [name for name in names if (root / name).exists()]
        what = f"a data set ({', '.join(existing)})" if existing else "not an empty folder"
        raise FileExistsError(
            f"{root} already exists and is {what}; data synth writes only into a new folder"
        )
    for sub in ("images", "masks", "parts"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    n_test = int(round(n * test_fraction))
    counts = {"train": n - n_test, "test": n_test}
    datasets = {
        split: SyntheticParts(count, image_size, split=split, seed=seed, num_parts=num_parts, options=options)
        for split, count in counts.items()
    }
    jobs = [(split, i) for split, count in counts.items() for i in range(count)]
    keypoints: dict[str, list[list[float]]] = {}
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for split, i in tqdm(jobs, desc=f"writing {root}", disable=not progress, unit="img"):
        arrays = datasets[split].arrays(i)
        name = sample_name(split, i)
        rgb = np.round(arrays["image"].transpose(1, 2, 0) * 255.0).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / name)
        Image.fromarray((arrays["fg_mask"][0] > 0.5).astype(np.uint8) * 255).save(root / "masks" / name)
        Image.fromarray(arrays["parts"].astype(np.uint8)).save(root / "parts" / name)
        keypoints[name] = [[float(x), float(y), float(v)] for x, y, v in arrays["keypoints"]]
        lists[split].append(name)
    names = keypoint_names_for(num_parts)
    (root / "keypoints.json").write_text(json.dumps({"names": names, "keypoints": keypoints}))
    (root / "part_names.json").write_text(json.dumps(part_names_for(num_parts)))
    if options is not None and not options.is_default:
        record = {"seed": seed, "image_size": image_size, "num_parts": num_parts, **asdict(options)}
        (root / "synthetic.json").write_text(json.dumps(record, indent=1) + "\n")
    if all(lists.values()):  # one split only: no lists, so the folder loader uses every image in both
        for split, items in lists.items():
            (root / f"{split}.txt").write_text("".join(f"{item}\n" for item in items))
    logger.info(
        "wrote %d synthetic images (%d train, %d test) to %s", n, counts["train"], counts["test"], root
    )
    return {"train": counts["train"], "test": counts["test"], "images": n}
