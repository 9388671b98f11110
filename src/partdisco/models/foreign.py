"""Foreign weight files: recognise a layout, turn unsup-parts / SCOPS files into segmenters, load backbones.

- :func:`detect_layout` (one of :data:`LAYOUTS`), :func:`segmenter_from_foreign` (unsup-parts, SCOPS),
  :func:`load_backbone_weights` (a ResNet trunk from any of them, or ours) and :func:`init_provenance`
  (the trunk style and normalisation a backbone file was trained with).


Layouts recognised by :func:`detect_layout` (sentinel keys after stripping ``module.``/``_orig_mod.``):

============================  ===========================================================================
``"partdisco"``               our checkpoint: a dict with ``format_version`` and ``model`` (plus
                              ``model_config`` and, from training, ``config``), see :func:`export_checkpoint`
``"unsup_parts"``             a released/trained unsup-parts file: ``{'iter', 'model_state_dict',
                              'optimizer_state_dict'}``; K head channels, no background (method §3.5)
``"scops"``                   a raw state dict with ``layer5.conv2d_list.*``: SCOPS, K + 1 channels with
                              channel 0 = background (method §1.3, §3.5)
``"torchvision_resnet"``      a raw torchvision ResNet state dict (``conv1``, ``layer1..4``, ``fc.*``)
``"caffe_resnet50"``          the Caffe-converted ResNet-50 of AdvSemiSeg/SCOPS (``resnet50-caffe-*.pth``)
``"torchvision_vgg19"``       a raw torchvision VGG19 state dict (``features.0`` ... ``features.34``)
============================  ===========================================================================

The Caffe ResNet-50 uses *exactly* torchvision's key names and shapes (only the stride placement inside
the bottleneck, the expected input normalisation and the BGR channel order differ), so no key or shape
heuristic can tell the two apart. :func:`detect_layout` therefore calls a ResNet file ``caffe_resnet50``
only when the context says so: a ``hint`` (the file name) containing ``"caffe"``, as in the distributed
``resnet50-caffe-22edcc82.pth``; otherwise ``torchvision_resnet``. Callers that know better pass
``source=`` to :func:`load_backbone_weights`.

"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from partdisco.models.build import get_arch
from partdisco.models.checkpoint import is_partdisco_checkpoint
from partdisco.models.segmenter import CAFFE_RGB_QUIRK, IMAGENET, Preprocess, Segmenter
from partdisco.models.weights import (
    CheckpointError,
    clean_state_dict,
    inner_state_dict,
    load_file,
    load_state_dict_strict,
)

logger = logging.getLogger(__name__)

LAYOUTS = ("partdisco", "unsup_parts", "scops", "torchvision_resnet", "caffe_resnet50", "torchvision_vgg19")
HEAD_WEIGHT = "layer5.conv2d_list.0.weight"
_STATE_KEY = {"partdisco": "model", "unsup_parts": "model_state_dict"}  # where a layout keeps the tensors


def _describe_keys(obj: Mapping[str, Any]) -> str:
    keys = [str(k) for k in list(obj)[:8]]
    more = f", ... ({len(obj)} keys)" if len(obj) > 8 else ""
    return ", ".join(keys) + more


def detect_layout(obj: Any, hint: str | None = None) -> str:
    """Recognise the layout of a loaded weight file by its sentinel keys.

    Args:
        obj: what :func:`load_file` returned.
        hint: optional context, usually the file name; a ResNet-50 file whose hint contains ``"caffe"`` is
            ``"caffe_resnet50"`` (see the module docstring for why keys cannot tell).

    Returns:
        One of :data:`LAYOUTS`.

    Raises:
        CheckpointError: an unknown layout; the message shows the first keys.

    Example:
        >>> detect_layout({"format_version": 1, "model": {}, "model_config": {}})
        'partdisco'
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict (a state dict or a checkpoint), got {type(obj).__name__}")
    if is_partdisco_checkpoint(obj):
        return "partdisco"
    if "model_state_dict" in obj:
        return "unsup_parts"
    keys = set(clean_state_dict(obj))
    if HEAD_WEIGHT in keys:
        return "scops"
    if "features.0.weight" in keys:
        if "features.34.weight" in keys and "features.35.weight" not in keys:
            return "torchvision_vgg19"
        raise CheckpointError(
            "looks like a torchvision VGG but not VGG19 (needs features.0 ... features.34 convs): "
            + _describe_keys(obj)
        )
    vit_sentinels = ("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight")
    if any(k.endswith(vit_sentinels) for k in keys):
        raise CheckpointError(
            "holds a ViT backbone (DINO / DINOv2?), not a part segmenter: use it as model.init_from with "
            "model.arch=vit, as model.features_weights with model.features=dino|dinov2, or with "
            "partdisco.load_backbone (docs/BACKBONES.md)"
        )
    if {"conv1.weight", "layer1.0.conv1.weight", "layer4.0.conv1.weight"} <= keys:
        bottleneck = "layer1.0.conv3.weight" in keys
        if bottleneck and hint is not None and "caffe" in hint.lower():
            return "caffe_resnet50"
        return "torchvision_resnet"
    raise CheckpointError(
        f"unknown weight layout (expected one of {LAYOUTS}); first keys: {_describe_keys(obj)}"
    )


def _raw_state_dict(obj: Mapping[str, Any], layout: str, what: str) -> dict[str, Any]:
    """The model's state dict inside a loaded file of a given layout, prefixes stripped."""
    return inner_state_dict(obj, _STATE_KEY.get(layout), layout, what)


def _trunk_style_of(layout: str, obj: Mapping[str, Any]) -> tuple[str | None, Preprocess | None]:
    """The trunk style and input normalisation a file's weights were trained with, where known."""
    if layout in ("unsup_parts", "scops", "caffe_resnet50"):
        return "caffe", CAFFE_RGB_QUIRK
    if layout == "torchvision_resnet":
        return "torchvision", IMAGENET
    config = obj.get("model_config") if layout == "partdisco" else None
    if isinstance(config, Mapping) and "arch" in config:
        try:
            style = str(config.get("trunk_style") or get_arch(str(config["arch"])).trunk.style)
        except ValueError:
            style = None
        pre = config.get("preprocess")
        return style, Preprocess.from_dict(pre) if isinstance(pre, Mapping) else None
    return None, None


def load_backbone_weights(seg: Segmenter, path: str | os.PathLike[str], source: str = "auto") -> str:
    """Initialise the trunk of ``seg`` (``conv1``, ``bn1``, ``layer1..4``) from a local file; the head stays.

    Accepted files: torchvision ResNet-18/50 (``resnet18-*.pth``, ``resnet50-*.pth``), the Caffe ResNet-50
    (``resnet50-caffe-*.pth``, for ``deeplab_r50_2branch``), one of our checkpoints, or an unsup-parts/SCOPS
    checkpoint. ``fc.*`` and ``layer5.*`` in the file are ignored; every trunk tensor must be present with
    the right shape. A file whose trunk style or normalisation differs from ``seg``'s loads, with a logged
    warning.

    Args:
        seg: the segmenter to initialise (modified in place).
        path: the local ``.pth`` file.
        source: ``"auto"`` (:func:`detect_layout`, file name as hint) or a layout name from :data:`LAYOUTS`.

    Returns:
        The layout that was loaded.

    Raises:
        CheckpointError: unreadable file, unknown layout, or a VGG19 file.
        CheckpointMismatchError: the trunk tensors do not match ``seg`` (names listed).
    """
    path = Path(path).expanduser()
    obj = load_file(path)
    if source == "auto":
        layout = detect_layout(obj, hint=path.name)
    elif source in LAYOUTS:
        layout = source
    else:
        raise ValueError(f"source must be 'auto' or one of {LAYOUTS}, got {source!r}")
    what = f"backbone weights {str(path)!r} ({layout})"
    if layout == "torchvision_vgg19":
        raise CheckpointError(
            f"{str(path)!r} holds VGG19 weights: they are the perceptual network, pass them as "
            "model.features_weights, not as backbone weights (model.init_from)"
        )
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what}: expected a dict, got {type(obj).__name__}")
    state = _raw_state_dict(obj, layout, what)
    dropped = sorted(k for k in state if k.startswith(("fc.", "layer5.")))
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "layer5."))}
    load_state_dict_strict(seg, state, what, exclude=("layer5.",))
    style, preprocess = _trunk_style_of(layout, obj)
    if style is not None and style != seg.spec.trunk.style:
        logger.warning(
            "%s were trained for a %s-style trunk but %r is %s-style (stride placement differs)",
            what,
            style,
            seg.arch,
            seg.spec.trunk.style,
        )
    if preprocess is not None and preprocess != seg.preprocess:
        logger.warning(
            "%s expect input normalisation %s but the segmenter uses %s", what, preprocess, seg.preprocess
        )
    logger.info("loaded %s into %s (ignored %d head/fc tensors)", what, seg.arch, len(dropped))
    return layout


def segmenter_from_foreign(obj: Mapping[str, Any], num_parts: int | None = None) -> Segmenter:
    """Build a ``deeplab_r50_2branch`` segmenter from an unsup-parts checkpoint or a SCOPS state dict.

    - unsup-parts (``{'iter', 'model_state_dict', 'optimizer_state_dict'}``): K head channels, no background.
    - a raw state dict with ``layer5.*`` (SCOPS): C head channels = K + 1, channel 0 = background. If the
      caller passes ``num_parts`` equal to C, the raw dict is read as a bare unsup-parts model state instead
      (no background channel).

    Both use the reference's input normalisation (:data:`CAFFE_RGB_QUIRK`; the eval notebooks feed SCOPS
    checkpoints the same input, method §5.1). The weights are strict-loaded.

    Args:
        obj: the loaded file (see :func:`load_file`).
        num_parts: K, to check against the head; ``None`` infers it.

    Returns:
        The :class:`Segmenter` in train mode (call ``.eval()`` for inference).

    Raises:
        CheckpointError: not one of these layouts, or K disagrees with the head.
        CheckpointMismatchError: keys or shapes differ from the reference layout.
    """
    layout = detect_layout(obj)
    if layout not in ("unsup_parts", "scops"):
        raise CheckpointError(f"expected an unsup-parts or SCOPS checkpoint, got a {layout} layout")
    state = _raw_state_dict(obj, layout, layout)
    head = state.get(HEAD_WEIGHT)
    if not isinstance(head, Tensor) or head.dim() != 4:
        raise CheckpointError(f"{layout} checkpoint has no 4-d {HEAD_WEIGHT} tensor")
    channels, in_channels = int(head.shape[0]), int(head.shape[1])
    if in_channels != 1024:
        raise CheckpointError(
            f"{layout} head {HEAD_WEIGHT} reads {in_channels} channels; only the 2-branch layout (1024, the "
            "second half of layer4) is supported, not the 1-branch DeepLab (2048)"
        )
    if layout == "unsup_parts":
        background = False
    else:
        background = num_parts is None or num_parts != channels
    parts = channels - int(background)
    if num_parts is not None and num_parts != parts:
        raise CheckpointError(
            f"{layout} checkpoint head has {channels} channels (K={parts}"
            f"{' + background' if background else ''}), but num_parts={num_parts} was asked for"
        )
    if parts < 1:
        raise CheckpointError(f"{layout} checkpoint head has {channels} channels: no part channel left")
    seg = Segmenter(
        get_arch("deeplab_r50_2branch"), parts, background_channel=background, preprocess=CAFFE_RGB_QUIRK
    )
    load_state_dict_strict(seg, state, f"{layout} checkpoint")
    return seg


def init_provenance(path: str | os.PathLike[str], declared: str = "auto") -> tuple[str, str | None, Any]:
    """Where a backbone file comes from: its layout, the trunk style and the input normalisation it expects.

    Caffe and torchvision ResNet-50 files have the same keys and shapes, so for a raw ResNet file the
    provenance is ``declared`` (``model.init_from_format``) or, with ``"auto"``, the file name: ``caffe`` in
    the name (``resnet50-caffe-22edcc82.pth``) means the Caffe conversion, anything else torchvision.
    Checkpoints (ours, unsup-parts, SCOPS) carry their own.

    Args:
        path: the local weight file.
        declared: ``"auto"``, ``"caffe"`` or ``"torchvision"``.

    Returns:
        ``(layout, trunk_style, preprocess)``; style and preprocess are ``None`` where the file does not say.

    Raises:
        CheckpointError: unreadable file, unknown layout, or ``declared`` contradicts a checkpoint's record.
    """
    if declared not in ("auto", "caffe", "torchvision"):
        raise ValueError(f"model.init_from_format must be auto, caffe or torchvision, got {declared!r}")
    path = Path(path).expanduser()
    obj = load_file(path)
    layout = detect_layout(obj, hint=path.name)
    if layout in ("torchvision_resnet", "caffe_resnet50") and declared != "auto":
        layout = "caffe_resnet50" if declared == "caffe" else "torchvision_resnet"
    style, preprocess = _trunk_style_of(layout, obj)
    if declared != "auto" and style is not None and style != declared:
        raise CheckpointError(
            f"model.init_from_format={declared} but {str(path)!r} is a {layout} file with a {style}-style "
            "trunk; use model.init_from_format=auto"
        )
    return layout, style, preprocess
