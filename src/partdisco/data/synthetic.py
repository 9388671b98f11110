"""Built-in procedural part-annotated data set: articulated "creatures" on cluttered backgrounds.

Zero downloads; the default data set for tests, the quick start and the acceptance run. Every sample is a
pure function of ``(seed, split, index)`` and is rendered at any square size S.

**The creature** is seen from above, built in a canonical frame (x forward, y towards its right side,
lengths in a body unit ``u``) and made of P semantic parts (labels 1..P, 0 = background). Each part has
its own shape, colour family (a hue interval) and texture family:

- 1 ``head``: disc + triangular beak (+ two painted eyes); red (hue 0.96-1.04); spots.
- 2 ``body``: ellipse; blue (hue 0.55-0.65); smooth linear gradient + strong rim shading.
- 3 ``wings``: two limbs of two tapered capsules (upper arm, forearm); green (hue 0.25-0.35); stripes.
- 4 ``tail``: two tapered capsules, half of them ending in a triangular fan; purple (hue 0.77-0.87);
  checker.
- 5 ``legs`` (only with ``num_parts=5``): two limbs (thigh, shin, foot ellipse); yellow (hue
  0.115-0.165); grid lines.

Per image the exact hue (within the family), saturation, brightness, the second texture shade (darker or
paler) and the texture's period, orientation and phase are random, so each part has a consistent identity
cue (colour family + texture family + shape) but no constant colour. Draw order, back to front: legs,
tail, wings, body, head.

**Articulation.** Neck, beak, shoulder, elbow, tail-root, tail-bend, hip and knee angles vary
independently per image (left and right limbs separately), as do all lengths and widths.

**Pose.** Full 360 degree rotation, a mirror flip (p = 0.5), a scale that makes the longer side of the
posed creature's box 60-95 % of S, and a translation that keeps the creature inside the image, except for
10 % of images where up to 15 % of its box may leave it. Because of the rotation, part identity is not
given by the position inside the object box: k-means on bbox-normalised (x, y) of the foreground pixels
of 200 images at 64 px scores an NMI against the true parts of about 0.005 with K = 4 clusters and
0.12-0.14 with K = 5 or 8 (one cluster then takes the box centre, where the body tends to be). Clustering
each image's coordinates separately scores about 0.55: parts are contiguous regions, which no data set can
avoid, so the position baseline must be fitted across images.

**Background.** A bilinear gradient between four desaturated colours plus two coloured plane waves, then
3-8 distractor shapes (ellipses, convex polygons, sticks) drawn behind the creature, each flat (any hue)
or patterned (a part texture or wavy stripes) with a hue from the gaps between the part colour families,
so no distractor has both a part's colour family and its texture family. With p = 0.15 a thin brown
"branch" is drawn in front of the creature: it occludes parts (label 0 there) and hides keypoints.
Finally Gaussian pixel noise (sigma in [0.005, 0.03]) is added.

**Keypoints** (named, in pixels of the returned image, "pixel i covers [i, i+1)"): ``beak_tip``,
``head_center``, ``body_center``, ``tail_base``, ``tail_tip``, ``left_wing_elbow``, ``right_wing_elbow``,
``left_wing_tip``, ``right_wing_tip`` (+ ``left_foot``, ``right_foot`` with legs). Each lies inside its
part; it is visible iff it falls inside the image and the rendered label of its pixel is its part (so a
keypoint under the branch, under another part or lost at a tiny size is invisible; invisible rows are
``(0, 0, 0)``). Left and right are the creature's own sides as seen from above in the image, so a
mirrored image swaps them (:attr:`SyntheticParts.flip_permutation`).

**Rendering** is anti-aliased analytically rather than by supersampling: every shape has a signed
distance function d (in pixels, evaluated at pixel centres) and covers a pixel by
``clip(0.5 - d, 0, 1)`` (a one-pixel box filter); textures are band-limited (sinusoids and smoothed
thresholds with transitions of about one pixel, periods of at least 3-4 pixels). Labels are the nearest
(centre-sample) rendering: a pixel takes the label of the topmost shape whose distance at the centre is
negative, i.e. the shape covering the majority of the pixel. Each shape is evaluated only inside its own
bounding box: about 700 samples/s at 64 px and 150 samples/s at 256 px on one core.

**Stress variants** (:class:`SceneOptions`, ``partdisco data synth --stress``; issue #21): ``small``
objects (the posed box's longer side 25-70 % of S instead of 60-95 %: the box covers 6-38 % of the frame
and the creature 2-12 %, 5th-95th percentiles, against 27-73 % and 8-24 % by default), ``salient``
distractors (1-4 saturated flat disks and rectangles per image, any hue, part hues included, each 8-24 %
of S across, drawn behind the creature with label 0) and ``clutter`` (a full-frame fine texture under
15-30 extra patterned background shapes). Their draws come from a second stream seeded from the sample's
stream after every default draw, so the default options give the built-in data set bit for bit, and a
variant keeps each sample's creature, pose and colours (only the scale differs with ``small``).

Resolution independence: the random draws do not depend on S, so the same ``(seed, split, index)`` gives
the same scene at every size (only the pixel noise field differs).

Example:
    >>> ds = SyntheticParts(4, image_size=64)
    >>> sample = ds[0]
    >>> tuple(sample["image"].shape), tuple(sample["parts"].shape), ds.part_names
    ((3, 64, 64), (64, 64), ['head', 'body', 'wings', 'tail'])
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from partdisco.config import MAX_IMAGE_SIZE, DataConfig
from partdisco.data.batch import PartsDataset
from partdisco.data.synth.creature import (
    PART_HUES,
    check_num_parts,
    flip_permutation_for,
    keypoint_names_for,
    part_names_for,
)
from partdisco.data.synth.primitives import SPLIT_IDS, Paint, Scene, Shape, sample_generator, split_id
from partdisco.data.synth.render import generate_sample, render_scene
from partdisco.data.synth.scene import STRESS_PRESETS, SceneOptions, sample_scene, stress_options

logger = logging.getLogger(__name__)

__all__ = [
    "PART_HUES",
    "STRESS_PRESETS",
    "Paint",
    "Scene",
    "SceneOptions",
    "Shape",
    "SyntheticParts",
    "build",
    "flip_permutation_for",
    "generate_sample",
    "keypoint_names_for",
    "part_names_for",
    "render_scene",
    "sample_generator",
    "sample_name",
    "sample_scene",
    "stress_options",
    "write_folder",
]


def sample_name(split: str, index: int) -> str:
    """File name of a sample, e.g. ``synth_train_000123.png`` (also its ``name`` in the data set)."""
    split_id(split)
    return f"synth_{split}_{index:06d}.png"


# --------------------------------------------------------------------------------------------------
# Dataset


class SyntheticParts(PartsDataset):
    """The procedural creatures as a map-style data set (the ``synthetic`` entry of ``build_dataset``).

    Args:
        n: number of samples.
        image_size: S, >= 16.
        split: ``train`` or ``test``; the two use disjoint random streams.
        seed: data set seed; sample i depends only on (seed, split, i).
        num_parts: P, 4 or 5.
        cache: keep rendered samples in memory (about 24 S^2 bytes each).
        options: stress variants (:class:`SceneOptions`); None = the built-in data set.

    Each item is the dict of ``docs/ARCHITECTURE.md``: ``image`` float32 (3, S, S) in [0, 1], ``fg_mask``
    float32 (1, S, S), ``parts`` int64 (S, S) in 0..P, ``keypoints`` float32 (N, 3), ``bbox`` float32 (4,),
    ``class_id`` int64 () = 0, ``index`` int64 (), ``name`` str.

    Example:
        >>> ds = SyntheticParts(2, image_size=32, split="test", seed=1)
        >>> len(ds), ds.keypoint_names[0], ds.flip_permutation[5]
        (2, 'beak_tip', 6)
    """

    has_masks = True

    def __init__(
        self,
        n: int,
        image_size: int,
        split: str = "train",
        seed: int = 0,
        num_parts: int = 4,
        cache: bool = False,
        options: SceneOptions | None = None,
    ) -> None:
        if int(n) < 0:
            raise ValueError(f"synthetic data: n must be >= 0, got {n}")
        if int(image_size) < 16:
            raise ValueError(f"synthetic data: image_size must be >= 16 pixels, got {image_size}")
        split_id(split)
        check_num_parts(num_parts)
        super().__init__()
        self.n = int(n)
        self.image_size = int(image_size)
        self.split = split
        self.seed = int(seed)
        self.num_parts = int(num_parts)
        self.part_names: list[str] = part_names_for(num_parts)
        self.keypoint_names: list[str] = keypoint_names_for(num_parts)
        self.flip_permutation: list[int] = flip_permutation_for(num_parts)
        self.options = options or SceneOptions()
        self._cache: dict[int, dict[str, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """Numpy arrays of sample ``index`` (cached if the data set caches)."""
        if not 0 <= index < self.n:
            raise IndexError(f"synthetic data: index {index} out of range for {self.n} samples")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        out = generate_sample(self.seed, self.split, index, self.image_size, self.num_parts, self.options)
        if self._cache is not None:
            self._cache[index] = out
        return out

    def whole_image(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index`` as :func:`write_folder` saves it: uint8 (S, S, 3) RGB and bool (S, S) mask.

        The samples are whole images already; this is what ``partdisco segment`` would read from the files
        (:func:`partdisco.engine.evaluate.whole_image.whole_image_fg_iou` scores these).
        """
        arrays = self.arrays(index)
        rgb = np.round(arrays["image"].transpose(1, 2, 0) * 255.0).astype(np.uint8)
        return rgb, arrays["fg_mask"][0] > 0.5

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        # the training sampler passes (index, epoch): a scene does not depend on the epoch
        index = int(item[0] if isinstance(item, tuple) else item)
        if index < 0:
            index += self.n
        arrays = self.arrays(index)
        copy = self._cache is not None  # never hand out views of cached arrays
        sample: dict[str, Any] = {
            key: torch.from_numpy(arrays[key].copy() if copy else arrays[key])
            for key in ("image", "fg_mask", "parts", "keypoints", "bbox")
        }
        sample["class_id"] = torch.tensor(0, dtype=torch.int64)
        sample["index"] = torch.tensor(index, dtype=torch.int64)
        sample["name"] = sample_name(self.split, index)
        return sample


def build(cfg: DataConfig, split: str, train: bool, seed: int = 0) -> SyntheticParts:
    """Build the synthetic split from the data config.

    Args:
        cfg: uses ``synthetic_train`` / ``synthetic_test`` (sizes), ``synthetic_seed`` and ``image_size``;
            ``synthetic_parts`` (P) if the config has it, else 4.
        split: ``train`` or ``test``.
        train: unused: the scenes already carry random flips, rotations and scales, and a sample must not
            depend on how it is loaded.
        seed: unused: the scenes come from ``data.synthetic_seed``, so that every run sees the same images.

    Returns:
        The data set.

    Raises:
        ValueError: an unknown split (named in the message).

    Example:
        >>> len(build(DataConfig(synthetic_test=7), "test", train=False))
        7
    """
    del train, seed
    if split not in SPLIT_IDS:
        raise ValueError(f"synthetic data: unknown split {split!r}; choose from {sorted(SPLIT_IDS)}")
    n = cfg.synthetic_train if split == "train" else cfg.synthetic_test
    num_parts = int(cfg.synthetic_parts)
    return SyntheticParts(n, cfg.image_size, split=split, seed=cfg.synthetic_seed, num_parts=num_parts)


def write_folder(
    out: str | Path,
    n: int,
    image_size: int = 128,
    seed: int = 0,
    test_fraction: float = 0.1,
    progress: bool = True,
    num_parts: int = 4,
    options: SceneOptions | None = None,
) -> dict[str, int]:
    """Write ``n`` samples in the generic folder layout (for the folder loader and for inspection).

    Layout: ``out/images/NAME`` (RGB PNG), ``out/masks/NAME`` (uint8 0/255), ``out/parts/NAME`` (uint8
    labels 0..P), ``out/keypoints.json`` (``{"names": [...], "keypoints": {NAME: [[x, y, visible], ...]}}``,
    pixels), ``out/train.txt`` / ``out/test.txt`` (one NAME per line), ``out/part_names.json`` (P names of
    labels 1..P). The first ``n - round(n * test_fraction)`` images are train samples 0.. of
    ``SyntheticParts(split="train")``, the rest test samples 0.. of the test split, so every file equals
    the data set sample of the same name (up to 8-bit quantisation of the image). When all images come
    from one split (``test_fraction`` 0 or 1), no list is written, so the folder loader puts every image
    in both splits (an empty ``train.txt`` would leave nothing to train on).

    Args:
        out: folder to create or fill.
        n: total number of images, >= 1.
        image_size: S.
        seed: data set seed.
        test_fraction: share of test images in [0, 1].
        progress: show a tqdm bar.
        num_parts: P, 4 or 5.
        options: stress variants (:class:`SceneOptions`); None = the built-in data set. Non-default
            options are recorded in ``out/synthetic.json``.

    Returns:
        Counts ``{"train": ..., "test": ..., "images": n}``.

    Example:
        >>> import tempfile
        >>> write_folder(tempfile.mkdtemp(), 3, image_size=32, test_fraction=0.34, progress=False)
        {'train': 2, 'test': 1, 'images': 3}
    """
    if n < 1:
        raise ValueError(f"write_folder: n must be >= 1, got {n}")
    if not 16 <= image_size <= MAX_IMAGE_SIZE:  # (100000 asked for a 112 GiB canvas)
        raise ValueError(f"write_folder: image_size (--size) must be 16..{MAX_IMAGE_SIZE}, got {image_size}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"write_folder: test_fraction must be in [0, 1], got {test_fraction}")
    root = Path(out)
    # Never overwrite a data set (its keypoints and split lists would silently stop matching its images), nor
    # mix generated files into a folder of other files: only a new or empty folder is written.
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        names = ("images", "masks", "parts", "keypoints.json", "part_names.json", "train.txt", "test.txt")
        existing = [name for name in names if (root / name).exists()]
        what = f"a data set ({', '.join(existing)})" if existing else "not an empty folder"
        raise FileExistsError(
            f"{root} already exists and is {what}; data synth writes only into a new folder"
        )
    for sub in ("images", "masks", "parts"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    n_test = int(round(n * test_fraction))
    counts = {"train": n - n_test, "test": n_test}
    datasets = {
        split: SyntheticParts(count, image_size, split=split, seed=seed, num_parts=num_parts, options=options)
        for split, count in counts.items()
    }
    jobs = [(split, i) for split, count in counts.items() for i in range(count)]
    keypoints: dict[str, list[list[float]]] = {}
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for split, i in tqdm(jobs, desc=f"writing {root}", disable=not progress, unit="img"):
        arrays = datasets[split].arrays(i)
        name = sample_name(split, i)
        rgb = np.round(arrays["image"].transpose(1, 2, 0) * 255.0).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / name)
        Image.fromarray((arrays["fg_mask"][0] > 0.5).astype(np.uint8) * 255).save(root / "masks" / name)
        Image.fromarray(arrays["parts"].astype(np.uint8)).save(root / "parts" / name)
        keypoints[name] = [[float(x), float(y), float(v)] for x, y, v in arrays["keypoints"]]
        lists[split].append(name)
    names = keypoint_names_for(num_parts)
    (root / "keypoints.json").write_text(json.dumps({"names": names, "keypoints": keypoints}))
    (root / "part_names.json").write_text(json.dumps(part_names_for(num_parts)))
    if options is not None and not options.is_default:
        record = {"seed": seed, "image_size": image_size, "num_parts": num_parts, **asdict(options)}
        (root / "synthetic.json").write_text(json.dumps(record, indent=1) + "\n")
    if all(lists.values()):  # one split only: no lists, so the folder loader uses every image in both
        for split, items in lists.items():
            (root / f"{split}.txt").write_text("".join(f"{item}\n" for item in items))
    logger.info(
        "wrote %d synthetic images (%d train, %d test) to %s", n, counts["train"], counts["test"], root
    )
    return {"train": counts["train"], "test": counts["test"], "images": n}
