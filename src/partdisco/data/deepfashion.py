"""DeepFashion In-shop, clothing-segmentation subset, as the reference reads it (``datasets/deepfashion.py``).

``data.root`` is the ``segmentation`` folder from the DeepFashion In-shop Google Drive
(``In-shop Clothes Retrieval Benchmark/Anno/segmentation``), holding ``DeepFashion_segmentation_{train,
query,gallery}.json`` and the images they name (``images[*].file_name``, e.g. ``img_highres/...jpg``), each
next to a colour-coded ``<stem>_segment.png``. A root that contains ``Anno/segmentation`` or
``In-shop Clothes Retrieval Benchmark/Anno/segmentation`` is accepted too.

Labels: the 16 colours of :data:`DEEPFASHION_PALETTE` map to labels 0..15 (0 = background) by exact RGB
lookup. The reference maps colours through their RGB sum and silently turns unknown sums into label 255;
here an unknown colour is an error with ``data.strict=true`` and otherwise snaps to the nearest palette
colour with a warning naming the file. ``fg_mask = label != 0``.

Splits: ``train`` = the train json; ``test`` = query + gallery (6,922 images), in that order; ``query`` and
``gallery`` alone are accepted too. ``train=True, split="train"``: RandomResizedCrop (scale [0.5, 1], ratio
[3/4, 4/3]) to ``image_size`` (antialiased bilinear image, PIL-style nearest labels), then a horizontal
flip with probability 1/2 when ``data.flip``. Every other combination: resize so the longest side is
``image_size`` (cv2-style bilinear / nearest), then pad to a square, centred (image: edge pixels repeated;
labels and mask: 0). That is the reference's FG protocol (``DeepFashion eval.ipynb get_fg_nmi_ari``).

``data.deepfashion_variant=full`` (evaluation only) is the reference's **Full** protocol instead
(``get_full_nmi_ari``, the paper's 68.1 / 90.6): the image resized so its *shorter* side is ``image_size``
(no padding), the authors' predicted masks ``supervisedlabels/<file_name>.png`` (in the ``In-shop Clothes
Retrieval Benchmark`` folder, two levels above ``data.root``, or inside it) as raw 8-bit levels, and the
ground-truth label map resized *bilinearly* like an image, so label ids blend at boundaries (the
reference's quirk, kept). Samples carry ``mask_levels`` (the rounded resized levels): the reference's Full
label is ``level * (argmax + 1)``, see :func:`partdisco.engine.evaluate.evaluate`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partdisco.config import DataConfig
from partdisco.data import transforms as T
from partdisco.data.io import SampleDataset, check_same_size, read_image, read_mask
from partdisco.data.keypoints import hflip
from partdisco.data.sample import make_sample

logger = logging.getLogger(__name__)

DEEPFASHION_PALETTE = np.array(
    [
        [0, 0, 0],
        [0, 100, 0],
        [16, 78, 139],
        [50, 205, 50],
        [70, 130, 180],
        [127, 255, 212],
        [144, 238, 144],
        [211, 211, 211],
        [220, 220, 220],
        [245, 222, 179],
        [250, 235, 215],
        [255, 0, 0],
        [255, 140, 0],
        [255, 250, 205],
        [255, 250, 250],
        [255, 255, 0],
    ],
    dtype=np.int64,
)
"""RGB colour of labels 0..15 in ``*_segment.png`` (ref: ``datasets/deepfashion.py parts``)."""

DEEPFASHION_PART_NAMES: list[str] = [
    "eyeglass",
    "face",
    "accessories",
    "leggings",
    "headwear",
    "skin",
    "pants",
    "outer",
    "footwear",
    "skirt",
    "hair",
    "bag",
    "dress",
    "top",
    "label_15",
]
"""Names of labels 1..15. The reference's ``gt_classes`` has only 14 names after 'background' for 15
colours, and the colour-to-name order is not documented; labels 1..14 take the reference names in order and
label 15 is unnamed. Treat the names as display labels only (the metrics use label ids)."""

SPLIT_FILES = {
    "train": ("DeepFashion_segmentation_train.json",),
    "test": ("DeepFashion_segmentation_query.json", "DeepFashion_segmentation_gallery.json"),
    "query": ("DeepFashion_segmentation_query.json",),
    "gallery": ("DeepFashion_segmentation_gallery.json",),
}
SOURCE = (
    "DeepFashion In-shop Google Drive, folder 'In-shop Clothes Retrieval Benchmark/Anno/segmentation' "
    "(DeepFashion_segmentation_*.json + img_highres_seg.zip); see docs/DATA.md"
)
SOURCE_SUP = "the authors' deepfashion_supervisedlabels.tar.gz (unsup-parts README); see docs/DATA.md"
CROP_SCALE = (0.5, 1.0)  # ref: deepfashion.py RandomResizedCrop scale
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # ref: deepfashion.py RandomResizedCrop ratio

_PALETTE_CODES = (
    (DEEPFASHION_PALETTE[:, 0] << 16) | (DEEPFASHION_PALETTE[:, 1] << 8) | DEEPFASHION_PALETTE[:, 2]
)
_CODE_ORDER = np.argsort(_PALETTE_CODES)


def resolve_root(root: str | Path) -> Path:
    """The folder holding the split jsons: ``root`` or one of its known sub-folders."""
    root = Path(root).expanduser()
    candidates = [
        root,
        root / "Anno" / "segmentation",
        root / "In-shop Clothes Retrieval Benchmark" / "Anno" / "segmentation",
        root / "DeepFashion" / "In-shop Clothes Retrieval Benchmark" / "Anno" / "segmentation",
    ]
    for candidate in candidates:
        if (candidate / SPLIT_FILES["train"][0]).is_file() or (candidate / SPLIT_FILES["query"][0]).is_file():
            return candidate
    return root


def segment_path(image_path: Path) -> Path:
    """``.../x.jpg`` -> ``.../x_segment.png`` (ref: ``path.replace('.jpg', '_segment.png')``)."""
    return image_path.with_name(image_path.stem + "_segment.png")


def read_split(root: Path, split: str) -> list[str]:
    """File names (``images[*].file_name``) of a split, in json order.

    Raises:
        FileNotFoundError: a json file is missing (message names it and its source).
        ValueError: unknown split or malformed json.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"DeepFashion split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    names: list[str] = []
    for file_name in SPLIT_FILES[split]:
        path = root / file_name
        if not path.is_file():
            raise FileNotFoundError(f"DeepFashion: missing split file: expected {path} (from: {SOURCE})")
        try:
            data = json.loads(path.read_text())
            names.extend(str(item["file_name"]) for item in data["images"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: expected COCO-style json with images[*].file_name ({err!r})") from None
    return names


def colors_to_labels(rgb: np.ndarray, path: str | Path = "<array>", strict: bool = False) -> np.ndarray:
    """Map a colour-coded segmentation to label ids through :data:`DEEPFASHION_PALETTE`.

    Args:
        rgb: uint8 (H, W, 3).
        path: file name for messages.
        strict: raise on colours outside the palette instead of snapping them to the nearest colour.

    Returns:
        int64 (H, W) labels in 0..15.

    Raises:
        ValueError: ``strict`` and an unknown colour is present (message names the file and colours).

    Example:
        >>> colors_to_labels(np.array([[[0, 0, 0], [255, 255, 0]]], np.uint8)).tolist()
        [[0, 15]]
    """
    codes = (
        (rgb[..., 0].astype(np.int64) << 16)
        | (rgb[..., 1].astype(np.int64) << 8)
        | rgb[..., 2].astype(np.int64)
    )
    sorted_codes = _PALETTE_CODES[_CODE_ORDER]
    pos = np.clip(np.searchsorted(sorted_codes, codes), 0, len(sorted_codes) - 1)
    known = sorted_codes[pos] == codes
    labels = _CODE_ORDER[pos].astype(np.int64)
    if not known.all():
        unknown = np.unique(rgb[~known].reshape(-1, 3), axis=0)
        message = (
            f"{path}: {int((~known).sum())} pixels have colours outside the DeepFashion palette, "
            f"e.g. {unknown[:3].tolist()}"
        )
        if strict:
            raise ValueError(message)
        logger.warning("%s; mapped to the nearest palette colour", message)
        diff = rgb[~known].astype(np.int64)[:, None, :] - DEEPFASHION_PALETTE[None]  # (M, 16, 3)
        labels[~known] = np.argmin((diff**2).sum(axis=2), axis=1)
    return labels


class DeepFashionDataset(SampleDataset):
    """DeepFashion segmentation images with 16-label ground truth (module docstring).

    Args:
        root: the ``segmentation`` folder.
        files: image file names relative to ``root``.
        size: output side S.
        flip: random horizontal flip for augmented samples.
        augment: RandomResizedCrop + flip (else resize-longest + pad).
        strict: raise on unreadable files / unknown colours.
        seed: mixed into the per-sample generators.
    """

    has_masks = True
    keypoint_names = None

    def __init__(
        self, root: Path, files: list[str], size: int, flip: bool, augment: bool, strict: bool, seed: int = 0
    ) -> None:
        super().__init__(augment=augment, strict=strict, seed=seed)
        self.root = Path(root)
        self.files = files
        self.size = int(size)
        self.flip = bool(flip)
        self.part_names = list(DEEPFASHION_PART_NAMES)
        self.flip_permutation = None
        # the published Full numbers need data.deepfashion_variant=full; these are named for what they are
        self.full_metrics_suffix = "_padded_gtmask"

    def __len__(self) -> int:
        return len(self.files)

    def sample_name(self, index: int) -> str:
        """Image path relative to the root (the json ``file_name``)."""
        return self.files[index]

    def load_sample(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Read image ``index`` and its labels; ``rng`` (augmented samples) drives the crop and flip."""
        image_path = self.root / self.files[index]
        seg_path = segment_path(image_path)
        image_u8 = read_image(image_path)
        labels = colors_to_labels(read_image(seg_path), seg_path, strict=self.strict)
        check_same_size(image_path, seg_path, image_u8.shape, labels.shape)
        image = image_u8.astype(np.float32) / 255.0
        size = self.size
        if rng is not None:
            top, left, h, w = T.sample_resized_crop(
                image.shape[0], image.shape[1], CROP_SCALE, CROP_RATIO, rng
            )
            image = T.resize_image(image[top : top + h, left : left + w], (size, size), antialias=True)
            labels = T.resize_nearest(labels[top : top + h, left : left + w], (size, size), half_pixel=True)
            if self.flip and rng.random() > 0.5:
                image, labels = hflip(image), hflip(labels)
        else:
            new_h, new_w, _ = T.size_for_longest_side(image.shape[0], image.shape[1], size)
            image = T.resize_image(image, (new_h, new_w), antialias=False)
            labels = T.resize_nearest(labels, (new_h, new_w), half_pixel=False)
            image, _, _ = T.pad_to_size(image, size, "edge")
            labels, _, _ = T.pad_to_size(labels, size, "zero")
        fg_mask = (labels != 0).astype(np.float32)
        tight = T.mask_box(fg_mask)
        height, width = labels.shape
        box = T.inclusive_to_continuous(tight) if tight is not None else np.array([0.0, 0.0, width, height])
        return make_sample(image, fg_mask, box, 0, index, self.sample_name(index), parts=labels)


class DeepFashionFullProtocol(DeepFashionDataset):
    """The reference's DeepFashion Full-protocol pipeline (module docstring); evaluation only.

    Args:
        root: the ``segmentation`` folder.
        files: image file names relative to ``root``.
        size: the shorter side after resizing.
        strict: raise on unreadable files / unknown colours.
        mask_dir: the ``supervisedlabels`` folder.
    """

    full_labels = "mask_levels"  # engine.evaluate: Full label = level * (argmax + 1), as the reference

    def __init__(self, root: Path, files: list[str], size: int, strict: bool, mask_dir: Path) -> None:
        super().__init__(root, files, size, flip=False, augment=False, strict=strict)
        self.mask_dir = Path(mask_dir)
        self.full_metrics_suffix = ""  # the published Full protocol

    def load_sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Read image ``index``, its labels and its predicted mask; ``rng`` is ignored."""
        image_path = self.root / self.files[index]
        seg_path = segment_path(image_path)
        mask_path = self.mask_dir / f"{self.files[index]}.png"  # ref: supervisedlabels/<file_name>.png
        image_u8 = read_image(image_path)
        labels = colors_to_labels(read_image(seg_path), seg_path, strict=self.strict)
        levels = read_mask(mask_path, mode="gray") * 255.0  # raw levels, as the reference's To_tensor
        check_same_size(image_path, seg_path, image_u8.shape, labels.shape)
        check_same_size(image_path, mask_path, image_u8.shape, levels.shape)
        size = T.size_for_shorter_side(image_u8.shape[0], image_u8.shape[1], self.size)
        image = T.resize_image(image_u8.astype(np.float32) / 255.0, size, antialias=True)
        # ref: transforms.Resize (PIL bilinear) on the label map and the mask, stored as uint8
        labels = np.rint(T.resize_image(labels.astype(np.float32), size, antialias=True)).astype(np.int64)
        levels = np.rint(T.resize_image(levels, size, antialias=True)).astype(np.float32)
        fg_mask = (levels > 0).astype(np.float32)
        height, width = labels.shape
        box = np.array([0.0, 0.0, width, height])
        sample = make_sample(image, fg_mask, box, 0, index, self.sample_name(index), parts=labels)
        sample["mask_levels"] = torch.from_numpy(levels)[None]  # (1, H, W) integer levels 0..255
        return sample


def supervised_mask_dir(root: Path) -> Path:
    """The ``supervisedlabels`` folder for a DeepFashion ``segmentation`` root (raises if absent)."""
    candidates = [root / "supervisedlabels", root.parent.parent / "supervisedlabels"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"DeepFashion: data.deepfashion_variant=full needs the authors' predicted masks: expected "
        f"{candidates[1]} or {candidates[0]} (from: {SOURCE_SUP})"
    )


def build(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> SampleDataset:
    """Build the DeepFashion segmentation data set.

    Args:
        cfg: data config (root, image_size, strict, flip, deepfashion_variant).
        split: ``"train"``, ``"test"`` (query + gallery), ``"query"`` or ``"gallery"``.
        train: training pipeline; random crops and flips only for ``train and split == "train"``, as in the
            reference (other splits give the deterministic resize + pad squares).
        seed: mixed into the per-sample augmentation generators.

    Returns:
        A :class:`DeepFashionDataset`.

    Raises:
        FileNotFoundError: a split json is missing (message gives the expected path and its source).
    """
    if cfg.root is None:
        raise ValueError("DeepFashion: data.root is not set; point it at the Anno/segmentation folder")
    root = resolve_root(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"DeepFashion: data.root {root} is not a folder (from: {SOURCE})")
    files = read_split(root, split)
    if cfg.deepfashion_variant == "full" and not train:
        full = DeepFashionFullProtocol(root, files, cfg.image_size, cfg.strict, supervised_mask_dir(root))
        logger.info("DeepFashion %s (reference Full protocol): %d images", split, len(full))
        return full
    dataset = DeepFashionDataset(
        root,
        files,
        cfg.image_size,
        flip=cfg.flip,
        augment=train and split == "train",
        strict=cfg.strict,
        seed=seed,
    )
    logger.info("DeepFashion %s: %d images", split, len(dataset))
    return dataset
