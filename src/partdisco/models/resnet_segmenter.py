"""The ResNet-trunk architectures: their specs and their builder, registered with :mod:`.build`.

- ``resnet18``: torchvision ResNet-18, dilated to output stride 8 (layer3/4 dilation 2/4), head on the 512
  layer4 channels; ImageNet normalisation. The fast choice on CPU.
- ``resnet50``: torchvision ResNet-50, same dilation, head on the 2048 layer4 channels; ImageNet
  normalisation.
- ``deeplab_r50_2branch``: the reference segmenter (``unsup-parts-method.md`` §1.2): Caffe-style ResNet-50,
  head on layer4 channels 1024-2047, stem/bottleneck BN affines frozen; Caffe-BGR-mean-on-RGB normalisation.

The network itself is :class:`partdisco.models.segmenter.Segmenter`. Initial weights come from any backbone
file :func:`partdisco.models.foreign.load_backbone_weights` reads; their provenance
(:func:`partdisco.models.foreign.init_provenance`) chooses the trunk: torchvision ResNet-50 weights run
torchvision's bottleneck (stride on the 3x3 conv) with ImageNet normalisation even for
``deeplab_r50_2branch``; Caffe weights run the reference's trunk with the Caffe-mean input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from partdisco.config import RANDOM_INIT, ModelConfig
from partdisco.models.build import Arch, NewSegmenter, register_arch
from partdisco.models.foreign import init_provenance, load_backbone_weights
from partdisco.models.resnet import TrunkSpec
from partdisco.models.segmenter import NORMALIZATIONS, ArchSpec, Preprocess, Segmenter, preprocess_for
from partdisco.models.weights import CheckpointError


def _torchvision_spec(name: str, block: str, layers: tuple[int, ...], channels: int, about: str) -> ArchSpec:
    """A torchvision ResNet: ImageNet normalisation, all of layer4 to the head, BN affines trained."""
    return ArchSpec(name, TrunkSpec(block, layers, "torchvision"), (0, channels), "imagenet", False, about)


RESNET_SPECS = (
    _torchvision_spec(
        "resnet18", "basic", (2, 2, 2, 2), 512, "torchvision ResNet-18, dilated to stride 8; fast on CPU"
    ),
    _torchvision_spec(
        "resnet50", "bottleneck", (3, 4, 6, 3), 2048, "torchvision ResNet-50, dilated to stride 8"
    ),
    ArchSpec(
        name="deeplab_r50_2branch",
        trunk=TrunkSpec("bottleneck", (3, 4, 6, 3), "caffe"),
        head_channels=(1024, 2048),  # ref: deeplab_2branch.py:199-210, classifier on the second half
        normalization="caffe",
        freeze_bn_affine=True,
        description="the reference DeepLab-v2 ResNet-50 2-branch segmenter (unsup-parts, SCOPS)",
    ),
)


class ResNetArch(Arch):
    """One ResNet-trunk architecture: a :class:`Segmenter` of ``spec``.

    Args:
        spec: the architecture (its ``name`` is the registry name).
    """

    def __init__(self, spec: ArchSpec) -> None:
        self.name = spec.name
        self.spec = spec

    def create(self, new: NewSegmenter) -> Segmenter:
        """A random :class:`Segmenter` of this spec (``trunk_style`` None: the spec's)."""
        assert self.spec is not None
        return Segmenter(
            self.spec,
            new.num_parts,
            background_channel=new.background_channel,
            preprocess=new.preprocess,
            trunk_style=new.trunk_style,
        )

    def from_config(self, config: Mapping[str, Any]) -> Segmenter:
        """Rebuild from :meth:`Segmenter.config` (files without ``trunk_style`` get the spec's)."""
        preprocess = config.get("preprocess")
        return self.create(
            NewSegmenter(
                int(config["num_parts"]),
                background_channel=bool(config.get("background_channel", False)),
                preprocess=Preprocess.from_dict(preprocess) if preprocess is not None else None,
                trunk_style=config.get("trunk_style"),
            )
        )

    def resolve(self, cfg: ModelConfig) -> tuple[ModelConfig, str | None]:
        """``init_from_format`` and ``"auto"`` normalisation from the weights' provenance, else the spec's."""
        assert self.spec is not None
        fmt, normalization, layout = cfg.init_from_format, cfg.normalization, None
        if cfg.init_from is not None and cfg.init_from != RANDOM_INIT:
            layout, style, preprocess = init_provenance(cfg.init_from, fmt)
            if style is not None:
                fmt = style
            if normalization == "auto" and preprocess is not None:
                normalization = next((n for n, p in NORMALIZATIONS.items() if p == preprocess), "auto")
        if normalization == "auto":
            normalization = self.spec.normalization
        return dataclasses.replace(cfg, init_from_format=fmt, normalization=normalization), layout

    def build(self, cfg: ModelConfig) -> Segmenter:
        """The :class:`Segmenter` with the trunk the weights' provenance implies, ``init_from`` loaded."""
        assert self.spec is not None
        resolved, layout = self.resolve(cfg)
        fmt = resolved.init_from_format
        style = fmt if layout is not None and fmt != "auto" else None
        if style == "caffe" and self.spec.trunk.block != "bottleneck":
            raise CheckpointError(
                f"model.init_from: Caffe-format weights are a ResNet-50; model.arch={cfg.arch} has basic "
                "blocks"
            )
        seg = self.create(
            NewSegmenter(cfg.num_parts, cfg.background_channel, preprocess_for(resolved.normalization), style)
        )
        if layout is not None and cfg.init_from is not None:
            load_backbone_weights(seg, cfg.init_from, source=layout)
        return seg


for _spec in RESNET_SPECS:
    register_arch(ResNetArch(_spec))
