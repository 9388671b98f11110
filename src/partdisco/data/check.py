"""``partdisco data check``: report what a data set folder holds, what is missing and which files are bad.

:func:`check_dataset` prints (to ``out``) the expected layout with ``ok`` / ``MISSING`` (required) /
``absent`` (optional) per item and where each item comes from, the number of samples per split, and every
file that cannot be read or does not match its image. It only reads files.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import scipy.io

from partdisco.config import DATASETS, DataConfig
from partdisco.data import cub_files, dataset_module, deepfashion, folder, pascal_part
from partdisco.data.io import SampleDataset

logger = logging.getLogger(__name__)


@dataclass
class Item:
    """One expected file or folder."""

    path: Path
    required: bool
    source: str
    note: str = ""


def _cub_items(root: Path, cfg: DataConfig) -> list[Item]:
    items = [
        Item(root / "images", True, cub_files.SOURCE_OFFICIAL, "images/<species>/<name>.jpg"),
        Item(root / "images.txt", True, cub_files.SOURCE_OFFICIAL),
        Item(root / "train_test_split.txt", True, cub_files.SOURCE_OFFICIAL),
        Item(root / "bounding_boxes.txt", True, cub_files.SOURCE_OFFICIAL),
        Item(root / "parts" / "part_locs.txt", True, cub_files.SOURCE_OFFICIAL),
        Item(root / "parts" / "parts.txt", False, cub_files.SOURCE_OFFICIAL, "keypoint names"),
        Item(
            root / "image_class_labels.txt",
            False,
            cub_files.SOURCE_OFFICIAL,
            "else classes come from folder names",
        ),
        Item(
            root / "segmentations",
            cfg.cub_mask == "gt",
            cub_files.SOURCE_SEGMENTATIONS,
            "evaluation masks (data.cub_mask=gt); training masks without the CMR cachedir",
        ),
        Item(
            cub_files.cmr_annotation_path(root, "train"),
            False,
            cub_files.SOURCE_CMR,
            "reference training annotations",
        ),
        Item(
            cub_files.cmr_annotation_path(root, "test"),
            False,
            cub_files.SOURCE_CMR,
            "reference in-training test split",
        ),
    ]
    sup = next(
        (b / "supervisedlabels" for b in (root, root.parent) if (b / "supervisedlabels").is_dir()),
        root.parent / "supervisedlabels",
    )
    items.append(
        Item(sup, cfg.cub_mask == "sup", cub_files.SOURCE_SUP, "Full-protocol masks (data.cub_mask=sup)")
    )
    return items


def _deepfashion_items(root: Path, cfg: DataConfig) -> list[Item]:
    files = deepfashion.SPLIT_FILES["train"] + deepfashion.SPLIT_FILES["test"]
    items = [Item(root / f, True, deepfashion.SOURCE, "lists images[*].file_name") for f in files]
    sup = next(
        (d / "supervisedlabels" for d in (root, root.parent.parent) if (d / "supervisedlabels").is_dir()),
        root.parent.parent / "supervisedlabels",
    )
    note = "Full-protocol masks (data.deepfashion_variant=full)"
    items.append(Item(sup, cfg.deepfashion_variant == "full", deepfashion.SOURCE_SUP, note))
    return items


def _pascal_items(root: Path, cfg: DataConfig) -> list[Item]:
    main = root / "VOC2010" / "ImageSets" / "Main"
    return [
        Item(root / "VOC2010" / "JPEGImages", True, pascal_part.SOURCE_VOC),
        Item(main / f"{cfg.pascal_class}_train.txt", True, pascal_part.SOURCE_VOC),
        Item(main / f"{cfg.pascal_class}_val.txt", True, pascal_part.SOURCE_VOC),
        Item(root / "Annotations_Part", True, pascal_part.SOURCE_PARTS),
    ]


def _folder_items(root: Path, cfg: DataConfig) -> list[Item]:
    yours = "your files; see docs/DATA.md"
    flat = not (root / "images").is_dir() and bool(folder._image_names(root))
    images = Item(root, True, yours, "flat folder: the images are directly in data.root") if flat else None
    return [
        images or Item(root / "images", True, yours),
        Item(root / "masks", False, yours, "foreground masks <stem>.png"),
        Item(root / "parts", False, yours, "part label maps <stem>.png"),
        Item(root / "part_names.json", False, yours),
        Item(root / "keypoints.json", False, yours),
        Item(root / "train.txt", False, yours, "else every image is in every split"),
        Item(root / "test.txt", False, yours),
    ]


def guess_dataset(root: str | Path) -> str | None:
    """The data set layout a folder looks like, from its marker files; None when it looks like none.

    ``cub`` (``images.txt`` + ``train_test_split.txt``), ``deepfashion`` (the segmentation split jsons),
    ``pascal_part`` (``VOC2010/`` or ``Annotations_Part/``), ``folder`` (``images/`` or image files).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "images").mkdir()
        >>> guess_dataset(d)
        'folder'
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    cub_root = cub_files.resolve_root(root)
    if (cub_root / "images.txt").is_file() and (cub_root / "train_test_split.txt").is_file():
        return "cub"
    df_root = deepfashion.resolve_root(root)
    if any((df_root / f).is_file() for files in deepfashion.SPLIT_FILES.values() for f in files):
        return "deepfashion"
    pascal_root = pascal_part.resolve_root(root)
    if (pascal_root / "VOC2010").is_dir() or (pascal_root / "Annotations_Part").is_dir():
        return "pascal_part"
    if (root / "images").is_dir() or folder._image_names(root):
        return "folder"
    return None


def keypoint_problems(dataset: SampleDataset, index: int) -> list[str]:
    """What is wrong with the annotated keypoints of sample ``index`` (folder data sets' keypoints.json).

    Training and evaluation drop keypoints that are not finite, negative or outside the image, so a bad
    file would otherwise only show as a score computed from fewer keypoints.
    """
    if not isinstance(dataset, folder.FolderDataset):
        return []
    table, files = dataset.keypoints, dataset.files
    if table is None or files[index] not in table:
        return []
    from PIL import Image

    rows = table[files[index]]  # (N, 3) x, y, visible in pixels of the original image
    with Image.open(dataset.image_dir / files[index]) as img:
        width, height = img.size
    names = list(dataset.keypoint_names or [])
    found = []
    for k, (x, y, v) in enumerate(rows):
        label = f"keypoint {k}" + (f" ({names[k]})" if k < len(names) else "")
        if not all(np.isfinite((x, y, v))):
            found.append(f"{label} is not finite ({x}, {y}, {v})")
        elif v > 0 and (x < 0 or y < 0):
            found.append(f"{label} is negative ({x}, {y})")
        elif v > 0 and (x > width or y > height):
            found.append(f"{label} lies outside the {width}x{height} image ({x}, {y})")
    return found


def _resolve(name: str, root: Path) -> Path:
    if name == "cub":
        return cub_files.resolve_root(root)
    if name == "deepfashion":
        return deepfashion.resolve_root(root)
    if name == "pascal_part":
        return pascal_part.resolve_root(root)
    return root


def check_dataset(
    root: str | Path,
    name: str,
    out: TextIO = sys.stdout,
    cfg: DataConfig | None = None,
    max_samples: int | None = None,
) -> int:
    """Check a data set folder and print a report; change nothing.

    Args:
        root: the data set folder (as ``data.root``).
        name: ``cub``, ``deepfashion``, ``pascal_part``, ``folder`` (``synthetic`` needs no files).
        out: text stream for the report.
        cfg: data options (``cub_mask``, ``pascal_class``, ...); ``root`` and ``name`` are taken from the
            arguments. None = defaults.
        max_samples: read at most this many samples per split (None = all).

    Returns:
        0 when everything required is present and every sample reads; 1 otherwise.

    Raises:
        ValueError: unknown data set name.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from {DATASETS}")

    def say(line: str = "") -> None:
        out.write(line + "\n")

    if name == "synthetic":
        say("synthetic: generated on the fly, no files needed")
        return 0
    base = cfg if cfg is not None else DataConfig()
    root = Path(root).expanduser()
    cfg = dataclasses.replace(base, name=name, root=str(root), strict=True)
    resolved = _resolve(name, root)
    say(f"data set: {name}")
    say(f"root: {resolved}")
    if not resolved.is_dir():
        say(f"MISSING  {resolved} (not a folder)")
        say("result: PROBLEMS (1)")
        return 1
    items = {"cub": _cub_items, "deepfashion": _deepfashion_items, "pascal_part": _pascal_items}.get(
        name, _folder_items
    )(resolved, cfg)
    missing_required = _report_layout(items, resolved, say)
    if missing_required:
        say(f"result: PROBLEMS ({missing_required} required item(s) missing; nothing else checked)")
        return 1
    problems = _cub_annotation_problems(resolved, say) if name == "cub" else []
    datasets = _build_splits(name, cfg, say, problems)
    bad, empty = _scan_samples(datasets, max_samples, say, problems)
    for line in bad:
        say(f"  BAD  {line}")
    for name_ in empty:
        say(f"  EMPTY  {name_}: the foreground mask has no pixel above the threshold")
    problems.extend(bad)
    for line in problems[: len(problems) - len(bad)]:
        say(f"PROBLEM  {line}")
    if problems:
        say(f"result: PROBLEMS ({len(problems)})")
        return 1
    say("result: OK")
    return 0


def _report_layout(items: list[Item], resolved: Path, say: Callable[[str], None]) -> int:
    """Say which expected files and folders exist; the number of required ones missing."""
    say("layout:")
    missing_required = 0
    for item in items:
        rel = item.path.relative_to(resolved) if item.path.is_relative_to(resolved) else item.path
        note = f" [{item.note}]" if item.note else ""
        if item.path.exists():
            say(f"  ok       {rel}{note}")
        elif item.required:
            missing_required += 1
            say(f"  MISSING  {rel}{note} (required; expected {item.path}; from: {item.source})")
        else:
            say(f"  absent   {rel}{note} (optional; from: {item.source})")
    return missing_required


def _cub_annotation_problems(resolved: Path, say: Callable[[str], None]) -> list[str]:
    """CUB: count the images of the CMR training annotations; a problem per unreadable file."""
    problems: list[str] = []
    for split in ("train", "test"):
        path = cub_files.cmr_annotation_path(resolved, split)
        if path.is_file():
            try:
                shape = {n: s for n, s, _ in scipy.io.whosmat(str(path))}.get("images")
                count = 0 if not shape or min(shape) == 0 else int(max(shape))
                say(f"split {split} (CMR training annotations): {count} images")
            except Exception as err:  # scipy raises several types for a bad file
                problems.append(f"{path}: not a readable MATLAB file ({err})")
    return problems


def _build_splits(
    name: str, cfg: DataConfig, say: Callable[[str], None], problems: list[str]
) -> list[tuple[str, SampleDataset]]:
    """Both splits through the evaluation pipeline; a problem per build failure or empty split."""
    datasets: list[tuple[str, SampleDataset]] = []
    for split in ("train", "test"):
        try:
            dataset = dataset_module(name).build(cfg, split, False)
        except Exception as err:  # report every build failure, with its message
            problems.append(f"split {split}: {type(err).__name__}: {err}")
            continue
        say(f"split {split} (evaluation pipeline): {len(dataset)} samples")
        if len(dataset) == 0:
            problems.append(f"split {split}: no samples")
        datasets.append((split, dataset))
    return datasets


def _scan_samples(
    datasets: list[tuple[str, SampleDataset]],
    max_samples: int | None,
    say: Callable[[str], None],
    problems: list[str],
) -> tuple[list[str], list[str]]:
    """Read every sample once (a name shared by both splits once); the bad ones and those with empty masks.

    A split whose masks all lack a foreground pixel adds a problem.
    """
    seen: set[str] = set()
    read = 0
    bad: list[str] = []
    empty: list[str] = []
    for split, dataset in datasets:
        count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
        with_fg = 0
        for i in range(count):
            sample_name = dataset.sample_name(i)
            if sample_name in seen:
                continue
            seen.add(sample_name)
            try:
                sample = dataset.load_sample(i, None)
            except folder.EmptyMaskError:
                empty.append(sample_name)
            except Exception as err:  # list every bad file with its reason
                bad.append(f"{sample_name}: {err}")
            else:
                if dataset.has_masks and float(sample["fg_mask"].sum()) <= 0:
                    empty.append(sample_name)
                else:
                    with_fg += 1
                bad.extend(f"{sample_name}: {p}" for p in keypoint_problems(dataset, i))
            read += 1
            if read % 500 == 0:
                logger.info("data check: %d samples read", read)
        if count and not with_fg and dataset.has_masks:
            problems.append(f"split {split}: no mask has a foreground pixel (training would refuse it)")
    say(f"scan: {read} samples read, {len(bad)} unreadable or inconsistent, {len(empty)} with an empty mask")
    return bad, empty
