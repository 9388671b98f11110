"""Dilated ResNet trunks (output stride 8) in two flavours, with torchvision parameter names.

Both flavours register ``conv1, bn1, layer1..layer4`` with exactly torchvision's sub-module names
(``layerL.i.conv1``, ``.bn1``, ..., ``layerL.0.downsample.{0,1}``), so a torchvision ``resnet18/50``
state dict or the reference's released checkpoints load 1:1.

- ``"torchvision"``: torchvision's ResNet with ``replace_stride_with_dilation=[False, True, True]``: the
  bottleneck stride sits on the 3x3 conv, maxpool uses ``ceil_mode=False``, and in a dilated layer the first
  block keeps the previous dilation while the remaining blocks use the new one (exactly torchvision's
  ``_make_layer``). torchvision refuses dilation in ``BasicBlock``; ours applies it to both 3x3 convs, which
  leaves the parameter shapes (and so the weight files) unchanged.
- ``"caffe"``: the DeepLab-v2 trunk of the reference (``unsup-parts-method.md`` §1.2): the stride sits on the
  first 1x1 conv of the bottleneck, maxpool ``ceil_mode=True``, every block of layer3/layer4 uses dilation
  2/4, and the 1x1 downsample branch is also created whenever a layer is dilated.

Spatial size (``h`` for an ``H`` input): torchvision ``floor((floor((H - 1) / 2) + 1 - 1) / 2) + 1`` then one
stride-2 stage, e.g. 256 -> 32, 64 -> 8; Caffe 256 -> 33, 224 -> 29, 320 -> 41, 64 -> 9 (see
:func:`output_size`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

TRUNK_STYLES = ("torchvision", "caffe")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34), dilation-capable.

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of the first 3x3 conv.
        dilation: dilation (= padding) of both 3x3 convs.
        downsample: module mapping the input to the residual's shape, or ``None`` for identity.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual block: (B, inplanes, h, w) -> (B, planes, h / stride, w / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck (ResNet-50), with the stride on the 3x3 or on the first 1x1 conv.

    Args:
        inplanes: input channels.
        planes: width of the bottleneck; the block outputs ``4 * planes`` channels.
        stride: spatial stride of the block.
        dilation: dilation (= padding) of the 3x3 conv.
        downsample: module mapping the input to the residual's shape, or ``None`` for identity.
        stride_in_1x1: ``True`` for the Caffe/DeepLab placement (stride on ``conv1``), ``False`` for
            torchvision's (stride on ``conv2``).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, 3, stride=stride_3x3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual block: (B, inplanes, h, w) -> (B, 4 * planes, h / stride, w / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@dataclass(frozen=True)
class TrunkSpec:
    """What a ResNet trunk is made of.

    Attributes:
        block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50/101).
        layers: number of blocks in layer1..layer4, e.g. ``(2, 2, 2, 2)`` or ``(3, 4, 6, 3)``.
        style: ``"torchvision"`` or ``"caffe"`` (see the module docstring).
    """

    block: str
    layers: tuple[int, int, int, int]
    style: str

    def __post_init__(self) -> None:
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"TrunkSpec.block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.style not in TRUNK_STYLES:
            raise ValueError(f"TrunkSpec.style must be one of {TRUNK_STYLES}, got {self.style!r}")
        if self.style == "caffe" and self.block != "bottleneck":
            raise ValueError("the caffe trunk style is defined for bottleneck blocks only")
        if len(self.layers) != 4 or any(n < 1 for n in self.layers):
            raise ValueError(f"TrunkSpec.layers must be 4 positive block counts, got {self.layers}")

    @property
    def out_channels(self) -> int:
        """Channels of the layer4 output (512 for basic blocks, 2048 for bottlenecks)."""
        return 512 * (1 if self.block == "basic" else 4)


def _make_layer(
    spec: TrunkSpec, inplanes: int, planes: int, blocks: int, stride: int, dilation: int, first_dilation: int
) -> tuple[nn.Sequential, int]:
    """One ResNet stage; returns the stage and its output channels."""
    expansion = 1 if spec.block == "basic" else 4
    need_downsample = stride != 1 or inplanes != planes * expansion
    if spec.style == "caffe":
        # ref: deeplab_2branch.py:182 also builds the branch for the dilated stages (dilation 2 or 4).
        need_downsample = need_downsample or dilation in (2, 4)
    downsample = None
    if need_downsample:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * expansion),
        )

    def block(cin: int, s: int, d: int, ds: nn.Module | None) -> nn.Module:
        if spec.block == "basic":
            return BasicBlock(cin, planes, stride=s, dilation=d, downsample=ds)
        return Bottleneck(
            cin, planes, stride=s, dilation=d, downsample=ds, stride_in_1x1=spec.style == "caffe"
        )

    modules = [block(inplanes, stride, first_dilation, downsample)]
    modules += [block(planes * expansion, 1, dilation, None) for _ in range(1, blocks)]
    return nn.Sequential(*modules), planes * expansion


def build_trunk(spec: TrunkSpec) -> dict[str, nn.Module]:
    """Create the stem and the four stages of a dilated (output stride 8) ResNet.

    Args:
        spec: block type, block counts and style.

    Returns:
        Ordered modules ``conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4``, to be registered
        under exactly these names by the owner (so parameter names match torchvision).
    """
    caffe = spec.style == "caffe"
    modules: dict[str, nn.Module] = {
        "conv1": nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
        "bn1": nn.BatchNorm2d(64),
        "relu": nn.ReLU(inplace=True),
        "maxpool": nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=caffe),
    }
    channels = 64
    # (planes, stride, dilation, dilation of the first block) per stage.
    if caffe:
        # ref: deeplab_2branch.py:163-168, every block of layer3/layer4 is dilated.
        stages = [(64, 1, 1, 1), (128, 2, 1, 1), (256, 1, 2, 2), (512, 1, 4, 4)]
    else:
        # torchvision replace_stride_with_dilation=[False, True, True]: first block keeps the old dilation.
        stages = [(64, 1, 1, 1), (128, 2, 1, 1), (256, 1, 2, 1), (512, 1, 4, 2)]
    for index, ((planes, stride, dilation, first_dilation), blocks) in enumerate(zip(stages, spec.layers)):
        layer, channels = _make_layer(spec, channels, planes, blocks, stride, dilation, first_dilation)
        modules[f"layer{index + 1}"] = layer
    return modules


def output_size(size: int, style: str) -> int:
    """Side of the layer4 (and logit) grid for an input side ``size``.

    Args:
        size: input height or width in pixels.
        style: ``"torchvision"`` or ``"caffe"``.

    Returns:
        The output side, from the conv/pool arithmetic of the stem and the one stride-2 stage.

    Example:
        >>> output_size(256, "caffe"), output_size(256, "torchvision"), output_size(224, "caffe")
        (33, 32, 29)
    """
    if style not in TRUNK_STYLES:
        raise ValueError(f"style must be one of {TRUNK_STYLES}, got {style!r}")
    side = (size + 2 * 3 - 7) // 2 + 1  # conv1 7x7 s2 p3
    if style == "caffe":
        side = math.ceil((side + 2 - 3) / 2) + 1  # maxpool 3x3 s2 p1 ceil_mode=True
        # PyTorch drops a last window that would start in the right padding only; never the case for p=1, s=2.
        return (side - 1) // 2 + 1  # layer2 conv1 1x1 s2 p0
    side = (side + 2 - 3) // 2 + 1  # maxpool 3x3 s2 p1
    return (side + 2 - 3) // 2 + 1  # layer2 conv2 3x3 s2 p1


def init_torchvision_(modules: list[nn.Module]) -> None:
    """Initialise as torchvision's ResNet: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 and bias 0.

    Args:
        modules: modules whose sub-modules are (re)initialised in place (global RNG, seeded by the caller).
    """
    _init_convs_and_bn(modules, lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))


def init_caffe_(modules: list[nn.Module]) -> None:
    """The reference's init (deeplab_2branch.py:171-176): conv weights N(0, 0.01), BN weight 1 and bias 0.

    Args:
        modules: modules whose sub-modules are (re)initialised in place (global RNG, seeded by the caller).
    """
    _init_convs_and_bn(modules, lambda w: nn.init.normal_(w, 0.0, 0.01))


def _init_convs_and_bn(modules: list[nn.Module], init_conv: Callable[[Tensor], object]) -> None:
    """``init_conv`` on every conv weight and BN weight 1, bias 0, in module order (one RNG stream)."""
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Conv2d):
                init_conv(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


@torch.no_grad()
def freeze_bn_affine_(modules: list[nn.Module]) -> None:
    """Freeze the affine parameters of the stem and bottleneck BNs, keeping the downsample BNs trainable.

    This is the reference's choice (deeplab_2branch.py:92-104, 157-159): ``bn1`` of the stem and
    ``bn1/bn2/bn3`` of every block get ``requires_grad=False``; ``layerX.0.downsample.1`` is never frozen.
    Running statistics still update in train mode.

    Args:
        modules: the stem BN and the four stages.
    """
    for root in modules:
        for name, m in root.named_modules():
            if isinstance(m, nn.BatchNorm2d) and not name.endswith("downsample.1"):
                for p in m.parameters():
                    p.requires_grad_(False)
