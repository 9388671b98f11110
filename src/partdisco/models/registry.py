"""Segmenter architectures by name: ``create_segmenter("resnet18", num_parts=4)``.

Registered architectures:

- ``resnet18``: torchvision ResNet-18, dilated to output stride 8 (layer3/4 dilation 2/4), head on the 512
  layer4 channels; ImageNet normalisation. The fast choice on CPU.
- ``resnet50``: torchvision ResNet-50, same dilation, head on the 2048 layer4 channels; ImageNet
  normalisation.
- ``deeplab_r50_2branch``: the reference segmenter (``unsup-parts-method.md`` §1.2): Caffe-style ResNet-50,
  head on layer4 channels 1024-2047, stem/bottleneck BN affines frozen; Caffe-BGR-mean-on-RGB normalisation.
- ``efficientnet_lite0``: ImageNet EfficientNet-Lite0 dilated to stride 8, head on its three stride-8 stages
  (``models/efficientnet_segmenter.py``); EfficientNet-Lite normalisation.

Building from a ``ModelConfig`` (which may also load initial weights from a file) is
:func:`partdisco.models.convert.build_segmenter`; it lives next to the file loaders it uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from partdisco.config import ARCHS
from partdisco.models.resnet import TrunkSpec
from partdisco.models.segmenter import ArchSpec, Preprocess, Segmenter

# The names are config.ARCHS (validated before models/ is imported); ResNet-trunk architectures register
# their ArchSpec here, "vit" is built by models/vit_segmenter.py (VIT_ARCH).
_ARCHS: dict[str, ArchSpec] = {}
VIT_ARCH = "vit"
# EfficientNet-trunk architectures (models/efficientnet_segmenter.py): registry name -> Lite size.
EFFICIENTNET_ARCHS = {"efficientnet_lite0": "lite0"}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add an architecture to the registry.

    Args:
        spec: the architecture; ``spec.name`` must not be registered yet.

    Returns:
        ``spec``, unchanged.
    """
    if spec.name in _ARCHS or spec.name in EFFICIENTNET_ARCHS:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    if spec.name not in ARCHS:  # config.py validates model.arch against that list
        raise ValueError(f"architecture {spec.name!r} is not in partdisco.config.ARCHS {ARCHS}; add it there")
    _ARCHS[spec.name] = spec
    return spec


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` of the ResNet-trunk architecture ``name``; ValueError listing them otherwise."""
    if name not in _ARCHS:
        raise ValueError(f"unknown ResNet-trunk architecture {name!r}; choose from {sorted(_ARCHS)}")
    return _ARCHS[name]


def list_archs() -> list[str]:
    """Names of the registered architectures (ResNet and EfficientNet trunks), sorted."""
    return sorted([*_ARCHS, *EFFICIENTNET_ARCHS])


def create_segmenter(
    arch: str,
    num_parts: int,
    background_channel: bool = False,
    preprocess: Preprocess | None = None,
    trunk_style: str | None = None,
) -> Segmenter:
    """Create a randomly initialised segmenter by name.

    Args:
        arch: a name from :func:`list_archs` (an EfficientNet arch takes no ``trunk_style``).
        num_parts: K.
        background_channel: add a background logit as channel 0 (K + 1 outputs, SCOPS style).
        preprocess: input normalisation; ``None`` takes the architecture's default.
        trunk_style: ``"caffe"`` / ``"torchvision"`` stride placement; ``None`` takes the architecture's.

    Returns:
        The :class:`Segmenter` (train mode, CPU, float32); an ``EfficientNetSegmenter`` for
        ``efficientnet_lite0``.

    Example:
        >>> seg = create_segmenter("deeplab_r50_2branch", num_parts=4)
        >>> len(seg.state_dict()), seg.out_channels
        (326, 4)
    """
    if arch in EFFICIENTNET_ARCHS:
        if trunk_style is not None:
            raise ValueError(f"trunk_style is a ResNet setting; {arch} takes none, got {trunk_style!r}")
        # lazy: efficientnet_segmenter imports convert, which imports this module
        from partdisco.models.efficientnet_segmenter import EfficientNetSegmenter

        seg = EfficientNetSegmenter(num_parts, background_channel, preprocess, lite=EFFICIENTNET_ARCHS[arch])
        return seg  # type: ignore[return-value]
    return Segmenter(
        get_arch(arch),
        num_parts,
        background_channel=background_channel,
        preprocess=preprocess,
        trunk_style=trunk_style,
    )


def segmenter_from_config(config: Mapping[str, Any]) -> Segmenter:
    """Rebuild a segmenter (random weights) from :meth:`Segmenter.config` output.

    Args:
        config: ``{"arch", "num_parts", "background_channel"?, "preprocess"?, "trunk_style"?}`` (files
            written before ``trunk_style`` was recorded get the architecture's own); for ``arch="vit"`` also
            ``"backbone"`` and ``"finetune_blocks"`` (:meth:`ViTSegmenter.config`).

    Returns:
        A new :class:`Segmenter` with that architecture, K and preprocessing.
    """
    missing = [k for k in ("arch", "num_parts") if k not in config]
    if missing:
        raise ValueError(f"segmenter config is missing {missing}; got keys {sorted(config)}")
    if config["arch"] == VIT_ARCH:
        from partdisco.models.vit_segmenter import ViTSegmenter  # imports convert, which imports this module

        return ViTSegmenter.from_config(config)  # type: ignore[return-value]
    if config["arch"] in EFFICIENTNET_ARCHS:
        from partdisco.models.efficientnet_segmenter import EfficientNetSegmenter

        return EfficientNetSegmenter.from_config(config)  # type: ignore[return-value]
    preprocess = config.get("preprocess")
    return create_segmenter(
        str(config["arch"]),
        int(config["num_parts"]),
        background_channel=bool(config.get("background_channel", False)),
        preprocess=Preprocess.from_dict(preprocess) if preprocess is not None else None,
        trunk_style=config.get("trunk_style"),
    )


register_arch(
    ArchSpec(
        name="resnet18",
        trunk=TrunkSpec("basic", (2, 2, 2, 2), "torchvision"),
        head_channels=(0, 512),
        normalization="imagenet",
        freeze_bn_affine=False,
        description="torchvision ResNet-18, dilated to stride 8; fast on CPU",
    )
)
register_arch(
    ArchSpec(
        name="resnet50",
        trunk=TrunkSpec("bottleneck", (3, 4, 6, 3), "torchvision"),
        head_channels=(0, 2048),
        normalization="imagenet",
        freeze_bn_affine=False,
        description="torchvision ResNet-50, dilated to stride 8",
    )
)
register_arch(
    ArchSpec(
        name="deeplab_r50_2branch",
        trunk=TrunkSpec("bottleneck", (3, 4, 6, 3), "caffe"),
        head_channels=(1024, 2048),  # ref: deeplab_2branch.py:199-210, classifier on the second half
        normalization="caffe",
        freeze_bn_affine=True,
        description="the reference DeepLab-v2 ResNet-50 2-branch segmenter (unsup-parts, SCOPS)",
    )
)
