"""Colour maths on batches: sRGB -> CIE-Lab (the only copy), RGB <-> HSV, and replayable colour jitter.

All functions take (B, 3, H, W) RGB in [0, 1] and run in float32 regardless of autocast.
The jitter reproduces the reference's ``ColorJitter(0.3, 0.3, 0.2, 0.2)`` with p = 0.8 followed by
``RandomGrayscale(p=0.2)`` (lit_dataset.py:66-72), but on the device and for the whole batch at once, with
the four adjustments in a fixed order (brightness, contrast, saturation, hue) instead of torchvision's
random order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_SRGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)  # sRGB (D65) -> XYZ, the matrix of skimage.color.rgb2lab (and OpenCV)


@dataclass(frozen=True)
class LabConstants:
    """The constants of one sRGB -> CIE-Lab convention (the formula is the same for all).

    ``f(t) = t ** (1/3)`` for ``t > epsilon``, else ``linear_slope * t / linear_divisor + linear_offset``;
    ``L = 116 f(Y) - 16`` (or ``dark_lightness_slope * Y`` for ``Y <= epsilon`` when that is set),
    ``a = 500 (f(X) - f(Y))``, ``b = 200 (f(Y) - f(Z))``, with X, Y, Z divided by ``white``.
    The slope is a fraction so that each convention's float32 arithmetic (a product for skimage, a quotient
    for the exact CIE slope), and so its bits, are reproduced exactly; a factor of 1 is skipped.
    """

    white: tuple[float, float, float]
    epsilon: float
    linear_slope: float
    linear_offset: float
    linear_divisor: float = 1.0
    dark_lightness_slope: float | None = None
    rgb_to_xyz: tuple[tuple[float, float, float], ...] = _SRGB_TO_XYZ


LAB_SKIMAGE = LabConstants(
    white=(0.95047, 1.0, 1.08883), epsilon=0.008856, linear_slope=7.787, linear_offset=16.0 / 116.0,
    dark_lightness_slope=903.3,
)  # fmt: skip
"""skimage's rounded constants (ref: lit_dataset.py:26-31 uses ``skimage.color.rgb2lab`` for the colour loss).
sRGB white comes out as (100, -0.0024, 0.0046), as in skimage. Used by the colour loss and the palette."""

LAB_CIE = LabConstants(
    white=(0.950456, 1.0, 1.088754), epsilon=(6.0 / 29.0) ** 3, linear_slope=1.0, linear_offset=4.0 / 29.0,
    linear_divisor=3.0 * (6.0 / 29.0) ** 2,
)  # fmt: skip
"""The white point of the matrix itself (its row sums, as OpenCV), so sRGB white is exactly a = b = 0, and the
exact CIE 1976 constants. Used only by the texture feature bank (``models/perceptual.py``): it is not on the
reference's path, and keeping its constants keeps its features, and every result measured with them,
bit-equal."""

_GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision rgb_to_grayscale


def _check_rgb(x: Tensor, name: str = "image") -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected {name} of shape (B, 3, H, W), got {tuple(x.shape)}")


def rgb_to_lab(rgb: Tensor, constants: LabConstants = LAB_SKIMAGE) -> Tensor:
    """Convert sRGB in [0, 1] to CIE-Lab (D65), by default exactly as ``skimage.color.rgb2lab``.

    The only sRGB -> Lab conversion of the package: the colour loss, the texture feature bank and the palette
    all call it, each with its named :class:`LabConstants`.

    Args:
        rgb: (B, 3, H, W) in [0, 1] (values outside are clamped).
        constants: the convention; :data:`LAB_SKIMAGE` (the reference's) unless a caller needs another.

    Returns:
        (B, 3, H, W) float32 with L in [0, 100] and a, b roughly in [-110, 110].

    Example:
        >>> [round(v, 4) for v in rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten().tolist()]  # skimage's white
        [100.0, -0.0024, 0.0046]
        >>> [round(v, 4) for v in rgb_to_lab(torch.ones(1, 3, 1, 1), LAB_CIE).flatten().tolist()]
        [100.0, 0.0, 0.0]
    """
    _check_rgb(rgb, "rgb")
    c = constants
    with torch.autocast(device_type=rgb.device.type, enabled=False):
        x = rgb.float().clamp(0.0, 1.0)
        linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055).pow(2.4), x / 12.92)
        matrix = torch.tensor(c.rgb_to_xyz, dtype=x.dtype, device=x.device)
        xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)  # (B, 3, H, W)
        xyz = xyz / torch.tensor(c.white, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        # the slope is applied as each convention writes it (a product or a quotient), for exact bits
        linear_part = xyz if c.linear_slope == 1.0 else c.linear_slope * xyz
        if c.linear_divisor != 1.0:
            linear_part = linear_part / c.linear_divisor
        # clamp: the cube root's gradient would be inf at 0 in the branch that where() discards
        f = torch.where(
            xyz > c.epsilon, xyz.clamp_min(c.epsilon).pow(1.0 / 3.0), linear_part + c.linear_offset
        )
        lightness = 116.0 * f[:, 1] - 16.0
        if c.dark_lightness_slope is not None:
            lightness = torch.where(xyz[:, 1] > c.epsilon, lightness, c.dark_lightness_slope * xyz[:, 1])
        a = 500.0 * (f[:, 0] - f[:, 1])
        b = 200.0 * (f[:, 1] - f[:, 2])
        return torch.stack([lightness, a, b], dim=1)  # (B, 3, H, W)


def rgb_to_grayscale(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with ITU-R 601 weights."""
    r, g, b = rgb.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def rgb_to_hsv(rgb: Tensor, eps: float = 1e-8) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with all channels in [0, 1]."""
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    sat = delta / (maxc + eps)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, sat, maxc], dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i.unsqueeze(1)).squeeze(1)
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i.unsqueeze(1)).squeeze(1)
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i.unsqueeze(1)).squeeze(1)
    return torch.stack([r, g, b], dim=1)


@dataclass
class JitterParams:
    """Per-sample colour jitter factors (B,) each; ``apply`` / ``gray`` are booleans."""

    apply: Tensor
    brightness: Tensor
    contrast: Tensor
    saturation: Tensor
    hue: Tensor
    gray: Tensor

    def select(self, index: Tensor) -> JitterParams:
        """The draws at ``index`` (a 1-D int64 tensor)."""
        return JitterParams(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    def to(self, device: torch.device | str) -> JitterParams:
        """Move every tensor to ``device``."""
        return JitterParams(
            *(getattr(self, f).to(device, non_blocking=True) for f in self.__dataclass_fields__)
        )


def sample_jitter_params(
    batch_size: int,
    generator: torch.Generator | None = None,
    *,
    prob: float = 0.8,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.2,
    hue: float = 0.2,
    grayscale_prob: float = 0.2,
) -> JitterParams:
    """Draw colour-jitter parameters (torchvision ColorJitter ranges).

    Args:
        batch_size: B.
        generator: torch.Generator for replayable draws.
        prob: probability that a sample is jittered at all.
        brightness: factor drawn from U(1 - b, 1 + b).
        contrast: factor drawn from U(1 - c, 1 + c).
        saturation: factor drawn from U(1 - s, 1 + s).
        hue: shift drawn from U(-h, h) (fraction of the hue circle, h <= 0.5).
        grayscale_prob: probability of converting to grayscale afterwards.

    Returns:
        JitterParams on the generator's device.
    """
    if generator is None:
        generator = torch.Generator()
    device = generator.device

    def uniform(low: float, high: float) -> Tensor:
        return torch.rand(batch_size, generator=generator, device=device) * (high - low) + low

    apply = torch.rand(batch_size, generator=generator, device=device) < prob
    params = JitterParams(
        apply=apply,
        brightness=uniform(max(0.0, 1 - brightness), 1 + brightness),
        contrast=uniform(max(0.0, 1 - contrast), 1 + contrast),
        saturation=uniform(max(0.0, 1 - saturation), 1 + saturation),
        hue=uniform(-hue, hue),
        gray=torch.rand(batch_size, generator=generator, device=device) < grayscale_prob,
    )
    return params


def apply_color_jitter(rgb: Tensor, params: JitterParams) -> Tensor:
    """Apply jitter to a batch (deterministic given params).

    Args:
        rgb: (B, 3, H, W) in [0, 1].
        params: B draws from :func:`sample_jitter_params`, on rgb's device.

    Returns:
        (B, 3, H, W) jittered images in [0, 1].

    Example:
        >>> x = torch.rand(2, 3, 4, 4)
        >>> p = sample_jitter_params(2, torch.Generator().manual_seed(0), prob=0.0, grayscale_prob=0.0)
        >>> torch.equal(apply_color_jitter(x, p), x)
        True
    """
    _check_rgb(rgb, "rgb")
    with torch.autocast(device_type=rgb.device.type, enabled=False):
        x = rgb.float()

        def per_sample(v: Tensor) -> Tensor:
            return v.float().view(-1, 1, 1, 1)

        out = (x * per_sample(params.brightness)).clamp(0, 1)
        mean = rgb_to_grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
        c = per_sample(params.contrast)
        out = (c * out + (1 - c) * mean).clamp(0, 1)
        s = per_sample(params.saturation)
        out = (s * out + (1 - s) * rgb_to_grayscale(out)).clamp(0, 1)
        hsv = rgb_to_hsv(out)
        hue = (hsv[:, :1] + params.hue.float().view(-1, 1, 1, 1)) % 1.0
        out = hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1)).clamp(0, 1)
        out = torch.where(params.apply.view(-1, 1, 1, 1), out, x)
        gray = rgb_to_grayscale(out).expand_as(out)
        out = torch.where(params.gray.view(-1, 1, 1, 1), gray, out)
        return out.to(rgb.dtype)
