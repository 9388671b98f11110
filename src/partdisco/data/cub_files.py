"""CUB-200-2011's annotation files: where each comes from, and reading them into :class:`CubRecord` lists.

- :func:`load_cmr_records`: CMR's ``cachedir/cub/data/{split}_cub_cleaned.mat`` (the training pipeline;
  0-based coordinates, packed masks).
- :func:`load_official_records`: the official ``images.txt``, ``train_test_split.txt``,
  ``bounding_boxes.txt`` and ``parts/part_locs.txt`` (the evaluation pipeline; coordinates as stored).
- The ``SOURCE_*`` texts say where a missing file comes from; :func:`resolve_root` finds the
  ``CUB_200_2011`` folder. The data set itself is :mod:`partdisco.data.cub`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

CUB_KEYPOINT_NAMES: list[str] = [
    "back",
    "beak",
    "belly",
    "breast",
    "crown",
    "forehead",
    "left eye",
    "left leg",
    "left wing",
    "nape",
    "right eye",
    "right leg",
    "right wing",
    "tail",
    "throat",
]
"""The 15 CUB keypoints in ``parts/parts.txt`` order (used when that file is absent)."""

CUB_FLIP_PERMUTATION = np.array([1, 2, 3, 4, 5, 6, 11, 12, 13, 10, 7, 8, 9, 14, 15], dtype=np.int64) - 1
"""Row order after a horizontal flip: swaps left/right eye, leg and wing (ref: ``cub.py kp_perm``)."""

NUM_KEYPOINTS = 15
GT_MASK_THRESHOLD = 254  # ref: cub200.py (np.array(mask.convert('L')) == 255)

SOURCE_OFFICIAL = (
    "official CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/); see docs/DATA.md"
)
SOURCE_SEGMENTATIONS = "official CUB segmentations.tgz (extract into CUB_200_2011/); see docs/DATA.md"
SOURCE_CMR = (
    "CMR cachedir.tar.gz (akanazawa/cmr issue #3), extracted into CUB_200_2011/cachedir; see docs/DATA.md"
)
SOURCE_SUP = "the authors' cub_supervisedlabels.tar.gz (unsup-parts README); see docs/DATA.md"


def resolve_root(root: str | Path) -> Path:
    """The ``CUB_200_2011`` folder: ``root`` itself, or ``root/CUB_200_2011`` when that exists."""
    root = Path(root).expanduser()
    markers = ("images.txt", "images", "cachedir")
    if not any((root / m).exists() for m in markers) and (root / "CUB_200_2011").is_dir():
        return root / "CUB_200_2011"
    return root


def cmr_annotation_path(root: Path, split: str) -> Path:
    """Path of CMR's ``{split}_cub_cleaned.mat`` under a ``CUB_200_2011`` folder."""
    return root / "cachedir" / "cub" / "data" / f"{split}_cub_cleaned.mat"


def class_from_rel_path(rel_path: str) -> int:
    """Species id 1..200 from the folder prefix of a relative path (``"001.Black_footed_Albatross/..."``).

    Example:
        >>> class_from_rel_path("017.Cardinal/Cardinal_0001_17057.jpg")
        17
    """
    prefix = rel_path.replace("\\", "/").split("/")[0].split(".")[0]
    if not prefix.isdigit():
        raise ValueError(
            f"cannot read the class from {rel_path!r}: expected a 'NNN.Species/...' folder prefix"
        )
    return int(prefix)


def read_keypoint_names(root: Path) -> list[str]:
    """Keypoint names from ``parts/parts.txt`` (``"<id> <name>"`` lines), else :data:`CUB_KEYPOINT_NAMES`."""
    path = root / "parts" / "parts.txt"
    if not path.is_file():
        return list(CUB_KEYPOINT_NAMES)
    names = []
    for line in path.read_text().splitlines():
        fields = line.strip().split(maxsplit=1)
        if len(fields) == 2:
            names.append(fields[1].strip())
    if len(names) != NUM_KEYPOINTS:
        raise ValueError(f"{path}: expected {NUM_KEYPOINTS} '<id> <name>' lines, found {len(names)}")
    return names


def require(path: Path, what: str, source: str) -> Path:
    """``path``, or FileNotFoundError naming the missing file and where it comes from."""
    if not path.exists():
        raise FileNotFoundError(f"CUB: missing {what}: expected {path} (from: {source})")
    return path


@dataclass
class CubRecord:
    """One annotated CUB image.

    Attributes:
        rel_path: path under ``images/``.
        class_id: species 1..200.
        bbox: float64 (4,) 0-based inclusive ``(x0, y0, x1, y1)`` (training pipeline).
        keypoints: float64 (15, 3) ``(x, y, visible)`` in original image pixels (training: 0-based; eval:
            as stored in ``part_locs.txt``).
        box_xywh: float64 (4,) official ``(x, y, w, h)`` (evaluation pipeline); None for CMR records.
        mask_bits: CMR mask packed with ``np.packbits`` (mask > 0), or None (read from ``segmentations``).
        mask_shape: (H, W) of the packed mask.
    """

    rel_path: str
    class_id: int
    bbox: np.ndarray
    keypoints: np.ndarray
    box_xywh: np.ndarray | None = None
    mask_bits: np.ndarray | None = None
    mask_shape: tuple[int, int] | None = None

    def cmr_mask(self) -> np.ndarray:
        """Unpack the CMR mask to uint8 (H, W) in {0, 1}."""
        if self.mask_bits is None or self.mask_shape is None:
            raise ValueError(f"{self.rel_path}: no CMR mask stored")
        count = self.mask_shape[0] * self.mask_shape[1]
        return np.unpackbits(self.mask_bits, count=count).reshape(self.mask_shape)


def _field(obj: Any, name: str, path: Path, index: int) -> Any:
    if not hasattr(obj, name):
        raise ValueError(f"{path}: images[{index}] has no field {name!r} (expected CMR's cub_cleaned format)")
    return getattr(obj, name)


def load_cmr_records(path: Path) -> list[CubRecord]:
    """Read CMR's ``{split}_cub_cleaned.mat`` into records (0-based coordinates, packed masks).

    Args:
        path: the .mat file (``images`` struct array with rel_path, bbox{x1,y1,x2,y2}, parts (3, 15), mask).

    Returns:
        One :class:`CubRecord` per image, in file order.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file lacks the ``images`` variable or a field.
    """
    require(path, "CMR annotation file", SOURCE_CMR)
    try:
        data = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises several types for a bad file
        raise ValueError(f"{path}: not a readable MATLAB file ({type(err).__name__}: {err})") from None
    if "images" not in data:
        raise ValueError(f"{path}: no variable 'images' (expected CMR's cub_cleaned format)")
    records = []
    for i, item in enumerate(np.atleast_1d(data["images"])):
        rel_path = str(_field(item, "rel_path", path, i))
        box = _field(item, "bbox", path, i)
        bbox = np.array([float(_field(box, k, path, i)) for k in ("x1", "y1", "x2", "y2")]) - 1.0
        parts = np.asarray(_field(item, "parts", path, i), dtype=np.float64)
        if parts.shape != (3, NUM_KEYPOINTS):
            raise ValueError(
                f"{path}: images[{i}].parts has shape {parts.shape}, expected (3, {NUM_KEYPOINTS})"
            )
        keypoints = parts.T.copy()
        visible = keypoints[:, 2] > 0
        keypoints[visible, :2] -= 1.0
        mask = np.asarray(_field(item, "mask", path, i))
        if mask.ndim != 2:
            raise ValueError(f"{path}: images[{i}].mask has shape {mask.shape}, expected (H, W)")
        class_id = class_from_rel_path(rel_path)
        records.append(
            CubRecord(
                rel_path=rel_path,
                class_id=class_id,
                bbox=bbox,
                keypoints=keypoints,
                mask_bits=np.packbits(mask > 0),
                mask_shape=(int(mask.shape[0]), int(mask.shape[1])),
            )
        )
    return records


def _read_table(path: Path, columns: int) -> np.ndarray:
    """Whitespace table of numbers -> float64 (rows, columns), with an error naming the file."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: expected {columns} numeric columns per line ({err})") from None
    if values.size % columns:
        raise ValueError(f"{path}: expected {columns} numeric columns per line")
    return values.reshape(-1, columns)


def load_official_records(root: Path, split: str) -> list[CubRecord]:
    """Read the official CUB files for ``split`` ("train" or "test") into records (file order).

    Keypoints and boxes are taken as stored (``part_locs.txt`` x, y; ``bounding_boxes.txt`` x, y, w, h);
    ``bbox`` is ``(x, y, x + w - 1, y + h - 1)``.

    Raises:
        FileNotFoundError: a required file is missing (message names it and where it comes from).
        ValueError: unknown split or malformed file.
    """
    if split not in ("train", "test"):
        raise ValueError(f"CUB official split must be 'train' or 'test', got {split!r}")
    images_txt = require(root / "images.txt", "image list", SOURCE_OFFICIAL)
    split_txt = require(root / "train_test_split.txt", "train/test split", SOURCE_OFFICIAL)
    boxes_txt = require(root / "bounding_boxes.txt", "bounding boxes", SOURCE_OFFICIAL)
    parts_txt = require(root / "parts" / "part_locs.txt", "keypoint annotations", SOURCE_OFFICIAL)
    names: dict[int, str] = {}
    for line in images_txt.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2:
            names[int(fields[0])] = fields[1]
    is_train = {int(r[0]): int(r[1]) == 1 for r in _read_table(split_txt, 2)}
    boxes = {int(r[0]): r[1:5] for r in _read_table(boxes_txt, 5)}
    part_table = _read_table(parts_txt, 5)
    keypoints: dict[int, np.ndarray] = {}
    for image_id, part_id, x, y, visible in part_table:
        kps = keypoints.setdefault(int(image_id), np.zeros((NUM_KEYPOINTS, 3)))
        if not 1 <= int(part_id) <= NUM_KEYPOINTS:
            raise ValueError(f"{parts_txt}: part id {int(part_id)} outside 1..{NUM_KEYPOINTS}")
        kps[int(part_id) - 1] = (x, y, visible)
    labels: dict[int, int] = {}
    labels_txt = root / "image_class_labels.txt"
    if labels_txt.is_file():
        labels = {int(r[0]): int(r[1]) for r in _read_table(labels_txt, 2)}
    records = []
    for image_id in sorted(names):
        if image_id not in is_train:
            raise ValueError(f"{split_txt}: image id {image_id} ({names[image_id]}) has no split entry")
        if is_train[image_id] != (split == "train"):
            continue
        if image_id not in boxes:
            raise ValueError(f"{boxes_txt}: image id {image_id} ({names[image_id]}) has no box")
        x, y, w, h = boxes[image_id]
        rel_path = names[image_id]
        records.append(
            CubRecord(
                rel_path=rel_path,
                class_id=labels.get(image_id, 0) or class_from_rel_path(rel_path),
                bbox=np.array([x, y, x + w - 1.0, y + h - 1.0]),
                keypoints=keypoints.get(image_id, np.zeros((NUM_KEYPOINTS, 3))).copy(),
                box_xywh=np.array([x, y, w, h], dtype=np.float64),
            )
        )
    return records


def filter_classes(records: list[CubRecord], classes: list[int]) -> list[CubRecord]:
    """The records of the species ``classes`` (all records when it is empty)."""
    if not classes:
        return records
    wanted = {int(c) for c in classes}
    return [r for r in records if r.class_id in wanted]
