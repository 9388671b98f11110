"""PASCAL-Part (VOC2010 images + ``Annotations_Part`` .mat files), one object class at a time.

``data.root`` holds ``VOC2010/`` (``JPEGImages/``, ``ImageSets/Main/``) and ``Annotations_Part/`` (the
reference's ``VOCdevkit_2010`` folder; a root containing ``VOCdevkit_2010/`` is accepted too). See
``docs/DATA.md``.

As the reference (``datasets/pascal_parts.py``):

- ids come from ``VOC2010/ImageSets/Main/{cls}_{train|val}.txt`` (split ``test`` = ``val``); ids marked
  ``-1`` (no object of the class) are not opened (the reference opens them and finds nothing).
- every object of class ``data.pascal_class`` whose mask box covers more than 10 % (train) / 20 % (test)
  of the image, with the reference's area formula ``(x1 - x0) * (y1 - y0) / (H * W)`` on inclusive pixel
  indices, is one sample.
- part masks are painted into a label map, the first part of the object's list winning where parts
  overlap; ``fg_mask`` = union of the annotated parts (object pixels without a part are background).
- crop pipeline of CUB: box of the object mask, padded 5 % per side (+ ±5 % jitter and a flip for
  ``train and split == "train"``), squared, cropped (image 1/255, labels 0 outside), resized to
  ``image_size``.
- mask-free training (``data.masks=ignore``, training split): no annotation places the crop. Each image
  that holds a selected object is one sample (once, however many objects it holds), the whole image with
  the shorter side resized to ``image_size`` and the centre square cut out, as folder images without
  masks (docs/DATA.md). The selection of images itself still comes from the annotations (it defines the
  data set); evaluation keeps the object crops.

Labels: the reference paints one label per fine PASCAL-Part name (``head``, ``lfleg``, ``wheel`` ...; the
number suffix of ``wheel_1`` is dropped). By default this module merges them into a few parts per class
(:data:`MERGED_PARTS`; e.g. animals: head, torso, legs, tail), documented in ``docs/DATA.md``;
``merge_parts=False`` gives the reference's fine labels (:data:`FINE_PARTS`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from partdisco.config import DataConfig
from partdisco.data import transforms as T
from partdisco.data.io import SampleDataset, check_same_size, read_image
from partdisco.data.keypoints import hflip
from partdisco.data.sample import make_sample

logger = logging.getLogger(__name__)

SOURCE_VOC = (
    "PASCAL VOC2010 trainval tarball VOCtrainval_03-May-2010.tar (JPEGImages, ImageSets); see docs/DATA.md"
)
SOURCE_PARTS = "PASCAL-Part annotations trainval.tar.gz (Annotations_Part/*.mat); see docs/DATA.md"
AREA_FRACTION = {"train": 0.10, "test": 0.20}  # ref: pascal_parts.py pct_area threshold

_ANIMAL_HEAD = ["head", "leye", "reye", "lear", "rear", "nose", "muzzle", "lhorn", "rhorn"]
_PAW_LEGS = ["lfleg", "lfpa", "rfleg", "rfpa", "lbleg", "lbpa", "rbleg", "rbpa"]
_HOOF_LEGS = [
    "lfuleg",
    "lflleg",
    "rfuleg",
    "rflleg",
    "lbuleg",
    "lblleg",
    "rbuleg",
    "rblleg",
    "lfho",
    "rfho",
    "lbho",
    "rbho",
]
_VEHICLE_BODY = [
    "frontside",
    "backside",
    "leftside",
    "rightside",
    "roofside",
    "door",
    "leftmirror",
    "rightmirror",
    "fliplate",
    "bliplate",
]

MERGED_PARTS: dict[str, list[tuple[str, list[str]]]] = {
    "cat": [("head", _ANIMAL_HEAD), ("torso", ["torso", "neck"]), ("legs", _PAW_LEGS), ("tail", ["tail"])],
    "dog": [("head", _ANIMAL_HEAD), ("torso", ["torso", "neck"]), ("legs", _PAW_LEGS), ("tail", ["tail"])],
    "horse": [("head", _ANIMAL_HEAD), ("torso", ["torso", "neck"]), ("legs", _HOOF_LEGS), ("tail", ["tail"])],
    "cow": [("head", _ANIMAL_HEAD), ("torso", ["torso", "neck"]), ("legs", _HOOF_LEGS), ("tail", ["tail"])],
    "sheep": [("head", _ANIMAL_HEAD), ("torso", ["torso", "neck"]), ("legs", _HOOF_LEGS), ("tail", ["tail"])],
    "aeroplane": [
        ("body", ["body"]),
        ("wings", ["lwing", "rwing"]),
        ("tail", ["stern", "tail"]),
        ("engines", ["engine"]),
        ("wheels", ["wheel"]),
    ],
    "car": [
        ("body", _VEHICLE_BODY),
        ("windows", ["window"]),
        ("wheels", ["wheel"]),
        ("lights", ["headlight"]),
    ],
    "bus": [
        ("body", _VEHICLE_BODY),
        ("windows", ["window"]),
        ("wheels", ["wheel"]),
        ("lights", ["headlight"]),
    ],
    "motorbike": [
        ("wheels", ["fwheel", "bwheel"]),
        ("handlebar", ["handlebar"]),
        ("saddle", ["saddle"]),
        ("headlight", ["headlight"]),
    ],
    "bicycle": [
        ("wheels", ["fwheel", "bwheel"]),
        ("chainwheel", ["chainwheel"]),
        ("handlebar", ["handlebar"]),
        ("saddle", ["saddle"]),
        ("headlight", ["headlight"]),
    ],
}
"""Merged part sets (label i + 1 = i-th entry) for the 10 classes of the paper's Table 4."""

# Cows and sheep have the same fine parts (horns included).
_HORNED_FINE_PARTS = ["head", "lblleg", "lbuleg", "lear", "leye", "lflleg", "lfuleg", "lhorn", "muzzle"]
_HORNED_FINE_PARTS += ["neck", "rblleg", "rbuleg", "rear", "reye", "rflleg", "rfuleg", "rhorn"]
_HORNED_FINE_PARTS += ["tail", "torso"]

FINE_PARTS: dict[str, list[str]] = {
    "cat": ["head", "lbleg", "lbpa", "lear", "leye", "lfleg", "lfpa", "neck", "nose", "rbleg", "rbpa", "rear"]
    + ["reye", "rfleg", "rfpa", "tail", "torso"],
    "dog": [
        "head",
        "lbleg",
        "lbpa",
        "lear",
        "leye",
        "lfleg",
        "lfpa",
        "muzzle",
        "neck",
        "nose",
        "rbleg",
        "rbpa",
    ]
    + ["rear", "reye", "rfleg", "rfpa", "tail", "torso"],
    "horse": [
        "head",
        "lbho",
        "lblleg",
        "lbuleg",
        "lear",
        "leye",
        "lfho",
        "lflleg",
        "lfuleg",
        "muzzle",
        "neck",
    ]
    + ["rbho", "rblleg", "rbuleg", "rear", "reye", "rfho", "rflleg", "rfuleg", "tail", "torso"],
    "cow": _HORNED_FINE_PARTS,
    "sheep": list(_HORNED_FINE_PARTS),
    "aeroplane": ["body", "engine", "lwing", "rwing", "stern", "tail", "wheel"],
    "car": ["backside", "bliplate", "door", "fliplate", "frontside", "headlight", "leftmirror", "leftside"]
    + ["rightmirror", "rightside", "roofside", "wheel", "window"],
    "bus": ["backside", "bliplate", "door", "fliplate", "frontside", "headlight", "leftmirror", "leftside"]
    + ["rightmirror", "rightside", "roofside", "wheel", "window"],
    "motorbike": ["bwheel", "fwheel", "handlebar", "headlight", "saddle"],
    "bicycle": ["bwheel", "chainwheel", "fwheel", "handlebar", "headlight", "saddle"],
    "bird": [
        "beak",
        "head",
        "leye",
        "lfoot",
        "lleg",
        "lwing",
        "neck",
        "reye",
        "rfoot",
        "rleg",
        "rwing",
        "tail",
    ]
    + ["torso"],
    "bottle": ["body", "cap"],
    "pottedplant": ["plant", "pot"],
    "tvmonitor": ["screen"],
}
"""The reference's per-class fine label lists (``pascal_parts.py dict_part`` without 'background')."""

CLASSES = tuple(sorted(MERGED_PARTS))


def resolve_root(root: str | Path) -> Path:
    """The folder holding ``VOC2010/`` and ``Annotations_Part/`` (``root`` or ``root/VOCdevkit_2010``)."""
    root = Path(root).expanduser()
    if not (root / "Annotations_Part").is_dir() and (root / "VOCdevkit_2010").is_dir():
        return root / "VOCdevkit_2010"
    return root


def part_table(cls: str, merge_parts: bool) -> tuple[list[str], dict[str, int]]:
    """Label names (for labels 1..P) and the fine-name -> label map of a class.

    Example:
        >>> names, lookup = part_table("horse", True)
        >>> names, lookup["lfho"], lookup["muzzle"]
        (['head', 'torso', 'legs', 'tail'], 3, 1)
    """
    if merge_parts:
        if cls not in MERGED_PARTS:
            raise ValueError(
                f"PASCAL-Part: no merged part table for class {cls!r}; choose from {list(CLASSES)}"
            )
        names = [name for name, _ in MERGED_PARTS[cls]]
        lookup = {fine: i + 1 for i, (_, fines) in enumerate(MERGED_PARTS[cls]) for fine in fines}
        return names, lookup
    if cls not in FINE_PARTS:
        raise ValueError(f"PASCAL-Part: no part list for class {cls!r}; choose from {sorted(FINE_PARTS)}")
    names = list(FINE_PARTS[cls])
    return names, {fine: i + 1 for i, fine in enumerate(names)}


def split_ids(root: Path, cls: str, split: str) -> list[str]:
    """Image ids of ``{cls}_{train|val}.txt`` that may contain the class (label != -1), in file order.

    Raises:
        FileNotFoundError: the list is missing (message gives the expected path and its source).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"PASCAL-Part split must be 'train', 'val' or 'test' (= val), got {split!r}")
    voc_split = "train" if split == "train" else "val"
    path = root / "VOC2010" / "ImageSets" / "Main" / f"{cls}_{voc_split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"PASCAL-Part: missing image list: expected {path} (from: {SOURCE_VOC})")
    ids = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) >= 2 and fields[1] == "-1":
            continue
        ids.append(fields[0])
    return ids


def _as_list(value: Any) -> list[Any]:
    """A squeezed MATLAB struct array (struct, array of structs or empty) as a list."""
    if isinstance(value, np.ndarray):
        return list(value.ravel()) if value.dtype == object else []
    return [value]


@dataclass
class PartObject:
    """One object of the chosen class.

    Attributes:
        image_id: VOC id (``2008_000008``).
        object_index: position in the file's object list.
        bbox: int64 (4,) inclusive box of the object mask.
        labels: uint8 label map cropped to ``labels_origin`` (the box of the object and its parts).
        labels_origin: (x, y) of ``labels`` in the image.
        image_shape: (H, W) of the annotation.
    """

    image_id: str
    object_index: int
    bbox: np.ndarray
    labels: np.ndarray
    labels_origin: tuple[int, int]
    image_shape: tuple[int, int]

    def full_labels(self) -> np.ndarray:
        """The label map at full image size, uint8 (H, W)."""
        out = np.zeros(self.image_shape, dtype=np.uint8)
        x, y = self.labels_origin
        h, w = self.labels.shape
        out[y : y + h, x : x + w] = self.labels
        return out


def load_objects(
    mat_path: Path, cls: str, lookup: dict[str, int], min_area: float, image_id: str
) -> list[PartObject]:
    """Read one ``Annotations_Part/<id>.mat`` and return its objects of class ``cls`` above ``min_area``.

    Args:
        mat_path: the annotation file (``anno.objects[*].{class, mask, parts[*].{part_name, mask}}``).
        cls: object class.
        lookup: fine part name (before any ``_N`` suffix) -> label.
        min_area: minimum box area fraction (strictly greater, as the reference).
        image_id: VOC id for the records.

    Raises:
        ValueError: malformed file or a part name missing from ``lookup`` (message names file and name).
    """
    try:
        data = scipy.io.loadmat(str(mat_path), squeeze_me=True, struct_as_record=False)
        objects = _as_list(data["anno"].objects)
    except Exception as err:  # scipy raises several types for a bad file
        raise ValueError(f"{mat_path}: not a PASCAL-Part annotation ({type(err).__name__}: {err})") from None
    found = []
    for obj_index, obj in enumerate(objects):
        if str(getattr(obj, "class", "")) != cls:
            continue
        obj_mask = np.asarray(obj.mask)
        tight = T.mask_box(obj_mask)
        if tight is None:
            continue
        height, width = obj_mask.shape
        x0, y0, x1, y1 = (int(v) for v in tight)
        if (x1 - x0) * (y1 - y0) / (height * width + 1e-7) <= min_area:  # ref: pct_area(...) > threshold
            continue
        labels = np.zeros((height, width), dtype=np.uint8)
        for part in reversed(_as_list(obj.parts)):  # reversed: the first listed part wins overlaps
            fine = str(part.part_name).split("_")[0]
            if fine not in lookup:
                raise ValueError(
                    f"{mat_path}: object {obj_index} ({cls}) has part {str(part.part_name)!r}, "
                    f"unknown for {cls} (known: {sorted(lookup)})"
                )
            part_mask = np.asarray(part.mask) > 0
            if part_mask.shape != labels.shape:
                raise ValueError(
                    f"{mat_path}: part {part.part_name!r} mask {part_mask.shape} != {labels.shape}"
                )
            labels[part_mask] = lookup[fine]
        keep = T.mask_box(labels)
        if keep is None:
            keep = tight
        kx0, ky0 = min(int(keep[0]), x0), min(int(keep[1]), y0)
        kx1, ky1 = max(int(keep[2]), x1), max(int(keep[3]), y1)
        found.append(
            PartObject(
                image_id=image_id,
                object_index=obj_index,
                bbox=tight,
                labels=labels[ky0 : ky1 + 1, kx0 : kx1 + 1].copy(),
                labels_origin=(kx0, ky0),
                image_shape=(height, width),
            )
        )
    return found


class PascalPartDataset(SampleDataset):
    """Objects of one PASCAL-Part class, cropped as in CUB training (module docstring).

    Args:
        root: folder with ``VOC2010/`` and ``Annotations_Part/``.
        objects: the samples.
        part_names: names of labels 1..P.
        crop: output side S, box padding and jitter, flip (:class:`.transforms.ObjectCrop`).
        augment: draw jitter / flip.
        strict: raise on unreadable images instead of skipping.
        seed: mixed into the per-sample generators.
        whole_image: mask-free training: one sample per image, the whole image (centre square,
            :func:`.transforms.centre_square`), foreground all of it, no part labels (module docstring).
    """

    has_masks = True
    keypoint_names = None

    def __init__(
        self,
        root: Path,
        objects: list[PartObject],
        part_names: list[str],
        crop: T.ObjectCrop,
        augment: bool,
        strict: bool,
        seed: int = 0,
        whole_image: bool = False,
    ) -> None:
        super().__init__(augment=augment, strict=strict, seed=seed)
        self.root = Path(root)
        self.whole_image = whole_image
        self.has_masks = not whole_image
        if whole_image:  # one sample per image
            seen: set[str] = set()
            objects = [o for o in objects if not (o.image_id in seen or seen.add(o.image_id))]
        self.objects = objects
        self.part_names = list(part_names)
        self.size, self.padding_frac, self.jitter_frac, self.flip = (
            crop.size, crop.padding_frac, crop.jitter_frac, crop.flip,
        )  # fmt: skip
        self.flip_permutation = None

    def __len__(self) -> int:
        return len(self.objects)

    def sample_name(self, index: int) -> str:
        """Image path relative to the root (objects of one image share it)."""
        return f"VOC2010/JPEGImages/{self.objects[index].image_id}.jpg"

    def load_sample(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Read object ``index``'s image and crop around it; ``rng`` drives the jitter and the flip."""
        obj = self.objects[index]
        image_path = self.root / self.sample_name(index)
        image_u8 = read_image(image_path)
        check_same_size(
            image_path,
            self.root / "Annotations_Part" / f"{obj.image_id}.mat",
            image_u8.shape,
            obj.image_shape,
        )
        if self.whole_image:  # mask-free training: neither the box nor the mask places the crop
            image, _, _, box = T.centre_square(image_u8.astype(np.float32) / 255.0, self.size)
            fg_mask = np.ones((self.size, self.size), dtype=np.float32)
            if rng is not None and self.flip and rng.random() > 0.5:
                image, fg_mask, box = hflip(image), hflip(fg_mask), T.flip_box(box, self.size)
            return make_sample(image, fg_mask, box, 0, index, self.sample_name(index))
        crop_box = T.object_crop_box(obj.bbox, self.padding_frac, self.jitter_frac, rng)
        image, scale = T.crop_resize_image(image_u8.astype(np.float32) / 255.0, crop_box, self.size)
        labels = T.crop_resize_labels(obj.full_labels(), crop_box, self.size)
        image, _, _ = T.pad_to_size(image, self.size, "edge")  # ref: pad_if_smaller (no-op for square crops)
        labels, _, _ = T.pad_to_size(labels, self.size, "zero")
        height, width = labels.shape
        origin = (float(crop_box[0]), float(crop_box[1]))
        box = T.transform_box(T.inclusive_to_continuous(obj.bbox), origin, (scale, scale), (height, width))
        if rng is not None and self.flip and rng.random() > 0.5:
            image, labels = hflip(image), hflip(labels)
            box = T.flip_box(box, width)
        fg_mask = (labels != 0).astype(np.float32)
        return make_sample(image, fg_mask, box, 0, index, self.sample_name(index), parts=labels)


def build(
    cfg: DataConfig, split: str, train: bool, seed: int = 0, merge_parts: bool | None = None
) -> SampleDataset:
    """Build PASCAL-Part for class ``cfg.pascal_class``.

    Args:
        cfg: data config (root, image_size, strict, pascal_class, padding_frac, jitter_frac, flip).
        split: ``"train"`` or ``"test"`` / ``"val"`` (VOC2010 val).
        train: training pipeline; jitter and flip only for ``train and split == "train"`` (as the reference).
            Evaluation uses the same square crops without them.
        seed: mixed into the per-sample augmentation generators.
        merge_parts: merged part sets (:data:`MERGED_PARTS`) or the reference's fine labels; None reads
            ``cfg.pascal_merge_parts``.

    Returns:
        A :class:`PascalPartDataset`.

    Raises:
        FileNotFoundError: a required file or folder is missing (message gives the path and its source).
    """
    if cfg.root is None:
        raise ValueError(
            "PASCAL-Part: data.root is not set; point it at the folder holding VOC2010/ and Annotations_Part/"
        )
    root = resolve_root(cfg.root)
    cls = cfg.pascal_class
    if merge_parts is None:
        merge_parts = cfg.pascal_merge_parts
    names, lookup = part_table(cls, merge_parts)
    annotations = root / "Annotations_Part"
    if not annotations.is_dir():
        raise FileNotFoundError(
            f"PASCAL-Part: missing annotations: expected {annotations} (from: {SOURCE_PARTS})"
        )
    if not (root / "VOC2010" / "JPEGImages").is_dir():
        raise FileNotFoundError(
            f"PASCAL-Part: missing images: expected {root / 'VOC2010' / 'JPEGImages'} (from: {SOURCE_VOC})"
        )
    min_area = AREA_FRACTION["train" if split == "train" else "test"]
    objects: list[PartObject] = []
    missing = 0
    for image_id in split_ids(root, cls, split):
        mat_path = annotations / f"{image_id}.mat"
        if not mat_path.is_file():
            missing += 1
            continue
        objects.extend(load_objects(mat_path, cls, lookup, min_area, image_id))
    if missing:
        logger.warning("PASCAL-Part: %d %s ids of %s have no file in %s", missing, split, cls, annotations)
    dataset = PascalPartDataset(
        root,
        objects,
        names,
        crop=T.ObjectCrop.from_config(cfg),
        augment=train and split == "train",
        strict=cfg.strict,
        seed=seed,
        whole_image=train and split == "train" and cfg.masks == "ignore",
    )
    what = "whole images (data.masks=ignore)" if dataset.whole_image else "objects"
    logger.info("PASCAL-Part %s %s: %d %s", cls, split, len(dataset), what)
    return dataset
