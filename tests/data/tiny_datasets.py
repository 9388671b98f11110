"""Builders of tiny on-disk copies of each real data set, in the distributed file formats.

Each ``make_tiny_*(root)`` writes a few images plus annotations under ``root`` and returns the folder to
pass as ``data.root``. They are plain functions so that any test (loaders here, end-to-end training
elsewhere) can call them with a ``tmp_path``; ``tests/data/conftest.py`` wraps them as fixtures.

Images that tests compare pixel by pixel are written as PNG data even where the real data set uses
``.jpg`` names (PIL reads by content, not by suffix), so no JPEG loss blurs the checks. Pixel values encode
their coordinates (:func:`pattern_image`), which lets tests verify crops exactly.

The constants below (boxes, keypoints, label layouts) are the ground truth the tests check against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

# --------------------------------------------------------------------------------------------------
# Shared helpers


def pattern_image(height: int, width: int, tag: int) -> np.ndarray:
    """uint8 (H, W, 3) with R = 4x + 3 tag, G = 5y, B = 40 tag (all mod 256): each pixel says where it is."""
    ys, xs = np.mgrid[0:height, 0:width]
    r = (4 * xs + 3 * tag) % 256
    g = (5 * ys) % 256
    b = np.full_like(xs, (40 * tag) % 256)
    return np.stack([r, g, b], axis=2).astype(np.uint8)


def gray_pattern(height: int, width: int) -> np.ndarray:
    """uint8 (H, W) with value 3x + 2y (mod 256)."""
    ys, xs = np.mgrid[0:height, 0:width]
    return ((3 * xs + 2 * ys) % 256).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array) if mode is None else Image.fromarray(array, mode=mode)
    img.save(path, format="PNG")


def _struct_array(records: list[dict], fields: list[str]) -> np.ndarray:
    """A (1, n) MATLAB struct array for scipy.io.savemat."""
    out = np.zeros((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, record in enumerate(records):
        for f in fields:
            out[0, i][f] = record[f]
    return out


# --------------------------------------------------------------------------------------------------
# CUB-200-2011

CUB_KP_NAMES = [
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

# image_id, rel_path, is_train, (H, W), official box (x, y, w, h), grayscale
CUB_IMAGES: list[tuple[int, str, bool, tuple[int, int], tuple[float, float, float, float], bool]] = [
    (
        1,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
        True,
        (48, 64),
        (10, 14, 40, 20),
        False,
    ),
    (
        2,
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg",
        False,
        (48, 64),
        (12.5, 10.0, 30, 25),
        False,
    ),
    (3, "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg", True, (40, 56), (0, 0, 40, 20), False),
    (4, "002.Laysan_Albatross/Laysan_Albatross_0004_917.jpg", False, (50, 40), (5, 6, 30, 38), True),
    (5, "003.Sooty_Albatross/Sooty_Albatross_0005_796.jpg", False, (48, 64), (20, 10, 30, 30), False),
    (6, "003.Sooty_Albatross/Sooty_Albatross_0006_1.jpg", True, (48, 64), (8, 8, 44, 30), False),
]


def cub_keypoints(image_id: int) -> np.ndarray:
    """float64 (15, 3) 0-based keypoints (x, y, visible) inside the image's box; every third invisible."""
    _, _, _, _, (x, y, w, h), _ = next(item for item in CUB_IMAGES if item[0] == image_id)
    kps = np.zeros((15, 3))
    for j in range(15):
        if j % 3 == 2:
            continue
        kps[j] = (int(x) + (7 * j + image_id) % int(w), int(y) + (5 * j + image_id) % int(h), 1)
    return kps


def cub_mask(image_id: int) -> np.ndarray:
    """uint8 (H, W) in {0, 1}: the box, minus a 3x3 notch at its top-left corner."""
    _, _, _, (height, width), (x, y, w, h), _ = next(item for item in CUB_IMAGES if item[0] == image_id)
    x0, y0 = int(np.round(x)), int(np.round(y))
    mask = np.zeros((height, width), np.uint8)
    mask[y0 : y0 + int(h), x0 : x0 + int(w)] = 1
    mask[y0 : y0 + 3, x0 : x0 + 3] = 0
    return mask


def cub_image(image_id: int) -> np.ndarray:
    """The stored pixels: uint8 (H, W, 3), or (H, W) for the grayscale image."""
    _, _, _, (height, width), _, gray = next(item for item in CUB_IMAGES if item[0] == image_id)
    return gray_pattern(height, width) if gray else pattern_image(height, width, image_id)


def make_tiny_cub(root: Path, cmr: bool = True, supervised: bool = True) -> Path:
    """Write a 6-image CUB (3 train / 3 test, classes 1-3) under ``root/CUB``.

    Args:
        root: parent folder.
        cmr: also write CMR's ``cachedir/cub/data/{train,test}_cub_cleaned.mat``.
        supervised: also write ``root/CUB/supervisedlabels/`` (the authors' supervised masks).

    Returns:
        The ``CUB_200_2011`` folder (``data.root``).
    """
    base = Path(root) / "CUB" / "CUB_200_2011"
    (base / "parts").mkdir(parents=True, exist_ok=True)
    lines_images, lines_split, lines_boxes, lines_parts, lines_labels = [], [], [], [], []
    cmr_records: dict[str, list[dict]] = {"train": [], "test": []}
    for image_id, rel_path, is_train, _, (x, y, w, h), _ in CUB_IMAGES:
        _save_png(cub_image(image_id), base / "images" / rel_path)
        mask = cub_mask(image_id)
        seg = mask.astype(np.uint8) * 255
        ring = np.zeros_like(mask, dtype=bool)  # soft border (value 128) around the object
        ys, xs = np.nonzero(mask)
        ring[max(ys.min() - 1, 0), xs.min() : xs.max() + 1] = True
        seg[ring & (mask == 0)] = 128
        _save_png(seg, base / "segmentations" / Path(rel_path).with_suffix(".png"))
        if supervised:
            sup = (mask * 200).astype(np.uint8)
            _save_png(sup, base.parent / "supervisedlabels" / Path(rel_path).with_suffix(".png"))
        class_id = int(rel_path[:3])
        lines_images.append(f"{image_id} {rel_path}")
        lines_split.append(f"{image_id} {1 if is_train else 0}")
        lines_boxes.append(f"{image_id} {float(x)} {float(y)} {float(w)} {float(h)}")
        lines_labels.append(f"{image_id} {class_id}")
        kps = cub_keypoints(image_id)
        for j in range(15):
            lines_parts.append(f"{image_id} {j + 1} {kps[j, 0]:.1f} {kps[j, 1]:.1f} {int(kps[j, 2])}")
        parts_1based = kps.T.copy()
        visible = parts_1based[2] > 0
        parts_1based[:2, visible] += 1.0
        x0, y0 = float(np.round(x)), float(np.round(y))
        cmr_records["train" if is_train else "test"].append(
            {
                "rel_path": rel_path,
                "bbox": {"x1": x0 + 1, "y1": y0 + 1, "x2": x0 + int(w), "y2": y0 + int(h)},
                "parts": parts_1based,
                "mask": mask,
                "class_id": class_id,
            }
        )
    (base / "images.txt").write_text("\n".join(lines_images) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(lines_split) + "\n")
    (base / "bounding_boxes.txt").write_text("\n".join(lines_boxes) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(lines_labels) + "\n")
    (base / "parts" / "part_locs.txt").write_text("\n".join(lines_parts) + "\n")
    (base / "parts" / "parts.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CUB_KP_NAMES)))
    if cmr:
        data_dir = base / "cachedir" / "cub" / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        fields = ["rel_path", "bbox", "parts", "mask", "class_id"]
        for split, records in cmr_records.items():
            scipy.io.savemat(
                data_dir / f"{split}_cub_cleaned.mat", {"images": _struct_array(records, fields)}
            )
    return base


# --------------------------------------------------------------------------------------------------
# DeepFashion In-shop segmentation

DF_PALETTE = np.array(
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
    dtype=np.uint8,
)

# split, file_name, (H, W), save the segment as a palette PNG
DF_IMAGES: list[tuple[str, str, tuple[int, int], bool]] = [
    ("train", "img_highres/WOMEN/Dresses/id_00000001/02_1_front.jpg", (60, 40), False),
    ("train", "img_highres/MEN/Tees_Tanks/id_00000002/01_2_side.jpg", (50, 50), True),
    ("train", "img_highres/WOMEN/Skirts/id_00000004/03_1_front.jpg", (64, 44), False),
    ("query", "img_highres/WOMEN/Blouses_Shirts/id_00000003/02_1_front.jpg", (60, 40), False),
    ("gallery", "img_highres/WOMEN/Blouses_Shirts/id_00000003/02_2_side.jpg", (44, 30), True),
]


def df_labels(height: int, width: int) -> np.ndarray:
    """int64 (H, W) labels: 0 outside a central box, ((y // 6) + (x // 8)) % 15 + 1 inside."""
    ys, xs = np.mgrid[0:height, 0:width]
    labels = ((ys // 6) + (xs // 8)) % 15 + 1
    inside = (
        (ys >= height // 8) & (ys < height - height // 8) & (xs >= width // 5) & (xs < width - width // 5)
    )
    return np.where(inside, labels, 0).astype(np.int64)


def make_tiny_deepfashion(root: Path) -> Path:
    """Write a 5-image DeepFashion segmentation folder (3 train, 1 query, 1 gallery).

    Returns:
        The ``.../In-shop Clothes Retrieval Benchmark/Anno/segmentation`` folder (``data.root``).
    """
    base = Path(root) / "DeepFashion" / "In-shop Clothes Retrieval Benchmark" / "Anno" / "segmentation"
    base.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict]] = {"train": [], "query": [], "gallery": []}
    for i, (split, file_name, (height, width), palette) in enumerate(DF_IMAGES):
        _save_png(pattern_image(height, width, i + 1), base / file_name)
        labels = df_labels(height, width)
        seg_path = base / file_name.replace(".jpg", "_segment.png")
        if palette:
            img = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")
            img.putpalette(DF_PALETTE.reshape(-1).tolist() + [0] * (768 - 48))
            seg_path.parent.mkdir(parents=True, exist_ok=True)
            img.save(seg_path, format="PNG")
        else:
            _save_png(DF_PALETTE[labels], seg_path)
        splits[split].append({"file_name": file_name, "id": i + 1, "height": height, "width": width})
    for split, images in splits.items():
        content = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "top"}]}
        (base / f"DeepFashion_segmentation_{split}.json").write_text(json.dumps(content))
    return base


# --------------------------------------------------------------------------------------------------
# PASCAL-Part


def _rect(shape: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """uint8 mask with rows y0..y1-1 and columns x0..x1-1 set."""
    mask = np.zeros(shape, np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


PASCAL_SHAPE = (40, 60)  # (H, W) of every tiny PASCAL image


def pascal_horse_a() -> dict:
    """The big horse of 2008_000001: object rows 5..34, cols 10..49; parts head, tail, torso, lfuleg, neck.

    The tail (listed before the torso) overlaps the torso and must win; rows 27..34 cols 30..49 are object
    pixels without a part (background in the labels).
    """
    shape = PASCAL_SHAPE
    obj_mask = _rect(shape, 5, 35, 10, 50)
    parts = [
        {"part_name": "head", "mask": _rect(shape, 5, 12, 40, 50)},
        {"part_name": "tail", "mask": _rect(shape, 12, 20, 10, 14)},
        {"part_name": "torso", "mask": _rect(shape, 12, 27, 10, 45)},
        {"part_name": "lfuleg", "mask": _rect(shape, 27, 35, 12, 17)},
        {"part_name": "neck", "mask": _rect(shape, 10, 12, 38, 42)},
    ]
    return {"class": "horse", "class_ind": 13, "mask": obj_mask, "parts": parts}


def _object(cls: str, class_ind: int, mask: np.ndarray, parts: list[dict]) -> dict:
    return {"class": cls, "class_ind": class_ind, "mask": mask, "parts": parts}


def _pascal_objects() -> dict[str, list[dict]]:
    shape = PASCAL_SHAPE
    small = _rect(shape, 0, 4, 0, 6)  # area 5 * 3 / 2400: dropped
    person = _rect(shape, 2, 30, 50, 58)
    # 2008_000003: a horse with a box of 14 x 16 = 224 / 2400 = 0.093 ... make it 0.15: 18 x 20
    horse_c = _rect(shape, 10, 29, 20, 41)  # box (20, 10, 40, 28): 20 * 18 / 2400 = 0.15
    horse_d = _rect(shape, 4, 34, 5, 30)  # box (5, 4, 29, 33): 24 * 29 / 2400 = 0.29
    horse_e = _rect(shape, 20, 39, 35, 56)  # box (35, 20, 55, 38): 20 * 18 / 2400 = 0.15 (< 0.2: not test)
    car = _rect(shape, 16, 38, 30, 60)  # box (30, 16, 59, 37): 29 * 21 / 2400 = 0.25
    return {
        "2008_000001": [
            pascal_horse_a(),
            _object("horse", 13, small, [{"part_name": "head", "mask": small}]),
            _object("person", 15, person, [{"part_name": "head", "mask": _rect(shape, 2, 8, 50, 58)}]),
        ],
        "2008_000002": [_object("person", 15, person, [])],
        "2008_000003": [
            _object(
                "horse",
                13,
                horse_c,
                [
                    {"part_name": "torso", "mask": _rect(shape, 10, 22, 20, 41)},
                    {"part_name": "rbuleg", "mask": _rect(shape, 22, 29, 22, 26)},
                ],
            )
        ],
        "2009_000004": [
            _object(
                "horse",
                13,
                horse_d,
                [
                    {"part_name": "head", "mask": _rect(shape, 4, 10, 5, 12)},
                    {"part_name": "torso", "mask": _rect(shape, 10, 26, 5, 30)},
                    {"part_name": "lblleg", "mask": _rect(shape, 26, 34, 6, 10)},
                ],
            ),
            _object("horse", 13, horse_e, [{"part_name": "torso", "mask": horse_e}]),
            _object(
                "car",
                7,
                car,
                [
                    {"part_name": "wheel_1", "mask": _rect(shape, 32, 38, 33, 38)},
                    {"part_name": "wheel_2", "mask": _rect(shape, 32, 38, 52, 57)},
                    {"part_name": "window_1", "mask": _rect(shape, 22, 27, 36, 54)},
                    {"part_name": "leftside", "mask": _rect(shape, 27, 32, 32, 58)},
                ],
            ),
        ],
    }


PASCAL_SPLITS = {
    "horse_train.txt": [("2008_000001", 1), ("2008_000002", -1), ("2008_000003", 0)],
    "horse_val.txt": [("2009_000004", 1)],
    "car_train.txt": [("2008_000001", -1), ("2008_000002", -1), ("2008_000003", -1)],
    "car_val.txt": [("2009_000004", 1)],
}


def make_tiny_pascal(root: Path) -> Path:
    """Write a 4-image PASCAL-Part (VOC2010 layout + Annotations_Part .mat files).

    Horse train keeps 2 objects (2008_000001 big horse, 2008_000003), horse test 1 (2009_000004 first
    horse; the second is below 20 %), car test 1.

    Returns:
        The ``VOCdevkit_2010`` folder (``data.root``).
    """
    base = Path(root) / "VOCdevkit_2010"
    jpeg = base / "VOC2010" / "JPEGImages"
    main = base / "VOC2010" / "ImageSets" / "Main"
    annotations = base / "Annotations_Part"
    for folder in (jpeg, main, annotations):
        folder.mkdir(parents=True, exist_ok=True)
    for i, (image_id, objects) in enumerate(sorted(_pascal_objects().items())):
        _save_png(pattern_image(*PASCAL_SHAPE, tag=i + 1), jpeg / f"{image_id}.jpg")
        records = []
        for obj in objects:
            parts = _struct_array(obj["parts"], ["part_name", "mask"]) if obj["parts"] else np.zeros((0, 0))
            records.append({**obj, "parts": parts})
        anno = {
            "imname": image_id,
            "objects": _struct_array(records, ["class", "class_ind", "mask", "parts"]),
        }
        scipy.io.savemat(annotations / f"{image_id}.mat", {"anno": anno})
    for name, rows in PASCAL_SPLITS.items():
        (main / name).write_text("".join(f"{image_id} {label:2d}\n" for image_id, label in rows))
    return base


# --------------------------------------------------------------------------------------------------
# Generic folder

FOLDER_KP_NAMES = ["left eye", "right eye", "beak"]
FOLDER_FLIP_PERMUTATION = [1, 0, 2]
FOLDER_PART_NAMES = ["head", "body", "tail"]
# file, (H, W), kind
FOLDER_IMAGES: list[tuple[str, tuple[int, int], str]] = [
    ("bird1.png", (48, 64), "rgb"),
    ("bird2.jpg", (40, 40), "jpeg"),
    ("bird3.png", (40, 50), "rgba"),
    ("bird4.png", (36, 36), "gray16"),
]
FOLDER_BOXES = {  # inclusive object boxes (x0, y0, x1, y1) of the masks
    "bird1.png": (10, 14, 49, 33),
    "bird2.jpg": (5, 5, 34, 34),
    "bird3.png": (0, 0, 29, 19),
    "bird4.png": (6, 6, 29, 29),
}
FOLDER_KEYPOINTS = {
    "bird1.png": [[20.0, 20.0, 1.0], [40.0, 21.0, 1.0], [0.0, 0.0, 0.0]],
    "bird3.png": [[5.0, 5.0, 1.0], [25.0, 6.0, 1.0], [15.0, 18.0, 1.0]],
}


def folder_mask(name: str) -> np.ndarray:
    """uint8 (H, W) mask (0 / 255) of a tiny folder image: its box."""
    shape = next(s for f, s, _ in FOLDER_IMAGES if f == name)
    x0, y0, x1, y1 = FOLDER_BOXES[name]
    mask = np.zeros(shape, np.uint8)
    mask[y0 : y1 + 1, x0 : x1 + 1] = 255
    return mask


def folder_parts(name: str) -> np.ndarray:
    """uint8 (H, W) labels: box split in three vertical bands 1 | 2 | 3."""
    mask = folder_mask(name) > 0
    x0, _, x1, _ = FOLDER_BOXES[name]
    xs = np.arange(mask.shape[1])[None, :].repeat(mask.shape[0], axis=0)
    band = np.clip((xs - x0) * 3 // (x1 - x0 + 1), 0, 2) + 1
    return np.where(mask, band, 0).astype(np.uint8)


def folder_image(name: str) -> np.ndarray:
    """The RGB pixels a reader should return for a tiny folder image (except the JPEG)."""
    shape, kind = next((s, k) for f, s, k in FOLDER_IMAGES if f == name)
    if kind == "gray16":
        value = gray_pattern(*shape)
        return np.repeat(value[:, :, None], 3, axis=2)
    rgb = pattern_image(*shape, tag=len(name))
    if kind == "rgba":
        alpha = np.where(np.arange(shape[1])[None, :] < shape[1] // 2, 255, 0).astype(np.float32)
        return np.round(rgb * (alpha[:, :, None] / 255.0)).astype(np.uint8)
    return rgb


def make_tiny_folder(
    root: Path,
    masks: bool = True,
    parts: bool = True,
    keypoints: bool = True,
    splits: bool = True,
    corrupt: bool = False,
) -> Path:
    """Write a generic folder data set: 4 images (RGB PNG, JPEG, RGBA PNG, 16-bit gray PNG).

    Args:
        root: parent folder.
        masks: write ``masks/``.
        parts: write ``parts/`` and ``part_names.json``.
        keypoints: write ``keypoints.json`` (3 keypoints, flip permutation [1, 0, 2]).
        splits: write ``train.txt`` (bird1-3 [+ broken]) and ``test.txt`` (bird4).
        corrupt: add ``images/broken.png`` (truncated PNG) to the train split.

    Returns:
        The data set folder (``data.root``).
    """
    base = Path(root) / "my_birds"
    (base / "images").mkdir(parents=True, exist_ok=True)
    for name, shape, kind in FOLDER_IMAGES:
        path = base / "images" / name
        if kind == "rgb":
            _save_png(folder_image(name), path)
        elif kind == "jpeg":
            Image.fromarray(pattern_image(*shape, tag=2)).save(path, format="JPEG", quality=95)
        elif kind == "rgba":
            rgb = pattern_image(*shape, tag=len(name))
            alpha = np.where(np.arange(shape[1])[None, :] < shape[1] // 2, 255, 0).astype(np.uint8)
            rgba = np.concatenate([rgb, np.broadcast_to(alpha, shape)[:, :, None]], axis=2)
            _save_png(rgba, path)
        else:
            _save_png((gray_pattern(*shape).astype(np.uint16) * 257), path)
        if masks:
            _save_png(folder_mask(name), base / "masks" / (Path(name).stem + ".png"))
        if parts:
            _save_png(folder_parts(name), base / "parts" / (Path(name).stem + ".png"))
    train = ["bird1.png", "bird2.jpg", "bird3.png"]
    if corrupt:
        good = base / "images" / "bird1.png"
        (base / "images" / "broken.png").write_bytes(good.read_bytes()[:60])
        if masks:
            _save_png(np.zeros((10, 10), np.uint8), base / "masks" / "broken.png")
        if parts:
            _save_png(np.zeros((10, 10), np.uint8), base / "parts" / "broken.png")
        train.insert(1, "broken.png")
    if parts:
        (base / "part_names.json").write_text(json.dumps(FOLDER_PART_NAMES))
    if keypoints:
        content = {
            "names": FOLDER_KP_NAMES,
            "keypoints": FOLDER_KEYPOINTS,
            "flip_permutation": FOLDER_FLIP_PERMUTATION,
        }
        (base / "keypoints.json").write_text(json.dumps(content))
    if splits:
        (base / "train.txt").write_text("\n".join(train) + "\n")
        (base / "test.txt").write_text("# held out\nbird4.png\n")
    return base
