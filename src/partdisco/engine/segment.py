"""Part maps for image files: collect the inputs, run the segmenter in batches, write the outputs, resume.

Pipeline per image (sizes H x W = the image after EXIF rotation):

1. ``read_image`` -> uint8 (H, W, 3) RGB (grayscale, RGBA, 16-bit, EXIF handled in ``data.io``).
2. Resize so the shorter side is ``size`` (bilinear, area-aware when shrinking) -> (h', w').
3. ``model(preprocess(x))`` -> logits (B, C, h, w) at stride 8, C = K or K + 1; bilinear upsampling to
   (h', w') with ``align_corners=TRAIN_ALIGN`` (the training convention), softmax -> probabilities.
4. Labels at (h', w'): ``argmax + 1`` over the K parts, or ``argmax`` over K + 1 channels when the
   model's channel 0 is background; then back to (H, W) by nearest (labels) and bilinear (probabilities,
   ``align_corners=RESIZE_ALIGN``: both resizes of this file map pixel areas, as PIL does).
5. Background (0) from, in order: a mask, the model's background channel, the ``border`` heuristic on
   request; otherwise none (the reference model has no notion of background: every pixel is a part).

Outputs under ``out_dir`` (NAME = the input's path relative to the folder it was found in, no suffix):
``labels/NAME.png`` (palette PNG, uint8 labels 0..K), ``color/NAME.png``, ``overlay/NAME.png``, optional
``probs/NAME.npz``, plus ``parts.json`` and ``index.html``. Every file is written atomically; an image is
skipped on a rerun when all its files and its ``parts.json`` entry exist (docs/SEGMENT.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partdisco.data.io import IMAGE_EXTENSIONS, ImageReadError, check_same_size, read_image, read_mask
from partdisco.data.transforms import RESIZE_ALIGN_CORNERS
from partdisco.engine.crop import crop_input, object_crop, paste_probs
from partdisco.engine.refine import refine_probs
from partdisco.engine.runfolder import require_writable_dir
from partdisco.engine.train import TRAIN_ALIGN
from partdisco.metrics.keypoints import part_centroids
from partdisco.visualise import (
    PALETTE,
    atomic_write,
    colorize,
    overlay,
    resize_labels,
    save_label_png,
    save_png,
    write_contact_sheet,
)

logger = logging.getLogger(__name__)

RESIZE_ALIGN = RESIZE_ALIGN_CORNERS  # image <-> processing size: pixel-area mapping (PIL convention)
BACKGROUND_MODES = ("auto", "none", "border")
CROP_MODES = ("auto", "object", "none")
BORDER_RING = 0.05  # border heuristic: ring width as a fraction of the shorter side (at least 1 px)
BORDER_SHARE = 0.5  # ... a part covering more than this share of the ring is background
PARTS_JSON_VERSION = 1
MAX_WORKING_PIXELS = 4096 * 4096  # larger images are shrunk while decoding: memory stays bounded
MAX_PARTS = 255  # labels are stored as uint8
BORDER_NOT_FOUND = "--background border found no part covering most of the image border: no background"
THUMB_SIDE = 320  # longer side of the input thumbnails that index.html shows (inside --out: portable)
DEFAULT_IMAGE_SIZE = 256  # ref: input_size 256; used only when a model does not know its training size
DEFAULT_PADDING = 0.05  # ref: cub.py padding_frac; used only when a model does not know its training crop
DEFAULT_FG_REFINE = (0.0625, 0.001)  # eval.fg_refine_radius / _eps; for models that do not know theirs
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class InputImage:
    """One image file to segment.

    Attributes:
        path: the file (absolute, resolved).
        name: output name: the path relative to the folder it was found in, POSIX, without its suffix
            (``sub/cat``); outputs are ``labels/NAME.png`` etc.
    """

    path: Path
    name: str


@dataclass
class PartMaps:
    """The segmentation of one image, at the image's size (H, W).

    Attributes:
        labels: uint8 (H, W), 0 = background, 1..K = parts.
        probs: float32 (C, H, W) softmax over the model's C channels (C = K, or K + 1 with channel 0 =
            background when the model has a background channel), or None when not requested.
        centroids: float32 (K, 2) soft part centroids (x, y) in pixels of the image (foreground-weighted).
        background: where background came from: ``"mask"``, ``"model"``, ``"border"`` or ``"none"``.
        note: why the background is not what was asked for, e.g. ``--background border`` that found no part
            covering most of the border (then ``background`` is ``"none"``); empty otherwise.
    """

    labels: np.ndarray
    probs: np.ndarray | None
    centroids: np.ndarray
    background: str
    note: str = ""


@dataclass
class SegmentSummary:
    """What :func:`segment_files` did.

    Attributes:
        out_dir: the output folder.
        written: names segmented in this run.
        skipped: names whose outputs existed already (resumed).
        failed: unreadable files: path -> reason.
        notes: names whose background differs from what was asked for -> why (:attr:`PartMaps.note`).
        parts_json: path of ``parts.json``.
        index_html: path of ``index.html``.
    """

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    parts_json: Path | None = None
    index_html: Path | None = None


# ----------------------------------------------------------------------------------------------- inputs


def _has_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _glob_root(pattern: Path) -> Path:
    """The longest leading part of a glob pattern without wildcards (the folder names are relative to)."""
    parts: list[str] = []
    for part in pattern.parts:
        if _has_glob(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted, hidden files and folders left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


def _is_under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def _strip_suffix(rel: Path) -> str:
    return rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()


def _unique_names(files: list[tuple[Path, Path]]) -> list[str]:
    """Unique output names for (file, root) pairs.

    Relative to the root; for collisions relative to the colliding files' common folder, then with the
    file suffix kept, then with a ``~N`` counter.
    """
    names = [_strip_suffix(f.relative_to(root)) for f, root in files]

    def collisions() -> dict[str, list[int]]:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, n in enumerate(names):
            groups[n].append(i)
        return {n: idx for n, idx in groups.items() if len(idx) > 1}

    for idx in collisions().values():
        common = Path(os.path.commonpath([str(files[i][0].parent) for i in idx]))
        for i in idx:
            names[i] = _strip_suffix(files[i][0].relative_to(common))
    for idx in collisions().values():
        for i in idx:
            names[i] = f"{names[i]}{files[i][0].suffix}"
    for idx in collisions().values():
        for count, i in enumerate(idx[1:], start=2):
            names[i] = f"{names[i]}~{count}"
    return names


def collect_images(
    inputs: Sequence[str | os.PathLike[str]], exclude: Sequence[str | os.PathLike[str]] = ()
) -> list[InputImage]:
    """Expand files, folders (recursively) and glob patterns into a list of images with unique names.

    Folders and glob matches keep files whose suffix is in :data:`partdisco.data.io.IMAGE_EXTENSIONS`;
    a file named explicitly is taken whatever its suffix (a non-image is reported when it is read). Hidden
    files and folders are skipped, a file given twice is taken once, and files under ``exclude`` (the
    output folder) are left out.

    Args:
        inputs: paths of files or folders, or glob patterns (``**`` recurses).
        exclude: folders whose files are never inputs.

    Returns:
        The images in input order (folders sorted), each with its output name (see :class:`InputImage`).

    Raises:
        FileNotFoundError: an input is neither a file, a folder nor a glob pattern.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "sub").mkdir()
        >>> Image.new("RGB", (4, 4)).save(root / "sub" / "a.png")
        >>> [item.name for item in collect_images([root])]
        ['sub/a']
    """
    excluded = [Path(e).expanduser().resolve() for e in exclude]
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            candidates, root = _walk_images(path), path
        elif path.is_file():
            candidates, root = [path], path.parent
        elif _has_glob(str(given)):
            root = _glob_root(path)
            candidates = []
            for match in sorted(root.glob(path.relative_to(root).as_posix())):
                if match.is_dir():
                    candidates += _walk_images(match)
                elif match.is_file() and match.suffix.lower() in IMAGE_EXTENSIONS:
                    candidates.append(match)
            if not candidates:
                logger.warning("input pattern %r matches no image files", str(given))
        else:
            raise FileNotFoundError(
                f"input {str(given)!r} does not exist (expected an image file, a folder or a glob pattern)"
            )
        root = root.resolve()
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved in seen or _is_under(resolved, excluded):
                continue
            seen.add(resolved)
            # Keep the name relative to the root even when the file is a symlink pointing elsewhere.
            pairs.append((resolved, root) if root in resolved.parents else (resolved, resolved.parent))
    names = _unique_names(pairs)
    return [InputImage(path, name) for (path, _), name in zip(pairs, names)]


def default_out_dir(inputs: Sequence[str | os.PathLike[str]]) -> Path:
    """The output folder when none is given: ``<folder>_parts`` next to the folder of the first input.

    The folder is the input itself when it is a folder, the file's folder for a file, the fixed leading
    part of a glob pattern otherwise: ``photos/`` -> ``photos_parts/``, ``shots/a.jpg`` -> ``shots_parts/``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "photos"; d.mkdir()
        >>> default_out_dir([d]) == d.parent / "photos_parts"
        True
    """
    if not inputs:
        raise ValueError("no inputs given")
    first = Path(inputs[0]).expanduser()
    if first.is_dir():
        folder = first
    elif first.is_file():
        folder = first.parent
    else:
        folder = _glob_root(first)
    folder = folder.resolve()
    return folder.parent / f"{folder.name or 'root'}_parts"


def find_mask(masks_dir: str | os.PathLike[str], item: InputImage) -> Path | None:
    """The mask file of an image: ``MASKS/NAME.<ext>``, else ``MASKS/<file stem>.<ext>``.

    ``.png`` is tried first, then the other :data:`IMAGE_EXTENSIONS`.

    Args:
        masks_dir: the masks folder.
        item: the image.

    Returns:
        The mask path, or None when there is none.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "cat.png").write_bytes(b"")
        0
        >>> find_mask(d, InputImage(Path("/x/cat.jpg"), "cat")).name
        'cat.png'
    """
    folder = Path(masks_dir)
    suffixes = (".png", *(s for s in IMAGE_EXTENSIONS if s != ".png"))
    for base in dict.fromkeys((item.name, item.path.stem)):
        for suffix in suffixes:
            for candidate in (folder / f"{base}{suffix}", folder / f"{base}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


# ----------------------------------------------------------------------------------------------- model


def inference_size(model: nn.Module, size: int | None = None) -> int:
    """The shorter image side fed to the network: ``size`` when given, else the model's training size.

    The one place that picks the default, for :func:`partdisco.segment`, ``partdisco segment`` and
    :func:`segment_files`: ``model.image_size`` (the ``data.image_size`` its checkpoint was trained at),
    else :data:`DEFAULT_IMAGE_SIZE` (released checkpoints, fresh models).

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3)
        >>> inference_size(seg), inference_size(seg, 64)
        (256, 64)
        >>> seg.image_size = 96
        >>> inference_size(seg)
        96
    """
    if size is not None:
        return int(size)
    trained = getattr(model, "image_size", None)
    return int(trained) if trained else DEFAULT_IMAGE_SIZE


def inference_padding(model: nn.Module, padding: float | None = None) -> float:
    """The object crop's padding per side: ``padding`` when given, else the model's training padding.

    The one place that picks the default, as :func:`inference_size` does for the size: ``model.crop_padding``
    (the ``data.padding_frac`` its checkpoint was trained with), else :data:`DEFAULT_PADDING`.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3)
        >>> inference_padding(seg), inference_padding(seg, 0.2)
        (0.05, 0.2)
        >>> seg.crop_padding = 0.1
        >>> inference_padding(seg)
        0.1
    """
    if padding is not None:
        return float(padding)
    trained = getattr(model, "crop_padding", None)
    return float(trained) if trained is not None else DEFAULT_PADDING


def inference_fg_refine(
    model: nn.Module, radius: float | tuple[float, float] | None = None
) -> tuple[float, float]:
    """The predicted foreground's refinement ``(radius, eps)``: ``radius`` when given, else the model's.

    The one place that picks the default, as :func:`inference_padding` does for the crop: the model's
    ``fg_refine`` (``eval.fg_refine_radius`` / ``eval.fg_refine_eps`` of its checkpoint), else
    :data:`DEFAULT_FG_REFINE`. A given radius keeps the model's ``eps`` (a given ``(radius, eps)`` pair
    replaces both); radius 0 turns the refinement off.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3, background_channel=True)
        >>> inference_fg_refine(seg), inference_fg_refine(seg, 0.0)
        ((0.0625, 0.001), (0.0, 0.001))
        >>> seg.fg_refine = (0.1, 0.01)
        >>> inference_fg_refine(seg), inference_fg_refine(seg, (0.05, 0.002))
        ((0.1, 0.01), (0.05, 0.002))
    """
    trained = getattr(model, "fg_refine", None)
    default_radius, eps = trained if trained is not None else DEFAULT_FG_REFINE
    if isinstance(radius, (tuple, list)):
        radius, eps = radius
    radius = default_radius if radius is None else float(radius)
    if not 0.0 <= radius < 0.5:
        raise ValueError(f"fg_refine must be in [0, 0.5) (0 = off), got {radius}")
    if not eps > 0:
        raise ValueError(f"the foreground refinement's eps must be > 0, got {eps}")
    return float(radius), float(eps)


def _predict(
    model: nn.Module, x: torch.Tensor, refine: tuple[float, float], rows: Sequence[bool] | None = None
) -> torch.Tensor:
    """:func:`predict_probs`, with the predicted foreground refined (:func:`.refine.refine_probs`).

    Only a model with a background channel is refined, and only the ``rows`` whose background is the
    model's (all when None); ``x`` (B, 3, H, W) in [0, 1] is the guide.
    """
    probs = predict_probs(model, x)  # (B, C, H, W)
    if not bool(getattr(model, "background_channel", False)) or refine[0] <= 0:
        return probs
    keep = list(range(len(x))) if rows is None else [j for j, r in enumerate(rows) if r]
    if keep:
        idx = torch.tensor(keep, device=probs.device)
        probs[idx] = refine_probs(probs[idx], x[idx], *refine)
    return probs


def processing_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The network input size: the shorter side becomes ``size``, the aspect ratio is kept.

    Args:
        height: image height H >= 1.
        width: image width W >= 1.
        size: target of the shorter side, >= 1.

    Returns:
        (h', w') with ``min(h', w') == size``.

    Example:
        >>> processing_size(300, 400, 256), processing_size(100, 50, 64)
        ((256, 341), (128, 64))
    """
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"processing_size: need positive sizes, got H={height}, W={width}, size={size}")
    if height <= width:
        return size, max(1, round(width * size / height))
    return max(1, round(height * size / width)), size


def image_to_tensor(
    image: np.ndarray, size: tuple[int, int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Resize a uint8 RGB image to the processing size as a float tensor.

    Args:
        image: uint8 (H, W, 3) RGB.
        size: (h', w').
        device: where to resize (the uint8 image is moved there first: 4x less to copy than floats).

    Returns:
        float32 (3, h', w') in [0, 1] on ``device`` (bilinear, antialiased when shrinking).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected image uint8 (H, W, 3), got {image.dtype} {tuple(image.shape)}")
    x = torch.from_numpy(np.require(image, requirements=["C", "W"])).to(device)  # (H, W, 3) uint8
    x = x.permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    if tuple(x.shape[1:]) == tuple(size):
        return x
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=RESIZE_ALIGN, antialias=True)
    return x[0].clamp_(0.0, 1.0)  # (3, h', w')


@torch.no_grad()
def predict_probs(model: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """Part probabilities at the input size.

    Args:
        model: a Segmenter (``preprocess`` attribute, ``forward -> (B, C, h, w)`` logits).
        images01: float (B, 3, H, W) RGB in [0, 1] on the model's device.

    Returns:
        float32 (B, C, H, W): softmax over channels of the logits upsampled bilinearly with
        ``align_corners=TRAIN_ALIGN``.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3).eval()
        >>> p = predict_probs(seg, torch.rand(2, 3, 32, 48))
        >>> tuple(p.shape), bool(torch.allclose(p.sum(1), torch.ones(2, 32, 48)))
        ((2, 3, 32, 48), True)
    """
    if images01.ndim != 4 or images01.shape[1] != 3:
        raise ValueError(f"predict_probs: expected images01 (B, 3, H, W), got {tuple(images01.shape)}")
    H, W = images01.shape[-2:]
    logits = model(model.preprocess(images01)).float()  # (B, C, h, w)
    logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=TRAIN_ALIGN)  # (B, C, H, W)
    return logits.softmax(dim=1)


def labels_from_probs(probs: torch.Tensor, background_channel: bool, use_background: bool) -> torch.Tensor:
    """Hard labels from probabilities.

    Args:
        probs: float (B, C, H, W).
        background_channel: channel 0 of ``probs`` is background (C = K + 1).
        use_background: let that channel win pixels (label 0); False labels every pixel with a part.

    Returns:
        int64 (B, H, W): ``argmax`` (0 = background) with a used background channel, else
        ``argmax over the K parts + 1``.

    Example:
        >>> p = torch.tensor([[0.6, 0.3, 0.1]]).view(1, 3, 1, 1)
        >>> labels_from_probs(p, True, True).item(), labels_from_probs(p, True, False).item()
        (0, 1)
    """
    if background_channel and use_background:
        return probs.argmax(dim=1)
    parts = probs[:, 1:] if background_channel else probs  # (B, K, H, W)
    return parts.argmax(dim=1) + 1


def border_background_parts(
    labels: np.ndarray, ring: float = BORDER_RING, share: float = BORDER_SHARE
) -> list[int]:
    """The ``border`` heuristic: parts that cover most of a ring along the image border are background.

    Objects are usually framed by background, so the part that fills the image border is taken to be it.
    With ``share >= 0.5`` at most one part qualifies; a centred object whose parts touch the border only
    a little keeps all its parts.

    Args:
        labels: (H, W) integer part labels (1..K).
        ring: ring width as a fraction of the shorter side (at least one pixel).
        share: a part covering more than this share of the ring's pixels is background, in (0, 1).

    Returns:
        The background part labels, sorted (possibly empty).

    Example:
        >>> lab = np.ones((10, 10), dtype=np.int64); lab[3:7, 3:7] = 2
        >>> border_background_parts(lab)
        [1]
    """
    if labels.ndim != 2:
        raise ValueError(f"border_background_parts: expected labels (H, W), got {labels.shape}")
    if not 0.0 < share < 1.0:
        raise ValueError(f"border_background_parts: share must be in (0, 1), got {share}")
    H, W = labels.shape
    width = max(1, round(ring * min(H, W)))
    ring_mask = np.ones((H, W), dtype=bool)
    ring_mask[width : H - width, width : W - width] = False
    counts = np.bincount(labels[ring_mask].ravel())
    total = int(ring_mask.sum())
    return [int(k) for k in np.nonzero(counts > share * total)[0] if k > 0]


def _background_mode(background: str, has_mask: bool, background_channel: bool) -> str:
    if has_mask:
        return "mask"
    if background == "border":
        return "border"
    if background == "auto" and background_channel:
        return "model"
    return "none"


def _own_background(
    background: str, masks: Sequence[np.ndarray | None] | None, i: int, background_channel: bool
) -> bool:
    """Whether image ``i``'s background is the model's prediction (then its foreground is refined)."""
    has_mask = masks is not None and masks[i] is not None
    return _background_mode(background, has_mask, background_channel) == "model"


def _check_background(background: str) -> None:
    if background not in BACKGROUND_MODES:
        raise ValueError(f"background must be one of {BACKGROUND_MODES}, got {background!r}")


def _postprocess(
    probs: torch.Tensor,
    size: tuple[int, int],
    mask: np.ndarray | None,
    mode: str,
    background_channel: bool,
    with_probs: bool,
) -> PartMaps:
    """One image's (C, h', w') probabilities -> :class:`PartMaps` at (H, W)."""
    H, W = size
    C, h, w = probs.shape
    labels = labels_from_probs(probs[None], background_channel, use_background=mode == "model")[0]  # (h, w)
    parts = probs[1:] if background_channel else probs  # (K, h, w)
    fg = None
    note = ""
    if mode == "border":
        labels_np = labels.cpu().numpy()
        bg_parts = border_background_parts(labels_np)
        if bg_parts:
            bg = torch.from_numpy(np.isin(labels_np, bg_parts)).to(labels.device)  # (h, w)
            labels = labels.masked_fill(bg, 0)
            fg = (labels > 0).float()  # (h, w)
        else:  # say so rather than claim a border background that is not there
            mode, note = "none", BORDER_NOT_FOUND
    elif mode == "mask":
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(probs.device)  # (H, W)
        fg = F.interpolate(mask_t[None, None], size=(h, w), mode="bilinear", align_corners=RESIZE_ALIGN)[0, 0]
    centroids = part_centroids(parts[None], None if fg is None else fg[None, None])[0]  # (K, 2) at (h, w)
    centroids = centroids * torch.tensor([W / w, H / h], device=centroids.device)  # (K, 2) at (H, W)
    labels_full = resize_labels(labels.cpu().numpy(), (H, W)).astype(np.uint8)  # (H, W)
    if mode == "mask":
        labels_full[mask <= 0.5] = 0
    probs_full = None
    if with_probs:
        probs_full = F.interpolate(
            probs[None], size=(H, W), mode="bilinear", align_corners=RESIZE_ALIGN, antialias=H < h or W < w
        )[0]  # (C, H, W)
        probs_full = (probs_full / probs_full.sum(0, keepdim=True).clamp_min(1e-12)).cpu().numpy()
    return PartMaps(labels_full, probs_full, centroids.cpu().numpy().astype(np.float32), mode, note)


def segment_images(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    *,
    size: int | None = None,
    background: str = "auto",
    batch_size: int = 8,
    with_probs: bool = True,
    crop: str = "auto",
    padding: float | None = None,
    fg_refine: float | tuple[float, float] | None = None,
) -> list[PartMaps]:
    """Segment in-memory images of any sizes, batching those with the same processing size.

    Each image's result does not depend on the batch it ran in (no padding; the model runs in eval mode,
    restored afterwards).

    Object-centric inference (``crop="object"``, or ``"auto"`` when there is a foreground): the image is
    cropped around its foreground as training crops do (box of the foreground, ``padding`` per side,
    squared: :mod:`partdisco.engine.crop`), the crop is segmented at ``size`` x ``size`` and the
    probabilities are pasted back at the image's size. The foreground is the mask when one is given, else
    the model's predicted foreground from a first pass on the whole image (two passes). Without either,
    or when it is empty, the whole image is segmented.

    Args:
        model: a Segmenter on its device; inputs follow its device.
        images: uint8 (H, W, 3) RGB arrays.
        masks: optional foreground per image, float (H, W) in [0, 1] (> 0.5 = foreground) or None.
        size: shorter side of the network input (see :func:`processing_size`); None = the model's
            training size (:func:`inference_size`).
        background: ``"auto"`` (mask, else the model's background channel, else none), ``"none"`` (every
            unmasked pixel is a part) or ``"border"`` (:func:`border_background_parts`); a mask always wins.
        batch_size: images per forward pass, >= 1.
        with_probs: also return probabilities at image size.
        crop: ``"auto"`` (object crop when a mask or a predicted foreground exists), ``"object"`` (the
            same) or ``"none"`` (always the whole image, shorter side resized to ``size``).
        padding: per-side padding of the object crop; None = the checkpoint's ``data.padding_frac``
            (:func:`inference_padding`).
        fg_refine: the model's predicted foreground is refined along the colour edges of the network input
            (guided filter, :mod:`partdisco.engine.refine`) with this window radius (fraction of the
            input's shorter side) in both passes; 0 = off; None = the checkpoint's
            ``eval.fg_refine_radius`` (:func:`inference_fg_refine`; a ``(radius, eps)`` pair sets the
            filter's ridge too). Only models with a background channel, only images whose background is
            the model's.

    Returns:
        One :class:`PartMaps` per image, in input order.

    Raises:
        ValueError: bad arguments, a non-RGB image, a mask of another size, or K > 255.

    Example:
        >>> from partdisco.models import create_segmenter
        >>> seg = create_segmenter("resnet18", num_parts=3)
        >>> out = segment_images(seg, [np.zeros((20, 30, 3), np.uint8)], size=32)
        >>> out[0].labels.shape, out[0].labels.dtype, out[0].probs.shape, out[0].background
        ((20, 30), dtype('uint8'), (3, 20, 30), 'none')
    """
    _check_background(background)
    size = inference_size(model, size)
    padding = inference_padding(model, padding)
    refine = inference_fg_refine(model, fg_refine)
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    if not 0.0 <= padding < 1.0:
        raise ValueError(f"padding must be in [0, 1), got {padding}")
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got size={size}, batch_size={batch_size}")
    num_parts, background_channel = int(model.num_parts), bool(model.background_channel)
    if num_parts > MAX_PARTS:
        raise ValueError(f"the model has {num_parts} parts; label maps are uint8, so at most {MAX_PARTS}")
    if masks is not None and len(masks) != len(images):
        raise ValueError(f"got {len(masks)} masks for {len(images)} images")
    for i, image in enumerate(images):
        if not (
            isinstance(image, np.ndarray)
            and image.ndim == 3
            and image.shape[2] == 3
            and image.dtype == np.uint8
        ):
            raise ValueError(
                f"image {i}: expected uint8 (H, W, 3), got {getattr(image, 'dtype', type(image))} "
                f"{tuple(getattr(image, 'shape', ()))}"
            )
        mask = None if masks is None else masks[i]
        if mask is not None and tuple(mask.shape) != tuple(image.shape[:2]):
            raise ValueError(
                f"image {i}: mask {tuple(mask.shape)} must have the image's size {image.shape[:2]}"
            )
    device = next(model.parameters()).device
    object_crops = crop != "none"
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        if object_crops and masks is not None and masks[i] is not None:
            continue  # the mask gives the crop: no whole-image pass needed
        groups[processing_size(image.shape[0], image.shape[1], size)].append(i)
    results: list[PartMaps | None] = [None] * len(images)
    was_training = model.training
    model.eval()
    try:
        for proc_size, indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                x = torch.stack([image_to_tensor(images[i], proc_size, device) for i in chunk])
                own_bg = [_own_background(background, masks, i, background_channel) for i in chunk]
                probs = _predict(model, x, refine, own_bg)  # (B, C, h', w')
                for j, i in enumerate(chunk):
                    mask = None if masks is None else masks[i]
                    mode = _background_mode(background, mask is not None, background_channel)
                    results[i] = _postprocess(
                        probs[j], images[i].shape[:2], mask, mode, background_channel, with_probs
                    )
        if object_crops:
            _object_pass(
                model, images, masks, results, size, background, batch_size, with_probs, padding, device,
                refine,
            )  # fmt: skip
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]


def _object_pass(
    model: nn.Module,
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None,
    results: list[PartMaps | None],
    size: int,
    background: str,
    batch_size: int,
    with_probs: bool,
    padding: float,
    device: torch.device,
    refine: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Second pass of object-centric inference: replace ``results[i]`` by the crop-and-paste maps."""
    background_channel = bool(model.background_channel)
    jobs: list[tuple[int, np.ndarray]] = []
    for i, image in enumerate(images):
        mask = None if masks is None else masks[i]
        if mask is not None:
            fg = mask
        elif results[i] is not None and results[i].background == "model":  # type: ignore[union-attr]
            fg = results[i].labels > 0  # type: ignore[union-attr]
        else:
            continue
        box = object_crop(fg, padding)
        if box is None:  # an empty foreground: keep the whole-image maps
            if mask is not None:
                logger.warning("image %d: its mask is empty (no foreground pixel): all background", i)
                groups_size = processing_size(image.shape[0], image.shape[1], size)
                probs = predict_probs(model, image_to_tensor(image, groups_size, device)[None])[0]
                mode = _background_mode(background, True, background_channel)
                results[i] = _postprocess(probs, image.shape[:2], mask, mode, background_channel, with_probs)
            continue
        jobs.append((i, box))
    outside = None
    if background_channel:
        outside = torch.zeros(int(model.num_parts) + 1, device=device)
        outside[0] = 1.0  # outside the object's crop is background
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        x = torch.stack([crop_input(images[i], box, size, device) for i, box in chunk])  # (B, 3, S, S)
        own_bg = [_own_background(background, masks, i, background_channel) for i, _ in chunk]
        probs = _predict(model, x, refine, own_bg)  # (B, C, S, S)
        for j, (i, box) in enumerate(chunk):
            H, W = images[i].shape[:2]
            mask = None if masks is None else masks[i]
            mode = _background_mode(background, mask is not None, background_channel)
            pasted = paste_probs(probs[j], box, (H, W), outside if mode == "model" else None)  # (C, H, W)
            results[i] = _postprocess(pasted, (H, W), mask, mode, background_channel, with_probs)


# ----------------------------------------------------------------------------------------------- files


def output_paths(out_dir: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Where the outputs of image NAME go.

    Args:
        out_dir: the output folder.
        name: the image's output name (:attr:`InputImage.name`).

    Returns:
        ``{"labels", "color", "overlay", "probs", "input"}`` -> paths (``probs`` is ``.npz``, ``input`` the
        ``.jpg`` thumbnail of the input that ``index.html`` shows, the others ``.png``).

    Example:
        >>> output_paths("out", "sub/cat")["overlay"].as_posix()
        'out/overlay/sub/cat.png'
    """
    out = Path(out_dir)
    paths = {kind: out / kind / f"{name}.png" for kind in ("labels", "color", "overlay")}
    paths["probs"] = out / "probs" / f"{name}.npz"
    paths["input"] = out / "input" / f"{name}.jpg"
    return paths


def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(binary_file)`` on a temp file next to ``path``, then move it onto ``path`` atomically."""

    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write(path, to_file)


def _write_thumbnail(path: Path, image: np.ndarray) -> None:
    """The input as a small JPEG inside the output folder, so ``index.html`` works when the folder moves."""
    from PIL import Image

    thumb = Image.fromarray(image)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda f: thumb.save(f, format="JPEG", quality=85))


def write_outputs(
    out_dir: Path, item: InputImage, image: np.ndarray, maps: PartMaps, save_probs: bool, alpha: float = 0.5
) -> dict[str, Any]:
    """Write one image's files and return its ``parts.json`` entry.

    Args:
        out_dir: the output folder.
        item: the image.
        image: uint8 (H, W, 3) RGB, as segmented.
        maps: its segmentation at (H, W).
        save_probs: also write ``probs/NAME.npz`` (needs ``maps.probs``).
        alpha: part opacity in the overlay.

    Returns:
        The entry (see docs/SEGMENT.md for the schema).
    """
    paths = output_paths(out_dir, item.name)
    _write_thumbnail(paths["input"], image)
    save_label_png(paths["labels"], maps.labels)
    save_png(paths["color"], colorize(maps.labels))
    save_png(paths["overlay"], overlay(image, maps.labels, alpha=alpha))
    if save_probs:
        if maps.probs is None:
            raise ValueError("save_probs needs PartMaps.probs; segment with with_probs=True")
        probs16 = maps.probs.astype(np.float16)  # (C, H, W)
        flag = np.bool_(maps.probs.shape[0] != len(maps.centroids))
        _write_atomic(
            paths["probs"], lambda f: np.savez_compressed(f, probs=probs16, background_channel=flag)
        )
    return part_entry(
        item, maps, {k: p.relative_to(out_dir).as_posix() for k, p in paths.items()}, save_probs
    )


def part_entry(item: InputImage, maps: PartMaps, files: dict[str, str], with_probs: bool) -> dict[str, Any]:
    """The ``parts.json`` entry of one image: size, present parts, areas and centroids.

    Args:
        item: the image.
        maps: its segmentation.
        files: output paths relative to the output folder (``labels``, ``color``, ``overlay``, ``probs``).
        with_probs: whether ``probs`` was written.

    Returns:
        ``{"source", "height", "width", "background", "files", "present", "area", "foreground_area",
        "centroid"}``: ``area[k-1]`` is the pixel count of part k, ``foreground_area`` the count of
        non-background pixels, ``centroid[k-1]`` its (x, y) in pixels or None when absent.
    """
    K = len(maps.centroids)
    area = np.bincount(maps.labels.ravel(), minlength=K + 1)[1 : K + 1]
    present = [k + 1 for k in range(K) if area[k] > 0]
    centroid = [
        [round(float(x), 2), round(float(y), 2)] if area[k] > 0 else None
        for k, (x, y) in enumerate(maps.centroids)
    ]
    entry = {
        "source": str(item.path),
        "height": int(maps.labels.shape[0]),
        "width": int(maps.labels.shape[1]),
        "background": maps.background,
        "files": {k: v for k, v in files.items() if k != "probs" or with_probs},
        "present": present,
        "area": [int(a) for a in area],
        "foreground_area": int(area.sum()),  # pixels not labelled 0 (background)
        "centroid": centroid,
    }
    if maps.note:
        entry["background_note"] = maps.note
    return entry


def _is_done(out_dir: Path, item: InputImage, entries: dict[str, Any], save_probs: bool) -> bool:
    entry = entries.get(item.name)
    if entry is None or entry.get("source") != str(item.path):
        return False
    paths = output_paths(out_dir, item.name)
    kinds = ("labels", "color", "overlay", "input", "probs")[: 5 if save_probs else 4]
    return all(paths[k].is_file() for k in kinds)


def read_parts_json(path: Path) -> dict[str, Any] | None:
    """Read an existing ``parts.json`` (None when absent).

    Raises:
        ValueError: the file is not a parts.json this version wrote; the message names it.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}; delete it to start the index afresh") from None
    if not isinstance(data, dict) or data.get("format_version") != PARTS_JSON_VERSION or "images" not in data:
        raise ValueError(
            f"{path} is not a partdisco parts.json (format_version {PARTS_JSON_VERSION}); use another --out"
        )
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=1, sort_keys=False).encode("utf-8")
    _write_atomic(path, lambda f: f.write(text))


def _foreground_info(entry: dict[str, Any]) -> str:
    if "foreground_area" not in entry:
        return ""
    share = 100.0 * entry["foreground_area"] / max(1, entry["width"] * entry["height"])
    return f", foreground {share:.0f}%"


def _write_index(out_dir: Path, data: dict[str, Any], num_parts: int) -> Path:
    """``index.html``, linking only to files inside ``out_dir`` (input thumbnails too): it can be moved."""
    cards = []
    for name in sorted(data["images"]):
        entry = data["images"][name]
        files = entry["files"]
        present = ", ".join(str(k) for k in entry["present"]) or "none"
        background = entry["background"]
        if entry.get("background_note"):
            background += f" ({entry['background_note']})"
        cards.append(
            {
                "name": name,
                "image": files.get("input", output_paths(".", name)["input"].as_posix()),
                "overlay": files["overlay"],
                "color": files["color"],
                "info": (
                    f"{entry['width']}x{entry['height']} px, parts {present}, background: {background}"
                    + _foreground_info(entry)
                ),
            }
        )
    has_background = any(e["background"] != "none" for e in data["images"].values())
    return write_contact_sheet(
        out_dir / "index.html",
        cards,
        f"partdisco segment: {out_dir.name}",
        num_parts,
        show_background=has_background,
        failed=data.get("failed") or {},
    )


def _owned_files(data: dict[str, Any] | None) -> list[str]:
    """Paths (relative to ``--out``) that segment wrote there, from a parts.json (older ones: its entries)."""
    if data is None:
        return []
    owned = list(data.get("owned_files") or [])
    for entry in data.get("images", {}).values():
        owned += list(entry.get("files", {}).values())
    return owned + ["parts.json", "index.html"]


def _refuse_foreign_files(
    out: Path, pending: Sequence[InputImage], owned: set[str], save_probs: bool
) -> None:
    """Raise before any work when an output path holds a file that segment did not write."""
    kinds = ("labels", "color", "overlay", "input") + (("probs",) if save_probs else ())
    targets = [out / "parts.json", out / "index.html"]
    targets += [output_paths(out, item.name)[k] for item in pending for k in kinds]
    foreign = [p for p in targets if p.exists() and p.relative_to(out).as_posix() not in owned]
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise ValueError(
            f"--out {out} holds files that partdisco segment did not write ({shown}); choose another --out "
            "(or move those files)"
        )


@contextlib.contextmanager
def _out_lock(out: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the ``--out`` folder itself (no lock file), waited for (ms per chunk)."""
    import fcntl

    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _merge_and_write(
    out: Path, data: dict[str, Any], written: Sequence[str], num_parts: int | None = None
) -> Path | None:
    """Write ``parts.json`` (and ``index.html``) merged with what other runs wrote there meanwhile.

    Entries this run wrote win; every other entry on disk is kept, so two runs into one ``--out`` list all
    images. ``data`` is updated in place with the merged content.
    """
    parts_json = out / "parts.json"
    mine = set(written)
    with _out_lock(out):
        disk = read_parts_json(parts_json)
        if disk is not None and disk.get("settings") == data.get("settings"):
            for name, entry in disk.get("images", {}).items():
                if name not in mine:
                    data["images"][name] = entry
            done_here = {data["images"][n]["source"] for n in mine if n in data["images"]}
            for path, reason in disk.get("failed", {}).items():
                if path not in done_here:
                    data["failed"].setdefault(path, reason)
            data["owned_files"].update(_owned_files(disk))
        owned = data["owned_files"]
        data["owned_files"] = sorted(owned)
        try:
            _write_json(parts_json, data)
        finally:
            data["owned_files"] = owned
        if num_parts is None:
            return None
        return _write_index(out, data, num_parts)


def _fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask for an image shrunk while decoding: resized (bilinear) when only the scale differs."""
    H, W = size
    h, w = mask.shape
    if (h, w) == (H, W) or h * w <= H * W or abs(h / w - H / W) > 0.02 * (H / W) + 1 / min(H, W):
        return mask  # same size, or a real mismatch that check_same_size reports
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR))


def _segment_or_skip(
    model: nn.Module,
    loaded: list[tuple[InputImage, np.ndarray, np.ndarray | None]],
    with_masks: bool,
    run: dict[str, Any],
) -> list[tuple[tuple[InputImage, np.ndarray, np.ndarray | None], PartMaps | str]]:
    """Segment a chunk; when it fails for memory, retry image by image and name the ones that still fail."""
    try:
        maps = segment_images(
            model, [image for _, image, _ in loaded], [m for _, _, m in loaded] if with_masks else None, **run
        )
        return list(zip(loaded, maps))
    except (MemoryError, RuntimeError) as err:
        if len(loaded) == 1:
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            return [(loaded[0], f"could not be processed ({type(err).__name__}: {reason})")]
    results: list[tuple[tuple[InputImage, np.ndarray, np.ndarray | None], PartMaps | str]] = []
    for one in loaded:
        results += _segment_or_skip(model, [one], with_masks, run)
    return results


def _chunks(items: Sequence[InputImage], size: int) -> Iterable[Sequence[InputImage]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def segment_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    masks_dir: str | os.PathLike[str] | None = None,
    size: int | None = None,
    batch_size: int = 8,
    background: str = "auto",
    save_probs: bool = False,
    overwrite: bool = False,
    alpha: float = 0.5,
    checkpoint: str | None = None,
    progress: bool = True,
    crop: str = "auto",
    padding: float | None = None,
    fg_refine: float | None = None,
) -> SegmentSummary:
    """Segment image files and write label maps, colour maps, overlays, ``parts.json`` and ``index.html``.

    Resumable: an image whose files and ``parts.json`` entry exist is skipped (unless ``overwrite``).
    Unreadable images (and unreadable masks) are skipped and listed in the summary and in ``parts.json``.
    ``out_dir`` is created or reused; nothing in it is deleted.

    Args:
        model: a Segmenter, already on its device.
        inputs: files, folders (recursive) and glob patterns (:func:`collect_images`).
        out_dir: output folder.
        masks_dir: foreground masks named like the images (:func:`find_mask`); they define background.
        size: shorter side of the network input; None = the model's training size (:func:`inference_size`).
        batch_size: images per forward pass.
        background: ``"auto"``, ``"none"`` or ``"border"`` (see :func:`segment_images`); must be
            ``"auto"`` with masks.
        save_probs: also write ``probs/NAME.npz`` (float16 (C, H, W)).
        overwrite: recompute images whose outputs exist.
        alpha: part opacity in the overlays.
        checkpoint: checkpoint path, recorded in ``parts.json`` and compared on a rerun.
        progress: show a progress bar.
        crop: object-centric inference, ``"auto"``, ``"object"`` or ``"none"`` (:func:`segment_images`).
        padding: per-side padding of the object crop; None = the checkpoint's ``data.padding_frac``
            (:func:`inference_padding`).
        fg_refine: refinement radius of the predicted foreground (:func:`segment_images`); None = the
            checkpoint's ``eval.fg_refine_radius``.

    Returns:
        A :class:`SegmentSummary`.

    Raises:
        ValueError: no images found; bad arguments; ``out_dir/parts.json`` from a different model or
            settings (without ``overwrite``); a mask whose size differs from its image's (names both files).
        FileNotFoundError: an input does not exist, or an image has no mask in ``masks_dir``.
    """
    from tqdm.auto import tqdm

    _check_background(background)
    if masks_dir is not None and background != "auto":
        raise ValueError(
            f"background={background!r} cannot be combined with masks: masks define the background"
        )
    size = inference_size(model, size)
    padding = inference_padding(model, padding)
    refine = inference_fg_refine(model, fg_refine)
    if size < 1 or batch_size < 1:
        raise ValueError(f"size and batch_size must be >= 1, got size={size}, batch_size={batch_size}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a folder")
    items = collect_images(inputs, exclude=[out])
    if not items:
        raise ValueError(
            f"no images found in {', '.join(map(str, inputs))} "
            f"(image suffixes: {', '.join(IMAGE_EXTENSIONS)})"
        )
    mask_paths: dict[str, Path] = {}
    if masks_dir is not None:
        masks_root = Path(masks_dir).expanduser()
        if not masks_root.is_dir():
            raise FileNotFoundError(f"masks folder {str(masks_root)!r} does not exist")
        missing = []
        for item in items:
            found = find_mask(masks_root, item)
            if found is None:
                missing.append(str(item.path))
            else:
                mask_paths[item.name] = found
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) have no mask in {masks_root} (looked for NAME.png etc.), first: "
                + ", ".join(missing[:5])
            )
    num_parts = int(model.num_parts)
    settings = {
        "checkpoint": checkpoint,
        "arch": str(getattr(model, "arch", type(model).__name__)),
        "num_parts": num_parts,
        "background_channel": bool(model.background_channel),
        "size": int(size),
        "background": background,
        "masks": None if masks_dir is None else str(Path(masks_dir).expanduser().resolve()),
        "crop": crop,
        "padding": float(padding),
    }
    if model.background_channel:  # (a key only they have: older parts.json of other models still match)
        settings["fg_refine"] = list(refine)
    parts_json = out / "parts.json"
    if out.exists():
        require_writable_dir(out, "--out")
    data = read_parts_json(parts_json)
    owned = set(_owned_files(data))  # files of this --out that segment wrote; nothing else is replaced
    if data is not None and data.get("settings") != settings:
        if not overwrite:
            old = data.get("settings") or {}
            diff = ", ".join(
                f"{k}: {old.get(k)!r} there vs {v!r} now" for k, v in settings.items() if old.get(k) != v
            )
            raise ValueError(
                f"{parts_json} was written with other settings ({diff}); pass --overwrite to recompute "
                "every image into it, or choose another --out"
            )
        data = None  # different model or settings: the old entries no longer describe the files
    if data is None:
        data = {"format_version": PARTS_JSON_VERSION, "settings": settings, "images": {}, "failed": {}}
    data["palette"] = PALETTE[: num_parts + 1].tolist()
    entries: dict[str, Any] = data["images"]
    failed: dict[str, str] = data.setdefault("failed", {})
    out.mkdir(parents=True, exist_ok=True)
    require_writable_dir(out, "--out")

    summary = SegmentSummary(out_dir=out, parts_json=parts_json)
    pending = []
    for item in items:
        if not overwrite and _is_done(out, item, entries, save_probs):
            summary.skipped.append(item.name)
        else:
            pending.append(item)
    with _out_lock(out):  # what a run started meanwhile wrote is segment's too
        owned.update(_owned_files(read_parts_json(parts_json)))
        _refuse_foreign_files(out, pending, owned, save_probs)
    data["owned_files"] = owned  # a set while running; a sorted list on disk
    if summary.skipped:
        logger.info("%d of %d images already segmented in %s, skipped", len(summary.skipped), len(items), out)
    bar = tqdm(total=len(pending), unit="img", desc="segment", disable=not progress)
    try:
        # A few batches per chunk, so images of equal processing size can share a batch.
        for chunk in _chunks(pending, 4 * batch_size):
            loaded: list[tuple[InputImage, np.ndarray, np.ndarray | None]] = []
            for item in chunk:
                try:
                    image = read_image(item.path, max_pixels=MAX_WORKING_PIXELS)
                    mask = None
                    if item.name in mask_paths:
                        mask = _fit_mask(read_mask(mask_paths[item.name]), image.shape[:2])
                        check_same_size(item.path, mask_paths[item.name], image.shape, mask.shape)
                except ImageReadError as err:
                    failed[str(item.path)] = str(err)
                    summary.failed[str(item.path)] = str(err)
                    logger.warning("skipping an unreadable file: %s", err)
                    bar.update(1)
                    continue
                loaded.append((item, image, mask))
            if loaded:
                run = dict(
                    size=size,
                    background=background,
                    batch_size=batch_size,
                    with_probs=save_probs,
                    crop=crop,
                    padding=padding,
                    fg_refine=refine,
                )
                for (item, image, _), maps in _segment_or_skip(model, loaded, bool(mask_paths), run):
                    if isinstance(maps, str):  # could not be processed (memory): skipped by name
                        failed[str(item.path)] = summary.failed[str(item.path)] = maps
                        logger.warning("skipping %s: %s", item.path, maps)
                    else:
                        entries[item.name] = write_outputs(out, item, image, maps, save_probs, alpha=alpha)
                        owned.update(entries[item.name]["files"].values())
                        if maps.note:
                            summary.notes[item.name] = maps.note
                        failed.pop(str(item.path), None)
                        summary.written.append(item.name)
                    bar.update(1)
            _merge_and_write(out, data, summary.written)  # after every chunk: a killed run resumes here
    finally:
        bar.close()
    summary.index_html = _merge_and_write(out, data, summary.written, num_parts=num_parts)
    logger.info(
        "segmented %d images, skipped %d done, %d unreadable -> %s",
        len(summary.written),
        len(summary.skipped),
        len(summary.failed),
        out,
    )
    return summary
