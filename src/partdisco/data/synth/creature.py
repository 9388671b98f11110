"""The synthetic creature: its parts, keypoints and colours, and its shapes in a canonical frame.

The creature is seen from above, built in a canonical frame (x forward, y towards its right side, lengths in
a body unit) and made of P semantic parts (labels 1..P, 0 = background), each with its own shape, colour
family (:data:`PART_HUES`) and texture family (:data:`PART_TEXTURES`); :func:`creature_parts` draws its
articulated shapes back to front. The data set's documentation is :mod:`partdisco.data.synthetic`.
"""

from __future__ import annotations

import math

from partdisco.data.synth.primitives import Draws, Paint, Point, hsv_colour, point_at

ALL_PART_NAMES = ("head", "body", "wings", "tail", "legs")
SUPPORTED_NUM_PARTS = (4, 5)
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
    check_num_parts(num_parts)
    return list(ALL_PART_NAMES[:num_parts])


def keypoint_names_for(num_parts: int) -> list[str]:
    """Names of the N keypoints of creatures with ``num_parts`` parts (9 for P=4, 11 for P=5).

    Example:
        >>> keypoint_names_for(4)[:3]
        ['beak_tip', 'head_center', 'body_center']
    """
    check_num_parts(num_parts)
    return [name for name, _ in keypoint_specs(num_parts)]


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


def keypoint_specs(num_parts: int) -> tuple[tuple[str, int], ...]:
    """``(name, part label)`` of each keypoint of a creature with ``num_parts`` parts."""
    return _BASE_KEYPOINTS + (_LEG_KEYPOINTS if num_parts >= 5 else ())


def check_num_parts(num_parts: int) -> None:
    """ValueError unless ``num_parts`` is one of :data:`SUPPORTED_NUM_PARTS`."""
    if num_parts not in SUPPORTED_NUM_PARTS:
        raise ValueError(f"synthetic data: num_parts must be one of {SUPPORTED_NUM_PARTS}, got {num_parts!r}")


def part_paint(draw: Draws, label: int, unit: float) -> Paint:
    """Random appearance of one part within its colour and texture family."""
    centre, half = PART_HUES[label]
    hue = centre + draw.uniform(-half, half)
    sat = draw.uniform(0.55, 0.95)
    val = draw.uniform(0.55, 0.95)
    jitter = draw.uniform(-0.015, 0.015)
    if draw.random() < 0.5:  # darker pattern
        second = hsv_colour(hue + jitter, sat * draw.uniform(0.8, 1.0), val * draw.uniform(0.3, 0.55))
    else:  # lighter, paler pattern
        second = hsv_colour(hue + jitter, sat * draw.uniform(0.3, 0.55), min(1.0, val + 0.35))
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
        colour=hsv_colour(hue, sat, val),
        colour2=second,
        texture=texture,
        period=draw.uniform(*period_range) * unit,
        angle=draw.uniform(0.0, math.pi),
        origin=(draw.random(), draw.random()),
        shade=shade,
    )


RawShape = tuple[str, list[float], int]  # kind, canonical params, label (-1 = paint only)


def creature_parts(draw: Draws, num_parts: int) -> tuple[list[RawShape], dict[str, tuple[Point, int]]]:
    """Canonical creature (x forward, y to its right, body half-length about 1): shapes back to front.

    The parts are drawn in this order, which is also the order of the random draws: legs (with five parts),
    tail, wings, body, head.

    Returns:
        shapes: (kind, canonical params, label) in draw order; label -1 paints without labelling (eyes).
        keypoints: name -> (canonical point, label); sided names use the canonical side (left = y < 0).
    """
    shapes: list[RawShape] = []
    kps: dict[str, tuple[Point, int]] = {}
    rx, ry = draw.uniform(0.85, 1.15), draw.uniform(0.45, 0.62)
    if num_parts >= 5:
        _legs(draw, rx, ry, shapes, kps)
    _tail(draw, rx, shapes, kps)
    _wings(draw, rx, ry, shapes, kps)
    shapes.append(("ellipse", [0.0, 0.0, rx, ry, 0.0], BODY))
    kps["body_center"] = ((0.0, 0.0), BODY)
    _head(draw, rx, shapes, kps)
    return shapes, kps


def _capsule(shapes: list[RawShape], a: Point, b: Point, ra: float, rb: float, label: int) -> None:
    shapes.append(("capsule", [a[0], a[1], b[0], b[1], ra, rb], label))


def _legs(
    draw: Draws, rx: float, ry: float, shapes: list[RawShape], kps: dict[str, tuple[Point, int]]
) -> None:
    """Legs (bottom layer): hip -> knee -> foot, sideways-backwards."""
    for side, sign in (("left", -1.0), ("right", 1.0)):
        hip = (draw.uniform(-0.65, -0.3) * rx, sign * 0.7 * ry)
        thigh_dir = sign * draw.angle(95, 150)
        knee = point_at(hip, draw.uniform(0.45, 0.65), thigh_dir)
        shin_dir = thigh_dir + sign * draw.angle(-70, 30)
        foot = point_at(knee, draw.uniform(0.4, 0.6), shin_dir)
        _capsule(shapes, hip, knee, 0.17, 0.14, LEGS)
        _capsule(shapes, knee, foot, 0.14, 0.12, LEGS)
        shapes.append(("ellipse", [foot[0], foot[1], 0.22, 0.15, shin_dir], LEGS))
        kps[f"{side}_foot"] = (foot, LEGS)


def _tail(draw: Draws, rx: float, shapes: list[RawShape], kps: dict[str, tuple[Point, int]]) -> None:
    """Tail: root -> bend -> tip, half of them ending in a fan."""
    root = (-0.8 * rx, 0.0)
    dir1 = math.pi + draw.angle(-35, 35)
    len1, len2 = draw.uniform(0.7, 1.0), draw.uniform(0.6, 1.0)
    bend = point_at(root, len1, dir1)
    dir2 = dir1 + draw.angle(-55, 55)
    tip = point_at(bend, len2, dir2)
    r_root = draw.uniform(0.26, 0.34)
    _capsule(shapes, root, bend, r_root, 0.75 * r_root, TAIL)
    _capsule(shapes, bend, tip, 0.75 * r_root, draw.uniform(0.12, 0.16), TAIL)
    if draw.random() < 0.5:
        spread = draw.uniform(0.25, 0.4)
        apex = point_at(bend, 0.5 * len2, dir2)
        end = point_at(tip, draw.uniform(0.25, 0.4), dir2)
        side_a, side_b = point_at(end, spread, dir2 + math.pi / 2), point_at(end, spread, dir2 - math.pi / 2)
        shapes.append(("polygon", [*apex, *side_a, *side_b], TAIL))
    kps["tail_base"] = (point_at(root, 0.2 * rx + 0.15, dir1), TAIL)  # just outside the body rim
    kps["tail_tip"] = (point_at(bend, 0.8 * len2, dir2), TAIL)


def _wings(
    draw: Draws, rx: float, ry: float, shapes: list[RawShape], kps: dict[str, tuple[Point, int]]
) -> None:
    """Wings: shoulder -> elbow -> tip, bending backwards."""
    for side, sign in (("left", -1.0), ("right", 1.0)):
        shoulder = (draw.uniform(0.0, 0.35) * rx, sign * 0.5 * ry)
        upper_dir = sign * draw.angle(55, 130)
        elbow = point_at(shoulder, draw.uniform(0.7, 1.0), upper_dir)
        fore_dir = upper_dir + sign * draw.angle(-25, 80)
        fore_len = draw.uniform(0.75, 1.1)
        wing_tip = point_at(elbow, fore_len, fore_dir)
        r_root = draw.uniform(0.26, 0.34)
        _capsule(shapes, shoulder, elbow, r_root, 0.85 * r_root, WINGS)
        _capsule(shapes, elbow, wing_tip, 0.85 * r_root, draw.uniform(0.12, 0.16), WINGS)
        kps[f"{side}_wing_elbow"] = (elbow, WINGS)
        kps[f"{side}_wing_tip"] = (point_at(elbow, 0.8 * fore_len, fore_dir), WINGS)


def _head(draw: Draws, rx: float, shapes: list[RawShape], kps: dict[str, tuple[Point, int]]) -> None:
    """Head with a beak and two painted eyes (top layer)."""
    head_r = draw.uniform(0.42, 0.55)
    neck_dir = draw.angle(-40, 40)
    head = point_at((0.8 * rx, 0.0), 0.55 * head_r + 0.1, neck_dir)
    beak_dir = neck_dir + draw.angle(-25, 25)
    beak_len = draw.uniform(0.3, 0.5)
    base = point_at(head, 0.55 * head_r, beak_dir)
    beak_tip = point_at(head, head_r + beak_len, beak_dir)
    corner_a, corner_b = (
        point_at(base, 0.5 * head_r, beak_dir + math.pi / 2),
        point_at(base, 0.5 * head_r, beak_dir - math.pi / 2),
    )
    shapes.append(("polygon", [*beak_tip, *corner_a, *corner_b], HEAD))
    shapes.append(("ellipse", [head[0], head[1], head_r, head_r * draw.uniform(0.85, 1.0), beak_dir], HEAD))
    for sign in (-1.0, 1.0):
        eye = point_at(head, 0.5 * head_r, beak_dir + sign * math.radians(50))
        shapes.append(("ellipse", [eye[0], eye[1], 0.14 * head_r, 0.14 * head_r, 0.0], -1))
    kps["beak_tip"] = (point_at(head, head_r + 0.3 * beak_len, beak_dir), HEAD)
    kps["head_center"] = (head, HEAD)
