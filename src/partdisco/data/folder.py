"""Your own images: a folder with ``images/`` and optional masks, part labels, keypoints and split lists.

Layout (``data.root``; details and examples in ``docs/DATA.md``)::

    images/            any PIL format (IMAGE_EXTENSIONS), top level only, e.g. images/cat1.jpg;
                       without images/, the image files directly in data.root (a flat folder of photos)
    masks/             optional: masks/cat1.png, foreground = any value > 0, same size as the image
    parts/             optional: parts/cat1.png, part labels 0 = background, 1..P (gray or palette PNG)
    part_names.json    optional: ["head", "body", ...] names of labels 1..P
    keypoints.json     optional: {"names": [...], "keypoints": {"cat1.jpg": [[x, y, v], ...]},
                                  "flip_permutation": [...]}  (pixel coordinates, pixel i covers [i, i+1);
                                  v > 0 = visible; flip_permutation optional, 0-based, default identity)
    train.txt/test.txt optional: one image file name per line ('#' comments allowed)

Splits: ``<split>.txt`` if it exists; otherwise the complement of the other list if that one exists;
otherwise **every image is in every split** (a warning is logged): unsupervised part discovery is
commonly trained and evaluated on the same images.

Pipeline: with ``masks/``, the CUB crop around the mask's box (padding ``data.padding_frac`` per side,
``±data.jitter_frac`` jitter when augmenting, squared, cropped, resized to ``image_size``; an empty mask
uses the whole image). Without ``masks/``, the shorter side is resized to ``image_size`` and the centre
``image_size`` square is cut out; the foreground is the whole image (logged once when training). Augmented
samples (``train and split == "train"``) are flipped with probability 1/2 when ``data.flip``.

Unreadable images or masks are skipped with a warning and listed in ``dataset.skipped`` (an error with
``data.strict=true``); a mask or label map whose size differs from its image's is always an error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from partdisco.config import DataConfig
from partdisco.data import transforms as T
from partdisco.data.io import (
    IMAGE_EXTENSIONS,
    SampleDataset,
    check_same_size,
    read_image,
    read_label_map,
    read_mask,
)
from partdisco.data.keypoints import flip_keypoints, hflip, scale_keypoints, shift_keypoints
from partdisco.data.sample import make_sample

logger = logging.getLogger(__name__)


def _image_names(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def image_folder(root: Path) -> Path:
    """Where the images of a folder data set are: ``root/images``, else ``root`` itself when it holds images.

    A flat folder of photos is what users have; it is read as if its files were in ``images/`` (with
    optional ``masks/`` etc. still next to them).

    Raises:
        FileNotFoundError: neither ``images/`` nor image files directly in ``root``.
    """
    folder = root / "images"
    if folder.is_dir():
        return folder
    if root.is_dir() and _image_names(root):
        return root
    raise FileNotFoundError(
        f"folder data set: {root} has no images/ folder and no image files "
        f"({', '.join(IMAGE_EXTENSIONS)}); put your images in it or in its images/ (see docs/DATA.md)"
    )


def list_images(root: Path) -> list[str]:
    """Sorted file names in :func:`image_folder` whose suffix is in :data:`IMAGE_EXTENSIONS`.

    Raises:
        FileNotFoundError: neither ``images/`` nor a flat folder of images.
    """
    return _image_names(image_folder(root))


def read_utf8(path: Path) -> str:
    """A text file's content; a byte that is not UTF-8 raises ValueError naming the file, line and byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: byte {data[err.start]:#04x} at offset {err.start} is not UTF-8 text; "
            "save the file as UTF-8"
        ) from None


def read_list(path: Path, available: set[str]) -> list[str]:
    """Image names of a split file (one per line, ``#`` comments), checked against ``available``.

    Raises:
        FileNotFoundError: an entry names no file in ``images/`` (message names the list and the entry).
    """
    names = []
    for line_no, line in enumerate(read_utf8(path).splitlines(), start=1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        name = name.removeprefix("images/")
        if name not in available:
            raise FileNotFoundError(f"{path}:{line_no}: {name!r} is not an image in {path.parent / 'images'}")
        names.append(name)
    return names


def split_files(root: Path, split: str, images: list[str]) -> list[str]:
    """Images of ``split`` (module docstring for the rules)."""
    available = set(images)
    own = root / f"{split}.txt"
    if own.is_file():
        return read_list(own, available)
    other = {"train": "test", "test": "train"}.get(split)
    if other is not None and (root / f"{other}.txt").is_file():
        taken = set(read_list(root / f"{other}.txt", available))
        return [name for name in images if name not in taken]
    logger.warning(
        "folder data set %s: no train.txt / test.txt; split %r uses all %d images", root, split, len(images)
    )
    return list(images)


def read_keypoints_json(path: Path) -> tuple[list[str], dict[str, np.ndarray], np.ndarray | None]:
    """Parse ``keypoints.json``.

    Returns:
        ``(names, table, flip_permutation)``: table maps an image name to float64 (N, 3).

    Raises:
        ValueError: malformed file (message names the file and the entry).
    """
    try:
        data = json.loads(read_utf8(path))
        names = [str(n) for n in data["names"]]
        raw = data.get("keypoints", {})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{path}: expected {{'names': [...], 'keypoints': {{NAME: [[x, y, v], ...]}}}} ({err!r})"
        ) from None
    table = {}
    non_finite = []
    for name, rows in raw.items():
        try:
            array = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError) as err:  # "x" or null among the numbers
            raise ValueError(f"{path}: keypoints of {name!r} are not all numbers ({err})") from None
        if array.shape != (len(names), 3):
            raise ValueError(
                f"{path}: keypoints of {name!r} have shape {array.shape}, expected ({len(names)}, 3)"
            )
        if not np.isfinite(array).all():
            non_finite.append(str(name))
        table[str(name).removeprefix("images/")] = array
    if non_finite:
        logger.warning(
            "%s: NaN or inf keypoints in %d image(s) (first %s); they are not scored (`partdisco data check` "
            "lists them)",
            path,
            len(non_finite),
            non_finite[0],
        )
    permutation = None
    if data.get("flip_permutation") is not None:
        permutation = np.asarray(data["flip_permutation"], dtype=np.int64)
        if sorted(permutation.tolist()) != list(range(len(names))):
            raise ValueError(f"{path}: flip_permutation must be a permutation of 0..{len(names) - 1}")
    return names, table, permutation


def _annotation_paths(folder: Path, files: list[str], what: str, hint: str = "") -> dict[str, Path]:
    """``<folder>/<stem>.png`` for every image; raises naming the first image without one."""
    paths = {name: folder / (Path(name).stem + ".png") for name in files}
    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"folder data set: images/{missing[0]} has no {what} {paths[missing[0]]} "
            f"({len(missing)} of {len(files)} images have none; every image needs <stem>.png in "
            f"{folder}, or remove the {folder.name}/ folder{hint})"
        )
    return paths


class EmptyMaskError(ValueError):
    """A mask without a foreground pixel, read with ``data.strict`` (``data check`` lists these as EMPTY)."""


class FolderDataset(SampleDataset):
    """Images from a folder, with optional masks / part labels / keypoints (module docstring).

    Args:
        root: the data set folder.
        files: image file names (relative to ``images/``).
        crop: output side S, box padding and jitter (with masks), flip (:class:`.transforms.ObjectCrop`).
        augment: draw jitter / flip.
        strict: raise on unreadable files instead of skipping.
        seed: mixed into the per-sample generators.
        use_masks: read ``masks/`` when it exists (False: ``data.masks=ignore`` for training, the images
            are treated as if there were no masks).
    """

    def __init__(
        self,
        root: Path,
        files: list[str],
        crop: T.ObjectCrop,
        augment: bool,
        strict: bool,
        seed: int = 0,
        use_masks: bool = True,
        mask_dir: Path | None = None,
    ) -> None:
        super().__init__(augment=augment, strict=strict, seed=seed)
        self.root = Path(root)
        self.image_dir = image_folder(self.root)
        self.files = files
        self.size, self.padding_frac, self.jitter_frac, self.flip = (
            crop.size, crop.padding_frac, crop.jitter_frac, crop.flip,
        )  # fmt: skip
        masks = Path(mask_dir) if mask_dir is not None else self.root / "masks"
        self.has_masks = use_masks and masks.is_dir()
        self.mask_paths = (
            _annotation_paths(masks, files, "mask", ", or set data.masks=ignore to train without")
            if self.has_masks
            else None
        )
        self.empty_masks: set[str] = set()  # images whose mask has no foreground pixel (reported once each)
        has_parts = (self.root / "parts").is_dir()
        self.part_paths = (
            _annotation_paths(self.root / "parts", files, "part label map") if has_parts else None
        )
        self.part_names = None
        names_path = self.root / "part_names.json"
        if names_path.is_file():
            try:
                self.part_names = [str(n) for n in json.loads(read_utf8(names_path))]
            except (json.JSONDecodeError, TypeError) as err:
                raise ValueError(f"{names_path}: expected a JSON list of names ({err!r})") from None
        self.keypoint_names = None
        self.keypoints: dict[str, np.ndarray] | None = None
        self.flip_permutation = None
        kp_path = self.root / "keypoints.json"
        if kp_path.is_file():
            self.keypoint_names, self.keypoints, permutation = read_keypoints_json(kp_path)
            n = len(self.keypoint_names)
            self.flip_permutation = permutation.tolist() if permutation is not None else list(range(n))

    def __len__(self) -> int:
        return len(self.files)

    def sample_name(self, index: int) -> str:
        """Image path relative to the root (``images/<file>``, or ``<file>`` for a flat folder)."""
        return self.image_dir.joinpath(self.files[index]).relative_to(self.root).as_posix()

    def _keypoints(self, name: str) -> np.ndarray | None:
        if self.keypoints is None or self.keypoint_names is None:
            return None
        default = np.zeros((len(self.keypoint_names), 3))
        return self.keypoints.get(name, default).copy()

    def whole_image(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image ``index`` as ``partdisco segment`` reads it and its mask, uncropped, at the file's size.

        Returns:
            ``(uint8 (H, W, 3) RGB, bool (H, W) mask or None without masks/)``; the whole-image foreground
            IoU (:func:`partdisco.engine.evaluate.whole_image.whole_image_fg_iou`) scores these.
        """
        name = self.files[index]
        image = read_image(self.image_dir / name)
        if self.mask_paths is None:
            return image, None
        mask = read_mask(self.mask_paths[name], mode="binary") > 0.5
        check_same_size(self.image_dir / name, self.mask_paths[name], image.shape, mask.shape)
        return image, mask

    def _report_empty_mask(self, name: str) -> None:
        """An all-empty mask is an error with ``data.strict``, else a warning naming it (once per image)."""
        assert self.mask_paths is not None
        message = (
            f"folder data set: mask {self.mask_paths[name]} of images/{name} is empty (no foreground pixel): "
            "the whole image is cropped and has no foreground; fix or delete the mask, "
            "or set data.masks=ignore"
        )
        if self.strict:
            raise EmptyMaskError(message)
        if name not in self.empty_masks:
            self.empty_masks.add(name)
            logger.warning(message)

    def load_sample(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Read image ``index`` (+ annotations) and transform it; ``rng`` drives jitter and flip."""
        name = self.files[index]
        image_path = self.image_dir / name
        image_u8 = read_image(image_path)
        height, width = image_u8.shape[:2]
        image = image_u8.astype(np.float32) / 255.0
        mask = parts = None
        if self.mask_paths is not None:
            mask = read_mask(self.mask_paths[name], mode="binary")
            check_same_size(image_path, self.mask_paths[name], image_u8.shape, mask.shape)
        if self.part_paths is not None:
            parts = read_label_map(self.part_paths[name])
            check_same_size(image_path, self.part_paths[name], image_u8.shape, parts.shape)
        keypoints = self._keypoints(name)
        size = self.size
        if mask is not None:
            tight = T.mask_box(mask)
            if tight is None:
                self._report_empty_mask(name)
                tight = np.array([0, 0, width - 1, height - 1])
            crop_box = T.object_crop_box(tight, self.padding_frac, self.jitter_frac, rng)
            image, scale = T.crop_resize_image(image, crop_box, size)
            mask = T.crop_resize_labels(mask, crop_box, size)
            parts = T.crop_resize_labels(parts, crop_box, size) if parts is not None else None
            origin = (float(crop_box[0]), float(crop_box[1]))
            if keypoints is not None:
                keypoints = scale_keypoints(shift_keypoints(keypoints, *origin), scale, scale)
            box = T.transform_box(T.inclusive_to_continuous(tight), origin, (scale, scale), image.shape[:2])
        else:
            image, parts, keypoints, box = T.centre_square(image, size, parts, keypoints)
            mask = np.ones((size, size), dtype=np.float32)
        out_w = image.shape[1]
        if rng is not None and self.flip and rng.random() > 0.5:
            image, mask = hflip(image), hflip(mask)
            parts = hflip(parts) if parts is not None else None
            if keypoints is not None:
                keypoints = flip_keypoints(keypoints, out_w, self.flip_permutation)
            box = T.flip_box(box, out_w)
        return make_sample(
            image, mask, box, 0, index, self.sample_name(index), parts=parts, keypoints=keypoints
        )


def build(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> SampleDataset:
    """Build a folder data set.

    Args:
        cfg: data config (root, image_size, strict, padding_frac, jitter_frac, flip).
        split: ``"train"``, ``"test"`` or any ``<split>.txt`` present in the root.
        train: training pipeline; jitter and flip only for ``train and split == "train"``.
        seed: mixed into the per-sample augmentation generators.

    Returns:
        A :class:`FolderDataset`.

    Raises:
        FileNotFoundError: ``images/`` is missing, empty, or an annotation is missing for an image.
    """
    if cfg.root is None:
        raise ValueError("folder data set: data.root is not set; point it at the folder holding images/")
    root = Path(cfg.root).expanduser()
    images = list_images(root)
    if not images:
        raise FileNotFoundError(
            f"folder data set: no images in {image_folder(root)} (suffixes: {', '.join(IMAGE_EXTENSIONS)})"
        )
    files = split_files(root, split, images)
    dataset = FolderDataset(
        root,
        files,
        crop=T.ObjectCrop.from_config(cfg),
        augment=train and split == "train",
        strict=cfg.strict,
        seed=seed,
        use_masks=not (train and split == "train" and cfg.masks == "ignore") or cfg.mask_dir is not None,
        mask_dir=Path(cfg.mask_dir).expanduser() if cfg.mask_dir is not None else None,
    )
    if train and not dataset.has_masks:
        logger.info(
            "folder data set %s: no masks used; training learns the foreground (mask-free, data.masks)", root
        )
    logger.info("folder data set %s %s: %d images", root, split, len(dataset))
    return dataset
