"""What ``partdisco segment`` reads: files, folders and glob patterns -> :class:`InputImage`, masks, pixels.

Inputs get unique output names (:func:`collect_images`), masks are matched by name (:func:`find_mask`), and a
chunk's images and masks are decoded (:func:`read_chunk`, huge images shrunk while decoding).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partdisco.data.io import IMAGE_EXTENSIONS, ImageReadError, check_same_size, read_image, read_mask

logger = logging.getLogger(__name__)

MAX_WORKING_PIXELS = 4096 * 4096  # larger images are shrunk while decoding: memory stays bounded
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
        elif path.is_symlink():
            raise FileNotFoundError(
                f"input {str(given)!r} is a symbolic link to nothing (a loop or a missing file)"
            )
        else:
            raise FileNotFoundError(
                f"input {str(given)!r} does not exist (expected an image file, a folder or a glob pattern)"
            )
        root = root.resolve()
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
                logger.warning("skipping %s: a symbolic link loop", candidate)
                continue
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


def find_masks(masks_dir: str | os.PathLike[str], items: Sequence[InputImage]) -> dict[str, Path]:
    """Each image's mask in ``masks_dir`` (:func:`find_mask`), by output name.

    Raises:
        FileNotFoundError: the folder does not exist, or images have no mask (the first five are named).
    """
    masks_root = Path(masks_dir).expanduser()
    if not masks_root.is_dir():
        raise FileNotFoundError(f"masks folder {str(masks_root)!r} does not exist")
    mask_paths: dict[str, Path] = {}
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
    return mask_paths


def _fit_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A mask for an image shrunk while decoding: resized (bilinear) when only the scale differs."""
    H, W = size
    h, w = mask.shape
    if (h, w) == (H, W) or h * w <= H * W or abs(h / w - H / W) > 0.02 * (H / W) + 1 / min(H, W):
        return mask  # same size, or a real mismatch that check_same_size reports
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR))


def read_chunk(
    chunk: Sequence[InputImage], mask_paths: dict[str, Path]
) -> tuple[list[tuple[InputImage, np.ndarray, np.ndarray | None]], list[tuple[InputImage, ImageReadError]]]:
    """Read a chunk's images (and masks): ``(loaded, unreadable)``, both in input order."""
    loaded: list[tuple[InputImage, np.ndarray, np.ndarray | None]] = []
    unreadable: list[tuple[InputImage, ImageReadError]] = []
    for item in chunk:
        try:
            image = read_image(item.path, max_pixels=MAX_WORKING_PIXELS)
            mask = None
            if item.name in mask_paths:
                mask = _fit_mask(read_mask(mask_paths[item.name]), image.shape[:2])
                check_same_size(item.path, mask_paths[item.name], image.shape, mask.shape)
        except ImageReadError as err:
            unreadable.append((item, err))
            continue
        loaded.append((item, image, mask))
    return loaded, unreadable


def chunked(items: Sequence[InputImage], size: int) -> Iterable[Sequence[InputImage]]:
    """``items`` in consecutive chunks of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
