"""CUB-200-2011: the reference training pipeline (CMR annotations) and evaluation pipeline (official files).

``data.root`` is the ``CUB_200_2011`` folder of the official tarball (a folder that contains
``CUB_200_2011/`` is accepted too). See ``docs/DATA.md`` for the layout and where each file comes from.

``build(cfg, split, train=True)`` (training, ref ``datasets/cub.py``, from CMR):
    annotations from CMR's ``cachedir/cub/data/{split}_cub_cleaned.mat`` (struct array ``images`` with
    ``rel_path``, ``bbox.{x1,y1,x2,y2}`` and ``parts`` (3, 15) in 1-based pixels, full-image binary
    ``mask``). Per sample: 0-based coordinates, box padded by ``padding_frac`` per side plus a
    ``±jitter_frac`` jitter (``split == "train"`` only), squared, cropped (outside: image 1/255, mask 0),
    resized to ``image_size`` (bilinear image, nearest mask), and flipped with probability 1/2
    (``split == "train"`` and ``data.flip``) with the left/right keypoint permutation
    :data:`CUB_FLIP_PERMUTATION`. Without the cachedir the official files are used instead (a warning is
    logged; masks = ``segmentations`` == 255, coordinates taken as 0-based). With ``data.masks=ignore``
    (mask-free training) the training split uses neither the box nor the mask: the whole image, shorter
    side resized to ``image_size``, centre square, as folder images without masks (docs/DATA.md); the
    evaluation pipeline keeps its boxes and masks (they only score).

``build(cfg, split, train=False)`` (evaluation, ref ``evaluation/datasets/cub200.py`` + ``CUB eval.ipynb``):
    official split (``images.txt``, ``train_test_split.txt``: 5,994 train / 5,794 test), keypoints from
    ``parts/part_locs.txt`` (as stored, no 1-based shift, as the reference), boxes from
    ``bounding_boxes.txt``. ``data.cub_variant``: ``fg`` crops exactly to the truncated box (keypoints
    shifted by the float box origin and clamped at 0), ``full`` keeps the whole image. Then the shorter
    side is resized to ``image_size`` (antialiased bilinear; keypoints scaled by ``image_size / shorter``),
    and H and W are centre-cropped down to multiples of 16; keypoints that fall outside become invisible.
    ``data.cub_mask``: ``gt`` = ``segmentations/*.png == 255`` (binary after resizing), ``sup`` = the
    authors' ``supervisedlabels/<rel_path>.png``, raw gray levels resized, foreground where the level rounds
    to > 0 (the reference's labels for 0/1, 0/255 and soft masks alike, :func:`sup_mask_foreground`),
    ``none`` = all ones. ``data.cub_classes`` keeps only those species (``[1, 2, 3]``
    for the three-class protocol, which then reads ``supervisedlabels3/`` when it exists).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from partdisco.config import DataConfig
from partdisco.data import transforms as T
from partdisco.data.cub_files import (
    CUB_FLIP_PERMUTATION,
    CUB_KEYPOINT_NAMES,
    GT_MASK_THRESHOLD,
    SOURCE_CMR,
    SOURCE_OFFICIAL,
    SOURCE_SEGMENTATIONS,
    SOURCE_SUP,
    CubRecord,
    cmr_annotation_path,
    filter_classes,
    load_cmr_records,
    load_official_records,
    read_keypoint_names,
    require,
    resolve_root,
)
from partdisco.data.io import SampleDataset, check_same_size, read_image, read_mask
from partdisco.data.keypoints import (
    drop_keypoints_outside,
    flip_keypoints,
    hflip,
    scale_keypoints,
    shift_keypoints,
)
from partdisco.data.sample import make_sample

logger = logging.getLogger(__name__)

class CubCropDataset(SampleDataset):
    """CUB training pipeline: padded, jittered, square object crops of ``size x size`` (module docstring).

    Args:
        root: the ``CUB_200_2011`` folder.
        records: annotated images; those with ``mask_bits`` use the CMR mask, others read
            ``segmentations/<rel_path>.png == 255``.
        crop: output side S, box padding and jitter, flip (:class:`.transforms.ObjectCrop`).
        augment: draw jitter / flip.
        strict: raise on unreadable files instead of skipping.
        seed: mixed into the per-sample generators.
        keypoint_names: names of the 15 keypoints.
        whole_image: no box, no mask (``data.masks=ignore``, mask-free training): the whole image, shorter
            side resized to S, centre square (:func:`.transforms.centre_square`, as folder images without
            masks); the foreground is all of it and no mask file is read.
    """

    has_masks = True

    def __init__(
        self,
        root: Path,
        records: list[CubRecord],
        crop: T.ObjectCrop,
        augment: bool,
        strict: bool,
        seed: int = 0,
        keypoint_names: list[str] | None = None,
        whole_image: bool = False,
    ) -> None:
        super().__init__(augment=augment, strict=strict, seed=seed)
        self.whole_image = whole_image
        self.has_masks = not whole_image
        self.root = Path(root)
        self.records = records
        self.size, self.padding_frac, self.jitter_frac, self.flip = (
            crop.size, crop.padding_frac, crop.jitter_frac, crop.flip,
        )  # fmt: skip
        self.keypoint_names = keypoint_names or list(CUB_KEYPOINT_NAMES)
        self.part_names = None
        self.flip_permutation = CUB_FLIP_PERMUTATION.tolist()

    def __len__(self) -> int:
        return len(self.records)

    def sample_name(self, index: int) -> str:
        """Image path relative to the root (``images/<rel_path>``)."""
        return f"images/{self.records[index].rel_path}"

    def _mask(self, record: CubRecord, image_path: Path, image_shape: tuple[int, ...]) -> np.ndarray:
        if record.mask_bits is not None:
            mask = record.cmr_mask()
            check_same_size(image_path, f"CMR mask of {record.rel_path}", image_shape, mask.shape)
            return mask
        seg_path = self.root / "segmentations" / Path(record.rel_path).with_suffix(".png")
        mask = read_mask(seg_path, mode="binary", threshold=GT_MASK_THRESHOLD).astype(np.uint8)
        check_same_size(image_path, seg_path, image_shape, mask.shape)
        return mask

    def load_sample(self, index: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Read image ``index`` and crop it; ``rng`` (augmented samples) drives the jitter and the flip."""
        record = self.records[index]
        image_path = self.root / "images" / record.rel_path
        image_u8 = read_image(image_path)
        if self.whole_image:  # mask-free training: neither the box nor the mask places the crop
            image, _, keypoints, box = T.centre_square(
                image_u8.astype(np.float32) / 255.0, self.size, None, record.keypoints
            )
            fg_mask = np.ones((self.size, self.size), dtype=np.float32)
            if rng is not None and self.flip and rng.random() > 0.5:
                image, fg_mask = hflip(image), hflip(fg_mask)
                keypoints = flip_keypoints(keypoints, self.size, self.flip_permutation)
                box = T.flip_box(box, self.size)
            return make_sample(
                image, fg_mask, box, record.class_id, index, self.sample_name(index), keypoints=keypoints
            )
        mask = self._mask(record, image_path, image_u8.shape)
        crop_box = T.object_crop_box(record.bbox, self.padding_frac, self.jitter_frac, rng)
        image, scale = T.crop_resize_image(image_u8.astype(np.float32) / 255.0, crop_box, self.size)
        fg_mask = T.crop_resize_labels(mask, crop_box, self.size).astype(np.float32)
        origin = (float(crop_box[0]), float(crop_box[1]))
        keypoints = scale_keypoints(shift_keypoints(record.keypoints, *origin), scale, scale)
        height, width = image.shape[:2]
        box = T.transform_box(T.inclusive_to_continuous(record.bbox), origin, (scale, scale), (height, width))
        if rng is not None and self.flip and rng.random() > 0.5:
            image, fg_mask = hflip(image), hflip(fg_mask)
            keypoints = flip_keypoints(keypoints, width, self.flip_permutation)
            box = T.flip_box(box, width)
        return make_sample(
            image, fg_mask, box, record.class_id, index, self.sample_name(index), keypoints=keypoints
        )


class CubEvalDataset(SampleDataset):
    """CUB evaluation pipeline of the reference notebook (module docstring); never augmented.

    Args:
        root: the ``CUB_200_2011`` folder.
        records: official records (with ``box_xywh``).
        size: shorter side after resizing.
        variant: ``"fg"`` (crop to the box) or ``"full"``.
        mask_kind: ``"gt"``, ``"sup"`` or ``"none"``.
        mask_dir: folder of the masks for ``gt`` (``segmentations``) / ``sup`` (``supervisedlabels``).
        strict: raise on unreadable files instead of skipping.
        keypoint_names: names of the 15 keypoints.
        multiple: H and W are centre-cropped to multiples of this (16 in the reference).
    """

    def __init__(
        self,
        root: Path,
        records: list[CubRecord],
        size: int,
        variant: str,
        mask_kind: str,
        mask_dir: Path | None,
        strict: bool,
        keypoint_names: list[str] | None = None,
        multiple: int = 16,
    ) -> None:
        super().__init__(augment=False, strict=strict, seed=0)
        if variant not in ("fg", "full"):
            raise ValueError(f"data.cub_variant must be 'fg' or 'full', got {variant!r}")
        if mask_kind not in ("gt", "sup", "none"):
            raise ValueError(f"data.cub_mask must be 'gt', 'sup' or 'none', got {mask_kind!r}")
        self.root = Path(root)
        self.records = records
        self.size = int(size)
        self.variant = variant
        self.mask_kind = mask_kind
        self.mask_dir = mask_dir
        self.multiple = int(multiple)
        self.keypoint_names = keypoint_names or list(CUB_KEYPOINT_NAMES)
        self.part_names = None
        self.has_masks = mask_kind != "none"
        self.flip_permutation = CUB_FLIP_PERMUTATION.tolist()
        # The published "Full" numbers are whole images with the supervised masks (ref CUB eval.ipynb
        # is_full=True, mask_type='sup'); any other combination is named for what it is (kp_nmi_bbox_gtmask).
        published = variant == "full" and mask_kind == "sup"
        where = "bbox" if variant == "fg" else "whole"
        self.full_metrics_suffix = "" if published else f"_{where}_{mask_kind}mask"

    def __len__(self) -> int:
        return len(self.records)

    def sample_name(self, index: int) -> str:
        """Image path relative to the root (``images/<rel_path>``)."""
        return f"images/{self.records[index].rel_path}"

    def _mask(self, record: CubRecord, image_path: Path, image_shape: tuple[int, ...]) -> np.ndarray:
        if self.mask_kind == "none" or self.mask_dir is None:
            return np.ones(image_shape[:2], dtype=np.float32)
        path = self.mask_dir / Path(record.rel_path).with_suffix(".png")
        if self.mask_kind == "gt":
            mask = read_mask(path, mode="binary", threshold=GT_MASK_THRESHOLD)
        else:
            mask = read_mask(path, mode="gray") * 255.0  # raw gray levels, as the reference reads them
        check_same_size(image_path, path, image_shape, mask.shape)
        return mask

    def load_sample(self, index: int, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """Read image ``index`` and apply the evaluation pipeline (``rng`` is ignored)."""
        record = self.records[index]
        if record.box_xywh is None:
            raise ValueError(f"{record.rel_path}: evaluation needs the official bounding box")
        image_path = self.root / "images" / record.rel_path
        image_u8 = read_image(image_path)
        mask = self._mask(record, image_path, image_u8.shape)
        x, y, w, h = (float(v) for v in record.box_xywh)
        box = np.array([x, y, x + w, y + h])
        keypoints = record.keypoints.copy()
        visible = np.abs(keypoints[:, 2]) > 1e-5  # ref: cub200.py
        keypoints[~visible] = 0.0
        if self.variant == "fg":
            # ref: cub200.py crop_to_bbox: truncated integer box; keypoints shifted by the float origin,
            # clamped at 0
            cx, cy, cw, ch = int(x), int(y), int(w), int(h)
            image_u8 = image_u8[cy : cy + ch, cx : cx + cw]
            mask = mask[cy : cy + ch, cx : cx + cw]
            keypoints[visible, 0] = np.maximum(keypoints[visible, 0] - x, 0.0)
            keypoints[visible, 1] = np.maximum(keypoints[visible, 1] - y, 0.0)
            box = T.transform_box(box, (cx, cy), (1.0, 1.0), image_u8.shape[:2]).astype(np.float64)
        height, width = image_u8.shape[:2]
        if height == 0 or width == 0:
            raise ValueError(f"{image_path}: bounding box {record.box_xywh.tolist()} is outside the image")
        factor = self.size / float(min(height, width))  # ref: cub200.py factor from the shorter side
        new_h, new_w = T.size_for_shorter_side(height, width, self.size)
        image = T.resize_image(image_u8.astype(np.float32) / 255.0, (new_h, new_w), antialias=True)
        mask = T.resize_image(mask, (new_h, new_w), antialias=True)
        if self.mask_kind == "gt":
            mask = (mask >= 0.5).astype(np.float32)  # PIL rounds the resized 0/1 mask
        elif self.mask_kind == "sup":
            mask = sup_mask_foreground(mask)
        keypoints = scale_keypoints(keypoints, factor, factor)
        top, left, crop_h, crop_w = T.center_crop_offsets(new_h, new_w, self.multiple)
        image = image[top : top + crop_h, left : left + crop_w]
        mask = mask[top : top + crop_h, left : left + crop_w]
        keypoints = drop_keypoints_outside(shift_keypoints(keypoints, left, top), crop_h, crop_w)
        box = T.transform_box(box, (0.0, 0.0), (factor, factor), (new_h, new_w)).astype(np.float64)
        box = T.transform_box(box, (left, top), (1.0, 1.0), (crop_h, crop_w))
        return make_sample(
            image, mask, box, record.class_id, index, self.sample_name(index), keypoints=keypoints
        )


def sup_mask_foreground(raw_resized: np.ndarray) -> np.ndarray:
    """The reference's foreground for a ``supervisedlabels`` mask, whatever its encoding (0/1, 0/255, soft).

    The reference (``cub200.py`` + ``CUB eval.ipynb``) reads the PNG as 8-bit gray without scaling, resizes
    it as a PIL "L" image (values rounded to integers) and scores ``cat([1 - fg, fg * softmax])`` on those raw
    values: any rounded value >= 1 makes ``1 - fg <= 0 < fg * p``, i.e. foreground; 0 is background. So a
    0/1 mask, a 0/255 mask and a soft 0..255 mask all give "rounded resized gray level > 0"; dividing by 255
    first (as partdisco did) would turn a 0/1 mask into background everywhere.

    Args:
        raw_resized: float (H, W) gray levels in 0..255 after resizing (not rounded).

    Returns:
        float32 (H, W) in {0, 1}: 1 where the level rounds to >= 1.

    Example:
        >>> sup_mask_foreground(np.array([[0.0, 0.4, 0.5, 1.0, 255.0]])).tolist()
        [[0.0, 0.0, 1.0, 1.0, 1.0]]
    """
    return (raw_resized >= 0.5).astype(np.float32)


def _supervised_dir(root: Path, classes: list[int]) -> Path:
    """Folder of the supervised masks (``supervisedlabels3`` first for the three-class protocol)."""
    names = ["supervisedlabels"]
    if classes and set(int(c) for c in classes) <= {1, 2, 3}:
        names.insert(0, "supervisedlabels3")  # ref: cub200.py three_classes
    for name in names:
        for base in (root, root.parent):
            if (base / name).is_dir():
                return base / name
    raise FileNotFoundError(
        f"CUB: data.cub_mask=sup needs the supervised masks: expected {root.parent / 'supervisedlabels'} "
        f"or {root / 'supervisedlabels'} (from: {SOURCE_SUP}); or use data.cub_mask=gt / none"
    )


def build(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> SampleDataset:
    """Build the CUB data set for ``split``.

    Args:
        cfg: data config (root, image_size, strict, cub_classes, cub_mask, cub_variant, padding_frac,
            jitter_frac, flip).
        split: ``"train"`` / ``"test"`` (``"val"`` also for the CMR files).
        train: True = training pipeline (square crops; CMR cachedir if present); False = evaluation
            pipeline on the official split. Augmentation (jitter, flip) happens only for
            ``train and split == "train"``, as in the reference.
        seed: mixed into the per-sample augmentation generators.

    Returns:
        A :class:`CubCropDataset` or :class:`CubEvalDataset`.

    Raises:
        FileNotFoundError: a required file is missing; the message gives the expected path and its source.
    """
    if cfg.root is None:
        raise ValueError("CUB: data.root is not set; point it at the CUB_200_2011 folder")
    root = resolve_root(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"CUB: data.root {root} is not a folder (from: {SOURCE_OFFICIAL})")
    require(root / "images", "image folder", SOURCE_OFFICIAL)
    keypoint_names = read_keypoint_names(root)
    if train:
        augment = split == "train"
        # mask-free training (data.masks=ignore) uses no annotation to crop: whole images (docs/DATA.md)
        whole_image = augment and cfg.masks == "ignore"
        cmr_path = cmr_annotation_path(root, split)
        if cmr_path.is_file():
            records = load_cmr_records(cmr_path)
        else:
            logger.warning(
                "CUB: %s not found (from: %s); training on the official %s split with segmentations/ masks",
                cmr_path,
                SOURCE_CMR,
                split,
            )
            try:
                records = load_official_records(root, split)
            except FileNotFoundError as err:
                raise FileNotFoundError(
                    f"CUB: neither the CMR file {cmr_path} (from: {SOURCE_CMR}) nor {err}"
                ) from None
            if not whole_image:
                require(root / "segmentations", "segmentation masks", SOURCE_SEGMENTATIONS)
        records = filter_classes(records, cfg.cub_classes)
        dataset: SampleDataset = CubCropDataset(
            root,
            records,
            crop=T.ObjectCrop.from_config(cfg),
            augment=augment,
            strict=cfg.strict,
            seed=seed,
            keypoint_names=keypoint_names,
            whole_image=whole_image,
        )
    else:
        records = filter_classes(load_official_records(root, split), cfg.cub_classes)
        mask_dir: Path | None = None
        if cfg.cub_mask == "gt":
            mask_dir = require(root / "segmentations", "segmentation masks", SOURCE_SEGMENTATIONS)
        elif cfg.cub_mask == "sup":
            mask_dir = _supervised_dir(root, cfg.cub_classes)
        dataset = CubEvalDataset(
            root,
            records,
            size=cfg.image_size,
            variant=cfg.cub_variant,
            mask_kind=cfg.cub_mask,
            mask_dir=mask_dir,
            strict=cfg.strict,
            keypoint_names=keypoint_names,
        )
    logger.info("CUB %s (%s): %d images", split, "train pipeline" if train else "eval pipeline", len(dataset))
    return dataset
