"""A segmenter as an ONNX file, and an ONNX file run by onnxruntime as a segmenter.

:func:`export_onnx` writes ``model(x)``: the network on an already normalised image batch ``image`` float32
(B, 3, H, W) -> ``logits`` float32 (B, C, h, w), C = K or K + 1, with the batch and the image size
dynamic. It uses the generic ``torch.onnx.export(dynamo=True)`` path (torch.export, then onnxscript),
with no code per architecture: any segmenter that ``torch.export`` traces with symbolic sizes exports.
What ``partdisco segment`` needs besides the graph travels in the file's ``metadata_props``
(:data:`METADATA_KEYS`): K, the background channel, the input normalisation, the training image size, crop
padding and foreground refinement, and the model config.

:class:`OnnxSegmenter` reads such a file with onnxruntime (``pip install 'partdisco[onnx]'``) and has the
segmenter interface the inference code uses (``num_parts``, ``background_channel``, ``preprocess``,
``inference_defaults``, ``forward``), so ``partdisco segment model.onnx`` runs it
through the same pipeline as a PyTorch checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from partdisco.models.foreground import ForegroundClassifier
from partdisco.models.segmenter import InferenceDefaults, InferenceDefaultsAliases, Preprocess
from partdisco.models.vit import resize_to_patch_multiple
from partdisco.models.weights import CheckpointError

ONNX_OPSET = 18  # ONNX opset of exported files (Resize with antialias needs >= 18)
ONNX_FORMAT_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "image", "logits"
METADATA_PREFIX = "partdisco."
METADATA_KEYS = (
    "format_version",  # ONNX_FORMAT_VERSION
    "arch",  # the architecture name
    "num_parts",  # K
    "background_channel",  # true: channel 0 of the logits is background (C = K + 1)
    "preprocess",  # {"mean": [3], "std": [3], "scale": s}: the input is (rgb01 * scale - mean) / std
    "image_size",  # the training image size (segment's default --size), or null
    "crop_padding",  # the training crop padding (segment's default --padding), or null
    "fg_refine",  # [radius, eps] of the foreground refinement (segment's default --fg-refine), or null
    "model_config",  # seg.config(): what rebuilds the PyTorch module
    "input_multiple",  # the graph takes image sides that are multiples of this (others: resized first)
    "foreground",  # the discovered foreground classifier (ForegroundClassifier.to_dict()), or null
)
OPTIONAL_KEYS = ("foreground",)  # absent from files written before it existed
INSTALL_HINT = "pip install 'partdisco[onnx]' (onnx, onnxruntime, onnxscript)"


def onnx_metadata(seg: nn.Module) -> dict[str, str]:
    """The ``metadata_props`` of an exported segmenter: :data:`METADATA_KEYS` as JSON strings.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> meta = onnx_metadata(create_segmenter("resnet18", num_parts=3, background_channel=True))
        >>> meta["partdisco.num_parts"], meta["partdisco.background_channel"], meta["partdisco.image_size"]
        ('3', 'true', 'null')
    """
    defaults = getattr(seg, "inference_defaults", None) or InferenceDefaults()
    fg_refine = defaults.fg_refine
    values: dict[str, Any] = {
        "format_version": ONNX_FORMAT_VERSION,
        "arch": str(seg.arch),
        "num_parts": int(seg.num_parts),
        "background_channel": bool(seg.background_channel),
        "preprocess": seg.preprocess.to_dict(),
        "image_size": defaults.image_size,
        "crop_padding": defaults.crop_padding,
        "fg_refine": None if fg_refine is None else list(fg_refine),
        "model_config": seg.config(),
        "input_multiple": int(getattr(seg, "input_multiple", 1)),
        "foreground": None if defaults.foreground is None else defaults.foreground.to_dict(),
    }
    return {METADATA_PREFIX + k: json.dumps(v) for k, v in values.items()}


def _import_onnx_tools(what: str) -> None:
    """Raise a one-line ImportError naming the extra when the ONNX tools are missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)}: {INSTALL_HINT}")


def export_onnx(
    seg: nn.Module, path: str | os.PathLike[str], opset: int = ONNX_OPSET, check: bool = True
) -> Path:
    """Write a segmenter as ONNX with a dynamic batch and image size, its description in the metadata.

    Args:
        seg: a segmenter (``Segmenter``, ``ViTSegmenter``, any :class:`PartSegmenter`); exported in eval
            mode, float32, on the CPU (a copy; ``seg`` is not changed).
        path: the ``.onnx`` file (written atomically; parent folders are created).
        opset: the ONNX opset (default :data:`ONNX_OPSET`).
        check: run the written file with onnxruntime on a second image size and batch, and raise when
            its logits differ from PyTorch's by more than 1e-4 (skipped when onnxruntime is missing).

    Returns:
        The written path.

    Raises:
        ImportError: onnx / onnxscript are not installed (names the extra to install).
        RuntimeError: the architecture cannot be exported with symbolic sizes, or the check failed.
    """
    import copy

    _import_onnx_tools("ONNX export")
    from partdisco.fileio import write_bytes

    model = copy.deepcopy(seg).float().cpu().eval()
    # Sides that are multiples of input_multiple: the graph takes them as they are (OnnxSegmenter resizes
    # others first, with the function the PyTorch forward uses), so it holds no branch on the image size.
    multiple = int(getattr(model, "input_multiple", 1))
    smallest = max(2, -(-16 // multiple))  # >= 16 px a side (grids of 1 would be special-cased)
    batch = torch.export.Dim("batch", min=1)
    height, width = torch.export.Dim("height", min=smallest), torch.export.Dim("width", min=smallest)
    if multiple > 1:
        height, width = multiple * height, multiple * width
    example = torch.randn(2, 3, multiple * -(-64 // multiple), multiple * -(-80 // multiple))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # torch.export first, by hand: torch.onnx.export would fall back to tracing with fixed sizes
            exported = torch.export.export(
                model, (example,), dynamic_shapes={"x": {0: batch, 2: height, 3: width}}, strict=False
            )
    except Exception as err:  # torch.export's errors are long: keep the first line
        lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
        why = " ".join(lines[:3]) if lines else type(err).__name__
        raise RuntimeError(
            f"cannot export {getattr(seg, 'arch', type(seg).__name__)} to ONNX with a dynamic batch and "
            f"image size: {why}"
        ) from err
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # not the optional torchvision ops it skips
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                exported,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                optimize=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    for key, value in onnx_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out = write_bytes(Path(path).expanduser(), proto.SerializeToString())
    if check:
        _check_export(model, out)
    return out


def _check_export(model: nn.Module, path: Path, atol: float = 1e-4) -> None:
    """Run the file at another batch and size than the traced example; raise when it disagrees."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return
    x = torch.randn(3, 3, 75, 61, generator=torch.Generator().manual_seed(0))  # no multiple of 2 to 16
    with torch.no_grad():
        expected = model(x).float()
    got = OnnxSegmenter(path)(x)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=0.0):
        worst = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
        raise RuntimeError(f"{path}: onnxruntime disagrees with PyTorch (max |difference| {worst})")


class OnnxSegmenter(InferenceDefaultsAliases, nn.Module):
    """An exported segmenter run by onnxruntime, with the interface the inference code uses.

    ``forward(x)`` takes the normalised image batch (B, 3, H, W) (``preprocess`` applied, as for a
    PyTorch segmenter) on any device and returns float32 logits (B, C, h, w) on the same device; the
    network runs on the CPU (onnxruntime's CPU execution provider).

    Args:
        path: an ``.onnx`` file written by :func:`export_onnx`.
        threads: onnxruntime intra-op threads (None: torch's thread count, so ``OMP_NUM_THREADS`` and
            ``torch.set_num_threads`` rule both runtimes alike).

    Raises:
        ImportError: onnxruntime is not installed.
        CheckpointError: the file is not an ONNX model or was not written by :func:`export_onnx`.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(f"running an ONNX model needs onnxruntime: {INSTALL_HINT}") from None
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {str(self.path)!r} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(f"{str(self.path)!r}: not a readable ONNX model ({first})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        missing = [k for k in METADATA_KEYS if METADATA_PREFIX + k not in meta and k not in OPTIONAL_KEYS]
        if missing:
            raise CheckpointError(
                f"{str(self.path)!r}: an ONNX model without partdisco's metadata (missing {missing}); "
                "export one with `partdisco export RUN model.onnx`"
            )
        present = [k for k in METADATA_KEYS if METADATA_PREFIX + k in meta]
        values = {k: json.loads(meta[METADATA_PREFIX + k]) for k in present}
        if values["format_version"] != ONNX_FORMAT_VERSION:
            raise CheckpointError(
                f"{str(self.path)!r}: partdisco ONNX format {values['format_version']}, this version "
                f"reads {ONNX_FORMAT_VERSION}"
            )
        self.metadata: dict[str, Any] = values
        self.arch: str = values["arch"]
        self.num_parts: int = int(values["num_parts"])
        self.background_channel: bool = bool(values["background_channel"])
        self.out_channels = self.num_parts + int(self.background_channel)
        self.preprocess = Preprocess.from_dict(values["preprocess"])
        fg_refine = values["fg_refine"]
        self.inference_defaults = InferenceDefaults(
            image_size=values["image_size"],
            crop_padding=values["crop_padding"],
            fg_refine=None if fg_refine is None else (float(fg_refine[0]), float(fg_refine[1])),
            foreground=_foreground(values.get("foreground"), self.path),
        )
        self.input_multiple = int(values["input_multiple"])

    def forward(self, x: Tensor) -> Tensor:
        """Logits (B, C, h, w) float32 of a normalised image batch (B, 3, H, W)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a normalised image batch (B, 3, H, W), got shape {tuple(x.shape)}")
        x = resize_to_patch_multiple(x.detach().to("cpu", torch.float32), self.input_multiple)
        array = x.contiguous().numpy()
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: array})
        return torch.from_numpy(logits).to(x.device)

    def config(self) -> dict[str, Any]:
        """The exported segmenter's config (what rebuilds the PyTorch module)."""
        return dict(self.metadata["model_config"])

    def extra_repr(self) -> str:
        """File name, arch and K in ``print(model)``."""
        return f"{self.path.name}, arch={self.arch}, num_parts={self.num_parts}"


def _foreground(values: Any, path: Path) -> ForegroundClassifier | None:
    """The metadata's discovered foreground classifier (files from before it have none), checked."""
    if values is None:
        return None
    try:
        return ForegroundClassifier.from_dict(values, f"{str(path)!r}: metadata foreground")
    except ValueError as err:
        raise CheckpointError(str(err)) from err
