"""Rendering a synthetic scene (deterministic, vectorised numpy) and one sample end to end.

Anti-aliased analytically: every shape has a signed distance function d (pixels, at pixel centres) and
covers a pixel by ``clip(0.5 - d, 0, 1)``; textures are band-limited. Labels are the centre-sample
rendering. :func:`generate_sample` is ``(seed, split, index)`` -> arrays.
"""

from __future__ import annotations

import math

import numpy as np

from partdisco.data.synth.primitives import MIN_PERIOD_PX, Paint, Scene, Shape, sample_generator, shape_extent
from partdisco.data.synth.scene import SceneOptions, sample_scene


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
    x0, y0, x1, y1 = shape_extent(shape.kind, tuple(p))
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
