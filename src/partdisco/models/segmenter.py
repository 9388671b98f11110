"""The part segmenter f: a dilated ResNet trunk plus the reference's ASPP head ``layer5``.

A :class:`Segmenter` maps a *normalised* image (B, 3, H, W) to part logits (B, K(+1), h, w) at output
stride 8. Its :attr:`~Segmenter.preprocess` turns an RGB [0, 1] image into that input, so the normalisation
travels with the weights. Parameter names are flat and equal torchvision's ResNet names (``conv1``, ``bn1``,
``layer1..4``) plus ``layer5.conv2d_list.{0..3}``: torchvision weight files and the released unsup-parts
checkpoints load without renaming.

Example:
    >>> from partdisco.models import create_segmenter
    >>> seg = create_segmenter("resnet18", num_parts=4)
    >>> image01 = torch.rand(2, 3, 64, 64)
    >>> seg(seg.preprocess(image01)).shape
    torch.Size([2, 4, 8, 8])
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from partdisco.models.foreground import ForegroundClassifier
from partdisco.models.resnet import (
    TrunkSpec,
    build_trunk,
    freeze_bn_affine_,
    init_caffe_,
    init_torchvision_,
    output_size,
)

logger = logging.getLogger(__name__)

HEAD_RATES = (6, 12, 18, 24)  # ref: deeplab_2branch.py:169, dilation = padding of the four classifier convs
BACKBONE_MODULES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class Preprocess:
    """Turn an RGB image in [0, 1] into a network input: ``(image01 * scale - mean) / std`` per channel.

    Attributes:
        mean: per-channel value subtracted after scaling, in RGB channel order.
        std: per-channel divisor (all > 0).
        scale: factor applied first (255 for Caffe-style 0-255 inputs, 1 for ImageNet-style).

    Example:
        >>> [round(v, 4) for v in IMAGENET(torch.full((1, 3, 1, 1), 0.5)).flatten().tolist()]
        [0.0655, 0.1964, 0.4178]
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        std = tuple(float(v) for v in self.std)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f"Preprocess needs 3 means and 3 stds (RGB), got mean={self.mean}, std={self.std}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"Preprocess std values must be > 0, got {std}")
        if not float(self.scale) > 0:
            raise ValueError(f"Preprocess scale must be > 0, got {self.scale}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "scale", float(self.scale))

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not torch.is_floating_point(x):
            raise TypeError(f"expected a floating-point image in [0, 1], got dtype {x.dtype}")
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"expected an RGB image (..., 3, H, W), got shape {tuple(x.shape)}")
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(3, 1, 1)
        return mean, std

    def __call__(self, image01: Tensor) -> Tensor:
        """Normalise.

        Args:
            image01: float (..., 3, H, W) RGB in [0, 1], typically (B, 3, H, W).

        Returns:
            The network input, same shape, dtype and device.
        """
        mean, std = self._stats(image01)
        return (image01 * self.scale - mean) / std

    def invert(self, x: Tensor) -> Tensor:
        """Undo :meth:`__call__` (for pictures): network input (..., 3, H, W) -> RGB [0, 1] (not clamped)."""
        mean, std = self._stats(x)
        return (x * std + mean) / self.scale

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{"mean": [3 floats], "std": [3 floats], "scale": float}`` for configs and checkpoints."""
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; raises ValueError naming a missing key."""
        missing = [k for k in ("mean", "std", "scale") if k not in values]
        if missing:
            raise ValueError(f"preprocess dict is missing {missing}; got keys {sorted(values)}")
        return cls(tuple(values["mean"]), tuple(values["std"]), float(values["scale"]))


# The reference's DeepLab input (unsup-parts-method.md §1.7, lit_dataset.py:11-18): RGB 0-255 minus the Caffe
# *BGR* means, channel for channel, no std. A quirk, kept on purpose: the released checkpoints expect it.
CAFFE_RGB_QUIRK = Preprocess((104.008, 116.669, 122.679), (1.0, 1.0, 1.0), 255.0)
# torchvision ImageNet statistics (the VGG19 input of §1.4, and the torchvision ResNets).
IMAGENET = Preprocess((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0)
# EfficientNet-Lite's input, (rgb255 - 127) / 128: TF efficientnet_lite_builder.py MEAN_RGB / STDDEV_RGB
# ("Edge models use inception-style MEAN and STDDEV for better post-quantization").
LITE = Preprocess((127.0, 127.0, 127.0), (128.0, 128.0, 128.0), 255.0)
NORMALIZATIONS: dict[str, Preprocess] = {"caffe": CAFFE_RGB_QUIRK, "imagenet": IMAGENET, "lite": LITE}


def preprocess_for(normalization: str) -> Preprocess:
    """The :class:`Preprocess` of a ``ModelConfig.normalization`` (``caffe``, ``imagenet`` or ``lite``)."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose from {sorted(NORMALIZATIONS)}")
    return NORMALIZATIONS[normalization]


@dataclass(frozen=True)
class InferenceDefaults:
    """What inference uses unless told otherwise, stored with the model as ``seg.inference_defaults``.

    Built from one of our checkpoints by :func:`partdisco.models.checkpoint.inference_defaults` (or from an
    ONNX file's metadata); read by ``engine.inference.inference_size`` / ``inference_padding`` /
    ``inference_fg_refine``. None means unknown: the package defaults apply.

    Attributes:
        image_size: the side of the square images the model was trained on (``data.image_size``);
            :func:`partdisco.segment` and ``partdisco segment`` resize to it by default.
        crop_padding: the training crop's padding per side (``data.padding_frac``); the object-centric crop
            uses it by default.
        fg_refine: ``(radius, eps)`` of the predicted foreground's refinement (``eval.fg_refine_radius`` /
            ``eval.fg_refine_eps``).
        foreground: the classifier foreground discovery learnt over the training photos
            (:class:`~partdisco.models.foreground.ForegroundClassifier`); when set, inference takes each
            image's foreground from it (``--background auto``) instead of the background channel.
    """

    image_size: int | None = None
    crop_padding: float | None = None
    fg_refine: tuple[float, float] | None = None
    foreground: ForegroundClassifier | None = field(default=None, repr=False)


class InferenceDefaultsAliases:
    """Read-only aliases of a model's ``inference_defaults``, kept for one release (issue #23).

    ``seg.image_size``, ``seg.crop_padding`` and ``seg.fg_refine`` were loose attributes; read
    ``seg.inference_defaults.image_size`` (``crop_padding``, ``fg_refine``) instead.
    """

    inference_defaults: InferenceDefaults

    @property
    def image_size(self) -> int | None:
        """Deprecated alias of ``inference_defaults.image_size``."""
        return self.inference_defaults.image_size

    @property
    def crop_padding(self) -> float | None:
        """Deprecated alias of ``inference_defaults.crop_padding``."""
        return self.inference_defaults.crop_padding

    @property
    def fg_refine(self) -> tuple[float, float] | None:
        """Deprecated alias of ``inference_defaults.fg_refine``."""
        return self.inference_defaults.fg_refine


@dataclass(frozen=True)
class ArchSpec:
    """A registered segmenter architecture.

    Attributes:
        name: registry name, e.g. ``"resnet18"``.
        trunk: the ResNet trunk.
        head_channels: ``(start, stop)`` slice of the layer4 channels fed to the head (the reference's
            2-branch model uses the second half, 1024..2048).
        normalization: default input normalisation, ``"caffe"`` or ``"imagenet"``.
        freeze_bn_affine: freeze the stem/bottleneck BN affines as the reference does.
        description: one line for ``list_archs`` / ``--help``.
    """

    name: str
    trunk: TrunkSpec
    head_channels: tuple[int, int]
    normalization: str
    freeze_bn_affine: bool
    description: str

    def __post_init__(self) -> None:
        start, stop = self.head_channels
        if not 0 <= start < stop <= self.trunk.out_channels:
            raise ValueError(
                f"arch {self.name!r}: head_channels {self.head_channels} outside layer4's "
                f"{self.trunk.out_channels} channels"
            )
        preprocess_for(self.normalization)


class ASPPHead(nn.Module):
    """The reference classifier ``layer5``: four 3x3 convs with dilation = padding 6/12/18/24, summed.

    Weights are N(0, 0.01); biases keep PyTorch's default init (deeplab_2branch.py:132-148).

    Args:
        in_channels: C of the input features.
        out_channels: number of logit channels.
        rates: dilations (= paddings) of the parallel convs.
    """

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...] = HEAD_RATES) -> None:
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0.0, 0.01)

    def forward(self, features: Tensor) -> Tensor:
        """Sum of the parallel dilated convs: (B, C, h, w) -> (B, out_channels, h, w)."""
        out = self.conv2d_list[0](features)
        for conv in self.conv2d_list[1:]:
            out = out + conv(features)
        return out


class PartSegmenter(InferenceDefaultsAliases, nn.Module):
    """What every part segmenter shares: K, background channel, normalisation, parameter groups, config.

    :class:`Segmenter` (ResNet trunks) and
    :class:`partdisco.models.vit_segmenter.ViTSegmenter` build on it; it registers no module, so parameter
    names and state dicts are the subclasses' own.

    Subclasses set ``arch``, a trunk and the head ``layer5``, and define :meth:`backbone_parameters` and
    :meth:`config_extra`.

    Args:
        num_parts: K, the number of discovered parts (>= 1).
        background_channel: add a background logit as channel 0 -> K + 1 outputs.
        preprocess: input normalisation (RGB [0, 1] -> network input).
    """

    arch: str
    layer5: nn.Module
    # Input sides the network takes as they are; others are resized first, inside forward (a ViT's patch
    # size). An ONNX export takes multiples of it, so that the graph has no branch on the image size.
    input_multiple: int = 1

    def __init__(self, num_parts: int, background_channel: bool, preprocess: Preprocess) -> None:
        super().__init__()
        if int(num_parts) < 1:
            raise ValueError(f"num_parts must be >= 1, got {num_parts}")
        self.num_parts = int(num_parts)
        self.background_channel = bool(background_channel)
        self.out_channels = self.num_parts + int(self.background_channel)
        self.preprocess = preprocess
        # What inference uses by default (engine.inference.inference_size / inference_padding /
        # inference_fg_refine); loading one of our checkpoints sets it (models.checkpoint.inference_defaults).
        self.inference_defaults = InferenceDefaults()

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The trunk's parameters (trainable or not), in a fixed order."""
        raise NotImplementedError

    def config_extra(self) -> dict[str, Any]:
        """The subclass's own entries of :meth:`config` (after the shared four)."""
        raise NotImplementedError

    def param_groups(self, lr: float, head_lr: float) -> list[dict[str, Any]]:
        """The reference's two SGD groups (deeplab_2branch.py:220-255): the trunk and the head ``layer5``.

        Args:
            lr: learning rate of the trunk.
            head_lr: learning rate of the head ``layer5`` (10x ``lr`` in the reference).

        Returns:
            ``[{"params": trunk params with requires_grad, "lr": lr, "name": "backbone"},
            {"params": layer5 params, "lr": head_lr, "name": "head"}]``; for ``deeplab_r50_2branch``
            61 and 8 tensors.
        """
        backbone = [p for p in self.backbone_parameters() if p.requires_grad]
        head = [p for p in self.layer5.parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": float(lr), "name": "backbone"},
            {"params": head, "lr": float(head_lr), "name": "head"},
        ]

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this module (see ``segmenter_from_config``); plain types only."""
        return {
            "arch": self.arch,
            "num_parts": self.num_parts,
            "background_channel": self.background_channel,
            "preprocess": self.preprocess.to_dict(),
            **self.config_extra(),
        }


class Segmenter(PartSegmenter):
    """Dilated ResNet trunk + ASPP head, producing part logits at output stride 8.

    Build one with :func:`partdisco.models.create_segmenter` (by name) or
    :func:`partdisco.models.build_segmenter` (from a ``ModelConfig``).

    Args:
        spec: the architecture.
        num_parts: K, the number of discovered parts (>= 1).
        background_channel: add a background logit as channel 0 (SCOPS) -> K + 1 outputs.
        preprocess: input normalisation; ``None`` takes the architecture's default.
        trunk_style: ``"caffe"`` or ``"torchvision"`` bottleneck placement of the stride (see
            :mod:`partdisco.models.resnet`); ``None`` takes the architecture's. Pretrained weights choose it:
            torchvision's ResNet-50 runs the torchvision bottleneck even inside ``deeplab_r50_2branch``.

    Attributes:
        arch: registry name of the architecture.
        num_parts: K.
        background_channel: whether channel 0 is a background logit.
        out_channels: K or K + 1.
        preprocess: the :class:`Preprocess` that maps RGB [0, 1] images to this network's input
            (normalisation only; it does not resize).
        inference_defaults: the :class:`InferenceDefaults` (training image size, crop padding, foreground
            refinement) known from our checkpoints; all None for a fresh model.
    """

    def __init__(
        self,
        spec: ArchSpec,
        num_parts: int,
        background_channel: bool = False,
        preprocess: Preprocess | None = None,
        trunk_style: str | None = None,
    ) -> None:
        if trunk_style is not None and trunk_style != spec.trunk.style:
            spec = dataclasses.replace(spec, trunk=dataclasses.replace(spec.trunk, style=trunk_style))
        super().__init__(
            num_parts,
            background_channel,
            preprocess if preprocess is not None else preprocess_for(spec.normalization),
        )
        self.arch = spec.name
        self.spec = spec
        for name, module in build_trunk(spec.trunk).items():
            self.add_module(name, module)  # flat names: conv1, bn1, relu, maxpool, layer1..layer4
        start, stop = spec.head_channels
        self.layer5 = ASPPHead(stop - start, self.out_channels)
        trunk = [getattr(self, name) for name in BACKBONE_MODULES]
        if spec.trunk.style == "caffe":
            init_caffe_(trunk)
        else:
            init_torchvision_(trunk)
        if spec.freeze_bn_affine:
            freeze_bn_affine_(trunk)

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk only.

        Args:
            x: float (B, 3, H, W), already normalised with :attr:`preprocess`.

        Returns:
            layer4 features (B, C4, h, w) with C4 = 512 (ResNet-18) or 2048 (ResNet-50).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a normalised image batch (B, 3, H, W), got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.layer4(self.layer3(x))  # (B, C4, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """Part logits.

        Args:
            x: float (B, 3, H, W), already normalised with :attr:`preprocess`.

        Returns:
            logits (B, out_channels, h, w); h = :func:`partdisco.models.resnet.output_size` of H
            (e.g. 256 -> 33 for ``deeplab_r50_2branch``, 256 -> 32 for ``resnet18/50``).
        """
        features = self.forward_features(x)  # (B, C4, h, w)
        start, stop = self.spec.head_channels
        if (start, stop) != (0, features.shape[1]):
            features = features[:, start:stop]  # ref: 2-branch, classifier on channels 1024-2047
        return self.layer5(features)  # (B, out_channels, h, w)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Logit grid (h, w) for an (H, W) input."""
        style = self.spec.trunk.style
        return output_size(height, style), output_size(width, style)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The trunk's parameters: ``conv1``, ``bn1``, ``layer1..4`` (not the head)."""
        return [p for name in BACKBONE_MODULES for p in getattr(self, name).parameters()]

    def config_extra(self) -> dict[str, Any]:
        """``trunk_style`` (after the shared keys of :meth:`PartSegmenter.config`)."""
        return {"trunk_style": self.spec.trunk.style}

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return (
            f"arch={self.arch!r}, trunk_style={self.spec.trunk.style!r}, num_parts={self.num_parts}, "
            f"background_channel={self.background_channel}, preprocess={self.preprocess}"
        )
