"""The segmenter factory: the registry of architectures and the builders that look them up.

Each architecture registers an :class:`Arch` (how to create it by name, rebuild it from
:meth:`PartSegmenter.config`, resolve its ``ModelConfig`` and build it with initial weights) in its own file,
with :func:`register_arch`, the way timm registers models:

- ``resnet18``, ``resnet50``, ``deeplab_r50_2branch``: :mod:`partdisco.models.resnet_segmenter`.
- ``efficientnet_lite0``: :mod:`partdisco.models.efficientnet_segmenter`.
- ``vit``: :mod:`partdisco.models.vit_segmenter` (not by name alone: it needs a backbone).

The package ``partdisco.models`` imports those files, so every architecture is registered once any module of
the package is imported. This module imports none of them: they import it.

Example:
    >>> from partdisco.config import ModelConfig
    >>> seg = build_segmenter(ModelConfig(arch="resnet18", num_parts=3, normalization="imagenet"))
    >>> seg.out_channels, seg.arch in list_archs()
    (3, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from partdisco.config import ARCHS, ModelConfig
from partdisco.models.segmenter import ArchSpec, PartSegmenter, Preprocess

_ARCHS: dict[str, Arch] = {}
T = TypeVar("T", "Arch", "type[Arch]")


@dataclass(frozen=True)
class NewSegmenter:
    """What :func:`create_segmenter` asks an :class:`Arch` for: a random segmenter with these settings.

    Attributes:
        num_parts: K.
        background_channel: a background logit as channel 0 (K + 1 outputs).
        preprocess: input normalisation; None takes the architecture's default.
        trunk_style: ``"caffe"`` / ``"torchvision"`` stride placement (ResNet trunks only); None = the spec's.
    """

    num_parts: int
    background_channel: bool = False
    preprocess: Preprocess | None = None
    trunk_style: str | None = None


class Arch:
    """How to make one architecture; subclasses live next to their segmenter and call :func:`register_arch`.

    Attributes:
        name: the registry name, one of ``partdisco.config.ARCHS``.
        by_name: :func:`create_segmenter` builds it from its name alone (listed by :func:`list_archs`).
        spec: the ResNet trunk's :class:`ArchSpec` (:func:`get_arch`), None for other trunks.
    """

    name: str = ""
    by_name: bool = True
    spec: ArchSpec | None = None

    def create(self, new: NewSegmenter) -> PartSegmenter:
        """A randomly initialised segmenter (see :func:`create_segmenter`)."""
        raise ValueError(f"architecture {self.name!r} cannot be created by name; use build_segmenter")

    def from_config(self, config: Mapping[str, Any]) -> PartSegmenter:
        """Rebuild (random weights) from :meth:`PartSegmenter.config` output; the caller loads the weights."""
        raise NotImplementedError

    def resolve(self, cfg: ModelConfig) -> tuple[ModelConfig, str | None]:
        """The resolved model slice (see :func:`resolve_model_config`) and the layout of its ``init_from``."""
        return cfg, None

    def build(self, cfg: ModelConfig) -> PartSegmenter:
        """The segmenter ``cfg`` describes, initial weights loaded, in train mode."""
        raise NotImplementedError


def register_arch(arch: T) -> T:
    """Add an architecture to the registry; usable as a class decorator (the class is instantiated).

    Args:
        arch: an :class:`Arch` (or an :class:`Arch` subclass taking no arguments); its ``name`` must be in
            ``partdisco.config.ARCHS`` and not registered yet.

    Returns:
        ``arch``, unchanged.
    """
    entry = arch() if isinstance(arch, type) else arch
    if entry.name in _ARCHS:
        raise ValueError(f"architecture {entry.name!r} is already registered")
    if entry.name not in ARCHS:  # config validates model.arch against that list
        raise ValueError(
            f"architecture {entry.name!r} is not in partdisco.config.ARCHS {ARCHS}; add it there"
        )
    _ARCHS[entry.name] = entry
    return arch


def arch_entry(name: str) -> Arch:
    """The registered :class:`Arch` called ``name``; ValueError listing them otherwise."""
    if name not in _ARCHS:
        raise ValueError(f"unknown architecture {name!r}; choose from {list_archs()}")
    return _ARCHS[name]


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` of the ResNet-trunk architecture ``name``; ValueError listing them otherwise."""
    spec = _ARCHS[name].spec if name in _ARCHS else None
    if spec is None:
        resnets = sorted(n for n, a in _ARCHS.items() if a.spec is not None)
        raise ValueError(f"unknown ResNet-trunk architecture {name!r}; choose from {resnets}")
    return spec


def list_archs() -> list[str]:
    """Names of the architectures :func:`create_segmenter` builds by name (ResNet, EfficientNet), sorted."""
    return sorted(name for name, arch in _ARCHS.items() if arch.by_name)


def create_segmenter(
    arch: str,
    num_parts: int,
    background_channel: bool = False,
    preprocess: Preprocess | None = None,
    trunk_style: str | None = None,
) -> PartSegmenter:
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
    return arch_entry(arch).create(NewSegmenter(num_parts, background_channel, preprocess, trunk_style))


def segmenter_from_config(config: Mapping[str, Any]) -> PartSegmenter:
    """Rebuild a segmenter (random weights) from :meth:`PartSegmenter.config` output.

    Args:
        config: ``{"arch", "num_parts", "background_channel"?, "preprocess"?, "trunk_style"?}`` (files
            written before ``trunk_style`` was recorded get the architecture's own); for ``arch="vit"`` also
            ``"backbone"`` and ``"finetune_blocks"`` (:meth:`ViTSegmenter.config`).

    Returns:
        A new segmenter with that architecture, K and preprocessing.
    """
    missing = [k for k in ("arch", "num_parts") if k not in config]
    if missing:
        raise ValueError(f"segmenter config is missing {missing}; got keys {sorted(config)}")
    return arch_entry(str(config["arch"])).from_config(config)


def resolve_model_config(cfg: ModelConfig) -> ModelConfig:
    """Replace ``init_from_format="auto"`` and ``normalization="auto"`` by what ``init_from`` implies.

    With weights, ``init_from_format`` becomes the trunk style they were trained with (``"caffe"`` or
    ``"torchvision"``) and an ``"auto"`` normalisation the one they expect; without weights (``None`` or
    ``"none"``), the normalisation becomes the architecture's default (vit: ``imagenet``, EfficientNet:
    ``lite``, whatever was asked). Training records the result in the run config and checkpoints, so
    evaluation, segmentation and :func:`load_segmenter` rebuild the same network.

    Args:
        cfg: the model slice.

    Returns:
        A resolved copy (``cfg`` is not modified).
    """
    return arch_entry(cfg.arch).resolve(cfg)[0]


def build_segmenter(cfg: ModelConfig) -> PartSegmenter:
    """Create the segmenter a ``ModelConfig`` describes, loading its ``init_from`` weights.

    Args:
        cfg: ``arch``, ``num_parts``, ``background_channel``, ``normalization``, ``init_from`` (a local file;
            ``None`` or ``"none"`` = random init, or the architecture's packaged weights) and the arch's own
            keys (``init_from_format``, ``vit``, ``finetune_blocks``).

    Returns:
        The segmenter in train mode.

    Example:
        >>> from partdisco.models.segmenter import IMAGENET
        >>> seg = build_segmenter(ModelConfig(arch="resnet18", num_parts=3, normalization="imagenet"))
        >>> seg.out_channels, seg.preprocess == IMAGENET
        (3, True)
    """
    return arch_entry(cfg.arch).build(cfg)
