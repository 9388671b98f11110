"""Reading images, masks and label maps from disk, and the dataset base class that skips bad files.

Every reader returns plain numpy arrays and raises :class:`ImageReadError` naming the file when it is
missing, truncated or not an image, so a data set error always says *which* file is wrong.

Conventions:
    - Images are ``uint8 (H, W, 3)`` RGB. EXIF orientation is applied (``PIL.ImageOps.exif_transpose``),
      grayscale and palette images are expanded to RGB, 16-bit images are scaled to 8 bit (``v / 257``),
      and images with an alpha channel are **composited on black** (``rgb * alpha / 255``): transparent
      regions become black instead of whatever colour the file stored under them. These are the rules of
      ``imaging/convert.py: to_rgb_uint8``, the one implementation (arrays given to the API follow it too).
    - Masks are ``float32 (H, W)``: ``mode="binary"`` gives ``1.0`` where the gray value is above
      ``threshold`` (any value > 0 by default; CUB ground truth uses ``threshold=254``, i.e. ``== 255``),
      ``mode="gray"`` keeps ``gray / 255`` (the reference keeps the authors' ``supervisedlabels`` masks
      un-binarised). RGB masks use the maximum over the colour channels as their gray value; palette masks
      use the palette index.
    - Label maps are ``int64 (H, W)``: the palette index of a palette PNG or the gray value of a
      single-channel PNG (8 or 16 bit), never rescaled.

Randomness: an augmented sample's generator is ``numpy.random.default_rng([seed, epoch, index])``, a pure
function of the run's seed (passed to the data set), the epoch and the sample index (issue #12). The
training sampler hands the data set ``(index, epoch)`` pairs (``data/samplers.py``); plain ``ds[index]``
uses :attr:`SampleDataset.epoch` (0 unless :meth:`SampleDataset.set_epoch` changes it). No code seeds or
reads a global generator, so augmentations are the same with any number of DataLoader workers and ranks,
and a resumed run draws what the uninterrupted run drew. Non-augmented samples draw nothing. Call
:meth:`SampleDataset.load_sample` with an explicit generator to replay a sample exactly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from partdisco.data.batch import PartsDataset
from partdisco.imaging.convert import sixteen_to_eight, to_rgb_uint8

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
)
"""Lower-case file suffixes treated as images when a folder is scanned."""

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageReadError(OSError, ValueError):
    """A file could not be read as an image / mask / label map; the message names the file and why.

    Attributes:
        path: the file that failed.
        reason: what went wrong (missing, truncated, not an image, ...).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")

    def __str__(self) -> str:
        return f"cannot read {self.path}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        # DataLoader workers pickle exceptions; keep both constructor arguments.
        return (type(self), (self.path, self.reason))


class SizeMismatchError(ValueError):
    """An annotation (mask, label map) does not have the size of its image; the message names both files."""


def _open(path: str | os.PathLike[str], max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode ``path`` with PIL, applying EXIF orientation.

    With ``max_pixels``, a larger image is decoded at a reduced scale where the format allows it (JPEG
    ``draft``: 1/2, 1/4 or 1/8 while decoding) and then shrunk (``reduce``, box filter) to at most
    ``max_pixels``, keeping the aspect ratio.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file does not exist" if not path.exists() else "not a regular file")
    try:
        with Image.open(path) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                scale = (max_pixels / (img.width * img.height)) ** 0.5
                img.draft(img.mode, (max(1, int(img.width * scale)), max(1, int(img.height * scale))))
            img.load()  # decode now: truncated files fail here, not later in a worker
            if max_pixels is not None and img.width * img.height > max_pixels:
                factor = math.ceil((img.width * img.height / max_pixels) ** 0.5)
                while (img.width // factor) * (img.height // factor) > max_pixels:
                    factor += 1
                if img.mode.startswith("I;16"):
                    img = img.convert("I")
                elif img.mode not in ("L", "RGB", "RGBA", "LA", "I", "F"):
                    img = img.convert(
                        "RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB"
                    )
                img = img.reduce(factor)
            out = ImageOps.exif_transpose(img)
            if out is img:
                out = img.copy()
    except UnidentifiedImageError:
        raise ImageReadError(path, "not an image file PIL can identify") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError) as err:
        raise ImageReadError(path, f"corrupt or truncated image ({type(err).__name__}: {err})") from None
    return out


def _to_rgb_uint8(img: Image.Image, path: Path) -> np.ndarray:
    """Convert any PIL mode to uint8 (H, W, 3) RGB, compositing alpha on black."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        gray = sixteen_to_eight(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":  # PIL's float mode is in 8-bit units (its own conversions clip it to 0..255)
        return to_rgb_uint8(np.asarray(img, dtype=np.float32)[:, :, None], value_range=(0.0, 255.0))
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        return to_rgb_uint8(np.asarray(img, dtype=np.uint8))  # alpha composited on black
    if mode != "RGB":
        try:
            img = img.convert("RGB")
        except (ValueError, OSError) as err:
            raise ImageReadError(path, f"unsupported image mode {mode!r} ({err})") from None
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as RGB.

    Args:
        path: any format PIL reads (JPEG, PNG 8/16 bit, palette, grayscale, RGBA, TIFF, ...).
        max_pixels: shrink larger images to at most this many pixels while decoding (aspect kept;
            JPEGs decode at reduced scale, so memory stays bounded too). None = full size.

    Returns:
        ``uint8 (H, W, 3)`` RGB, EXIF-orientation applied, alpha composited on black.

    Raises:
        ImageReadError: the file is missing, truncated or not an image (message names the file).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
        >>> Image.new("L", (4, 2), 7).save(path)
        >>> read_image(path).shape, int(read_image(path)[0, 0, 2])
        ((2, 4, 3), 7)
    """
    path = Path(path)
    return _to_rgb_uint8(_open(path, max_pixels), path)


def _read_gray_uint8(path: Path) -> np.ndarray:
    """Read a mask-like file as uint8 (H, W) gray values (see module docstring for colour files)."""
    img = _open(path)
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return sixteen_to_eight(np.asarray(img))
    if mode == "F":
        return np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
    if mode in ("L", "P"):
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    if mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if mode in ("LA", "La"):
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[:, :, 0])
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return rgb.max(axis=2)


def read_mask(path: str | os.PathLike[str], mode: str = "binary", threshold: int = 0) -> np.ndarray:
    """Read a foreground mask.

    Args:
        path: a grayscale, palette, 1-bit, 16-bit or RGB image file.
        mode: ``"binary"``: ``1.0`` where the 8-bit gray value is ``> threshold``, else ``0.0``;
            ``"gray"``: ``gray / 255`` kept as a soft value in ``[0, 1]``.
        threshold: gray level (0..255) for ``mode="binary"``; 0 = any non-zero pixel is foreground,
            254 = only pure white (CUB ``segmentations/*.png`` as the reference binarises them).

    Returns:
        ``float32 (H, W)`` in ``[0, 1]``.

    Raises:
        ImageReadError: missing or unreadable file.
        ValueError: unknown ``mode``.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "m.png")
        >>> Image.fromarray(np.array([[0, 128, 255]], np.uint8)).save(path)
        >>> read_mask(path).tolist(), read_mask(path, threshold=254).tolist()
        ([[0.0, 1.0, 1.0]], [[0.0, 0.0, 1.0]])
    """
    if mode not in ("binary", "gray"):
        raise ValueError(f"read_mask: mode must be 'binary' or 'gray', got {mode!r}")
    gray = _read_gray_uint8(Path(path))
    if mode == "binary":
        return (gray > threshold).astype(np.float32)
    return gray.astype(np.float32) / 255.0


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a part label map (0 = background, 1..P = parts).

    Args:
        path: a palette PNG (labels = palette indices) or a single-channel 8/16-bit PNG (labels = values).

    Returns:
        ``int64 (H, W)``.

    Raises:
        ImageReadError: missing or unreadable file, or a colour (RGB) image, whose colours are not labels.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "l.png")
        >>> Image.fromarray(np.array([[0, 3, 1]], np.uint8)).save(path)
        >>> read_label_map(path).tolist()
        [[0, 3, 1]]
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("LA", "PA"):
        return np.asarray(img)[:, :, 0].astype(np.int64)
    raise ImageReadError(
        path,
        f"a label map must be a palette or single-channel PNG, got mode {img.mode!r} "
        "(save the labels as an 8-bit gray or palette PNG)",
    )


def check_same_size(
    image_path: str | os.PathLike[str],
    other_path: str | os.PathLike[str],
    image_shape: Sequence[int],
    other_shape: Sequence[int],
) -> None:
    """Raise if an annotation's (H, W) differs from its image's.

    Args:
        image_path: the image file.
        other_path: the mask / label map file.
        image_shape: shape of the image array (H, W, ...).
        other_shape: shape of the annotation array (H, W, ...).

    Raises:
        SizeMismatchError: sizes differ; the message names both files and both sizes.

    Example:
        >>> check_same_size("a.jpg", "a.png", (4, 5, 3), (4, 5))
    """
    ih, iw = int(image_shape[0]), int(image_shape[1])
    oh, ow = int(other_shape[0]), int(other_shape[1])
    if (ih, iw) != (oh, ow):
        raise SizeMismatchError(
            f"size mismatch: image {image_path} is {ih}x{iw} (HxW) but {other_path} is {oh}x{ow}; "
            "an annotation must have exactly the size of its image"
        )


class SampleDataset(PartsDataset):
    """Base class of the file-backed data sets: per-sample RNG and skipping of unreadable files.

    Subclasses implement ``__len__``, :meth:`sample_name` and :meth:`load_sample`. ``__getitem__`` takes an
    index or an ``(index, epoch)`` pair, derives the sample's generator (module docstring) and, when
    ``load_sample`` raises :class:`ImageReadError`, records the file in :attr:`skipped`, logs a warning and
    returns the next readable sample (or re-raises when ``strict``). Other errors (size mismatches, bad
    annotations) always propagate.

    With ``num_workers > 0`` each worker keeps its own :attr:`skipped` list; the warnings are the record.

    What the data set provides (``has_masks``, ``keypoint_names``, ...) is declared as in
    :class:`partdisco.data.batch.PartsDataset`.

    Attributes:
        augment: whether samples are randomly augmented (training crops / flips).
        strict: raise on an unreadable file instead of skipping it.
        seed: the run's seed, mixed into every sample's generator.
        epoch: the epoch used when the data set is indexed by a plain index (see :meth:`set_epoch`).
    """

    def __init__(self, *, augment: bool, strict: bool, seed: int = 0) -> None:
        super().__init__()
        self.augment = bool(augment)
        self.strict = bool(strict)
        self.seed = int(seed)
        self.epoch = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample_name(self, index: int) -> str:
        """Name of sample ``index`` (image path relative to the data root)."""
        raise NotImplementedError

    def load_sample(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Read and transform sample ``index``; ``rng`` drives augmentation (None = no augmentation)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Make plain ``ds[index]`` draw epoch ``epoch``'s augmentations (the main process's copy only)."""
        self.epoch = int(epoch)

    def sample_rng(self, index: int, epoch: int = 0) -> np.random.Generator:
        """Generator of sample ``index``'s augmentation in ``epoch``: a function of (seed, epoch, index)."""
        return np.random.default_rng([self.seed % 2**64, int(epoch), int(index)])

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} samples")
        index = int(index) % n
        rng = self.sample_rng(index, epoch) if self.augment else None
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                return self.load_sample(i, rng)
            except ImageReadError as err:
                if self.strict:
                    raise
                self._bad.add(i)
                self.skipped.append(self.sample_name(i))
                logger.warning(
                    "skipping unreadable sample %s: %s (data.strict=true makes this an error)", i, err
                )
        root = getattr(self, "root", None)
        where = f" in {root}" if root is not None else ""
        raise ValueError(
            f"{type(self).__name__}: none of the {n} images{where} could be read (a data set of unreadable "
            f"files; `partdisco data check` lists them); first: {', '.join(self.skipped[:3])}"
        )
