"""Rebuild the real-photo development sets (issue #21) from snapshots of public GitHub repositories.

Each set is written in partdisco's folder layout (docs/DATA.md, "Your own folder"): ``images/NAME.jpg``,
``masks/NAME.png`` (foreground > 0), optional ``parts/NAME.png`` + ``part_names.json``, optional
``keypoints.json``, and ``train.txt`` / ``test.txt`` (a fixed split), plus ``SOURCE.json`` saying where
every file came from (repository, commit, licence). Images are downscaled so the shorter side is at most
``--max-side`` pixels (Lanczos; masks and part maps nearest; keypoints scaled), which keeps a set small
enough to travel to a GPU machine. The photos are never committed to partdisco: this script is the
recipe.

The snapshots are read, never changed, from the bare git directories that the session tool ``fetch``
brings to ``/work/.mirror/OWNER+NAME/repo`` (``--mirror`` or ``$PARTDISCO_MIRROR`` for another root). When
one is missing the script prints the ``fetch`` source to ask for.

No set holds horses or face portraits: real sets of those are held out for the final check.

    python benchmarks/devsets.py list
    python benchmarks/devsets.py build carparts --out /work/devsets/carparts
    python benchmarks/devsets.py build all --out /work/devsets          # one sub-folder per set
    # a stress set: small cats and dogs (5-40 % of the frame) pasted on the car photos (salient distractors)
    python benchmarks/devsets.py composite --objects /work/devsets/pets --backgrounds /work/devsets/carparts \
        --out /work/devsets/pets_on_cars
    # a stress set: the pets cropped close, the animal 50-80 % of the frame and cut by its border (portraits)
    python benchmarks/devsets.py closeup --objects /work/devsets/pets --out /work/devsets/pets_closeup
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = Path("/work/.mirror")
DEFAULT_OUT = ROOT / "devsets"  # ignored by git
SPLIT_SEED = 21  # issue #21
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DevSet:
    """One development set: where it comes from and how to rebuild it.

    Attributes:
        name: the set's name (the ``build`` argument and the default sub-folder).
        repo: ``owner/name`` of the GitHub repository holding the photos and annotations.
        commit: the commit the set was built from (40 hex digits).
        licence: what the repository and the original data set say about use, honestly.
        content: one line: what the photos show and which annotations the folder gets.
        build: ``build(snapshot, out, max_side) -> dict`` writes the folder and returns counts.
    """

    name: str
    repo: str
    commit: str
    licence: str
    content: str
    build: Callable[[Snapshot, Path, int], dict]


class Snapshot:
    """Read-only access to one commit of a bare git directory (``git cat-file``; no work tree needed)."""

    def __init__(self, git_dir: Path, commit: str) -> None:
        self.git_dir = git_dir
        self.commit = commit

    def _git(self, *args: str) -> bytes:
        return subprocess.run(
            ["git", f"--git-dir={self.git_dir}", *args], check=True, capture_output=True
        ).stdout

    def files(self, under: str = "") -> list[str]:
        """Paths of the files below ``under`` (sorted)."""
        out = (
            self._git("ls-tree", "-r", "--name-only", self.commit, "--", under)
            if under
            else self._git("ls-tree", "-r", "--name-only", self.commit)
        )
        return sorted(out.decode().splitlines())

    def read(self, path: str) -> bytes:
        """The bytes of one file; a clear error naming it when the snapshot lacks it."""
        try:
            return self._git("show", f"{self.commit}:{path}")
        except subprocess.CalledProcessError as err:
            raise FileNotFoundError(
                f"{self.git_dir}: no file {path} at {self.commit} ({err.stderr.decode().strip()})"
            ) from None

    def read_many(self, paths: list[str]) -> Iterator[tuple[str, bytes]]:
        """(path, bytes) for many files through one ``git cat-file --batch`` process."""
        proc = subprocess.Popen(
            ["git", f"--git-dir={self.git_dir}", "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            for path in paths:
                proc.stdin.write(f"{self.commit}:{path}\n".encode())
                proc.stdin.flush()
                header = proc.stdout.readline().decode().split()
                if len(header) < 3 or header[1] != "blob":
                    raise FileNotFoundError(f"{self.git_dir}: no file {path} at {self.commit}")
                data = proc.stdout.read(int(header[2]))
                proc.stdout.read(1)  # the newline after each object
                yield path, data
        finally:
            proc.stdin.close()
            proc.wait()


def open_snapshot(spec: DevSet, mirror: Path) -> Snapshot:
    """The fetched snapshot of ``spec.repo`` at ``spec.commit`` (or its HEAD, with a warning)."""
    owner, name = spec.repo.split("/")
    git_dir = mirror / f"{owner}+{name}" / "repo"
    if not (git_dir / "HEAD").exists():
        raise SystemExit(
            f"{spec.name}: no snapshot of {spec.repo} at {git_dir}. Bring it with the session tool "
            f"`fetch` (source: github:{spec.repo}), or point --mirror at the folder holding OWNER+NAME/repo."
        )
    has_commit = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"{spec.commit}^{{commit}}"], capture_output=True
    )
    if has_commit.returncode == 0:
        return Snapshot(git_dir, spec.commit)
    head = subprocess.run(
        ["git", f"--git-dir={git_dir}", "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"warning: {git_dir} lacks commit {spec.commit}; building {spec.name} from its HEAD {head} "
        "(the set may differ from the documented one)",
        file=sys.stderr,
    )
    return Snapshot(git_dir, head)


# --------------------------------------------------------------------------------------------------
# Writing one sample


def decode_image(data: bytes, what: str) -> Image.Image:
    """An RGB image from file bytes (EXIF orientation applied); a clear error naming ``what``."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as err:  # PIL raises many types for broken files
        raise ValueError(f"{what}: not an image PIL can read ({err})") from None
    return ImageOps.exif_transpose(image).convert("RGB")


def scale_for(size: tuple[int, int], max_side: int) -> float:
    """The factor that brings the shorter side of ``size`` (W, H) down to ``max_side`` (never up)."""
    return min(1.0, max_side / min(size))


def resized(image: Image.Image, factor: float, nearest: bool) -> Image.Image:
    if factor >= 1.0:
        return image
    w, h = image.size
    new = (max(1, round(w * factor)), max(1, round(h * factor)))
    return image.resize(new, Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)


class FolderWriter:
    """Writes samples in the folder layout and the split lists, ``keypoints.json`` and ``SOURCE.json``."""

    def __init__(self, out: Path, max_side: int, with_parts: bool, with_masks: bool = True) -> None:
        if out.exists() and any(out.iterdir()):
            raise SystemExit(f"{out} exists and is not empty; remove it or choose another --out")
        self.out = out
        self.max_side = max_side
        for sub in ("images",) + (("masks",) if with_masks else ()) + (("parts",) if with_parts else ()):
            (out / sub).mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        self.keypoints: dict[str, list[list[float]]] = {}

    def add(
        self,
        stem: str,
        image: Image.Image,
        mask: np.ndarray | None,
        parts: np.ndarray | None = None,
        keypoints: list[list[float]] | None = None,
    ) -> None:
        """Write one sample: ``mask`` / ``parts`` (H, W) at the image's size, keypoints in its pixels."""
        if mask is not None and mask.shape != (image.height, image.width):
            raise ValueError(f"{stem}: mask {mask.shape} does not match image {(image.height, image.width)}")
        factor = scale_for(image.size, self.max_side)
        name = f"{stem}.jpg"
        small = resized(image, factor, nearest=False)
        small.save(self.out / "images" / name, quality=85, optimize=True)
        if mask is not None:
            mask_img = resized(Image.fromarray((mask > 0).astype(np.uint8) * 255), factor, nearest=True)
            mask_img.save(self.out / "masks" / f"{stem}.png", optimize=True)
        if parts is not None:
            if parts.shape != (image.height, image.width) or parts.max() > 255:
                raise ValueError(f"{stem}: part map {parts.shape} (max {parts.max()}) does not fit the mask")
            resized(Image.fromarray(parts.astype(np.uint8)), factor, nearest=True).save(
                self.out / "parts" / f"{stem}.png", optimize=True
            )
        if keypoints is not None:
            sx, sy = small.width / image.width, small.height / image.height
            self.keypoints[name] = [[x * sx, y * sy, 1] if v > 0 else [0, 0, 0] for x, y, v in keypoints]
        self.names.append(name)

    def finish(
        self,
        spec: DevSet,
        snapshot: Snapshot,
        test_names: set[str] | None = None,
        part_names: list[str] | None = None,
        keypoint_names: list[str] | None = None,
        flip_permutation: list[int] | None = None,
        notes: str = "",
    ) -> dict:
        """Write the split lists and metadata; returns the counts."""
        names = sorted(self.names)
        if test_names is None:
            test_names = seeded_test_split(names)
        train = [n for n in names if n not in test_names]
        test = [n for n in names if n in test_names]
        (self.out / "train.txt").write_text("".join(f"{n}\n" for n in train))
        (self.out / "test.txt").write_text("".join(f"{n}\n" for n in test))
        if part_names is not None:
            (self.out / "part_names.json").write_text(json.dumps(part_names))
        if keypoint_names is not None:
            doc: dict = {"names": keypoint_names, "keypoints": self.keypoints}
            if flip_permutation is not None:
                doc["flip_permutation"] = flip_permutation
            (self.out / "keypoints.json").write_text(json.dumps(doc))
        size = sum(f.stat().st_size for f in self.out.rglob("*") if f.is_file())
        counts = {"images": len(names), "train": len(train), "test": len(test), "bytes": size}
        source = {
            "name": spec.name,
            "repo": f"https://github.com/{spec.repo}",
            "commit": snapshot.commit,
            "licence": spec.licence,
            "content": spec.content,
            "max_side": self.max_side,
            "notes": notes,
            "counts": counts,
            "rebuild": f"python benchmarks/devsets.py build {spec.name} --out DIR",
        }
        (self.out / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")
        return counts


def seeded_test_split(names: list[str], fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> set[str]:
    """A fixed test split: ``round(fraction * n)`` names drawn by a seeded permutation of the sorted names."""
    order = np.random.default_rng(seed).permutation(len(names))
    return {sorted(names)[i] for i in order[: int(round(fraction * len(names)))]}


# --------------------------------------------------------------------------------------------------
# The sets


def build_pets(snapshot: Snapshot, out: Path, max_side: int) -> dict:
    """Oxford-IIIT Pet sample: 600 photos of Abyssinian and Bengal cats and American bulldogs, trimaps.

    Mask = trimap pixels 1 (pet) and 3 (the unclassified band along the pet's outline); 2 is background.
    Split: seeded 80/20 over the sorted names (the source's trainval/test lists cover all 37 breeds).
    """
    writer = FolderWriter(out, max_side, with_parts=False)
    images = [p for p in snapshot.files("images") if p.endswith(".jpg")]
    trimaps = {Path(p).stem: p for p in snapshot.files("annotations/trimaps") if p.endswith(".png")}
    wanted = images + [trimaps[Path(p).stem] for p in images if Path(p).stem in trimaps]
    blobs = dict(snapshot.read_many(wanted))
    skipped = []
    for path in images:
        stem = Path(path).stem
        if stem not in trimaps:
            skipped.append(f"{stem} (no trimap)")
            continue
        image = decode_image(blobs[path], f"{snapshot.git_dir}:{path}")
        trimap = np.asarray(Image.open(io.BytesIO(blobs[trimaps[stem]])))
        if trimap.shape != (image.height, image.width):
            skipped.append(f"{stem} (trimap {trimap.shape} vs image {image.size})")
            continue
        mask = (trimap == 1) | (trimap == 3)
        if not mask.any():  # Abyssinian_34's trimap is all background upstream
            skipped.append(f"{stem} (empty trimap)")
            continue
        writer.add(stem, image, mask)
    notes = "mask = trimap in {1, 3}"
    if skipped:
        notes += "; skipped: " + ", ".join(skipped)
    return writer.finish(PETS, snapshot, notes=notes)


# Car Parts: 18 fine labels (COCO category ids 2..19) merged into 7 parts.
CAR_MERGE = {
    "bumper": ("back_bumper", "front_bumper"),
    "glass": ("back_glass", "front_glass"),
    "door": ("back_left_door", "back_right_door", "front_left_door", "front_right_door"),
    "light": ("back_left_light", "back_right_light", "front_left_light", "front_right_light"),
    "lid": ("hood", "tailgate", "trunk"),
    "mirror": ("left_mirror", "right_mirror"),
    "wheel": ("wheel",),
}
CAR_PART_NAMES = list(CAR_MERGE)


def build_carparts(snapshot: Snapshot, out: Path, max_side: int) -> dict:
    """DSMLR Car Parts: 500 photos of sedans, pickups and SUVs with 18 part polygons (COCO json).

    Parts: the 18 fine labels merged into 7 (``CAR_MERGE``), painted in the order of the json's annotations
    (later polygons on top). Mask = the union of the part polygons: car pixels that no part covers (roof,
    sills, plain side panels) are background in both. Split: the source's own 400 train / 100 test.
    """
    writer = FolderWriter(out, max_side, with_parts=True)
    fine_to_label = {fine: i + 1 for i, fines in enumerate(CAR_MERGE.values()) for fine in fines}
    test_names: set[str] = set()
    skipped = []
    for split, folder in (("train", "trainingset"), ("test", "testset")):
        doc = json.loads(snapshot.read(f"{folder}/annotations.json"))
        category = {c["id"]: c["name"] for c in doc["categories"]}
        by_image: dict[int, list[dict]] = {}
        for ann in doc["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        records = sorted(doc["images"], key=lambda r: r["file_name"])
        paths = [f"{folder}/JPEGImages/{r['file_name']}" for r in records]
        for record, (path, data) in zip(records, snapshot.read_many(paths), strict=True):
            stem = Path(record["file_name"]).stem
            raw = Image.open(io.BytesIO(data))
            size = (record["width"], record["height"])
            # the polygons are in the stored pixel grid; apply EXIF orientation only when the json agrees
            image = decode_image(data, f"{snapshot.git_dir}:{path}")
            if image.size != size:
                if raw.size != size:
                    skipped.append(f"{stem} (image {image.size} vs json {size})")
                    continue
                image = raw.convert("RGB")
            canvas = Image.new("L", size, 0)
            draw = ImageDraw.Draw(canvas)
            for ann in by_image.get(record["id"], []):
                name = category[ann["category_id"]]
                if name not in fine_to_label:  # "_background_"
                    continue
                for poly in ann["segmentation"]:
                    if len(poly) >= 6:
                        draw.polygon(
                            [tuple(poly[i : i + 2]) for i in range(0, len(poly), 2)], fill=fine_to_label[name]
                        )
            parts = np.asarray(canvas)
            if not parts.any():
                skipped.append(f"{stem} (no part polygons)")
                continue
            writer.add(stem, image, parts > 0, parts=parts)
            if split == "test":
                test_names.add(f"{stem}.jpg")
    notes = "mask = union of the part polygons; parts merged: " + json.dumps(CAR_MERGE)
    if skipped:
        notes += "; skipped: " + ", ".join(skipped)
    return writer.finish(CARPARTS, snapshot, test_names=test_names, part_names=CAR_PART_NAMES, notes=notes)


LSP_NAMES = [
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
]  # fmt: skip
LSP_FLIP = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13]


def build_lsp(snapshot: Snapshot, out: Path, max_side: int) -> dict:
    """Leeds Sports Pose Extended, first 400 images: people in sports poses, 14 body joints, no masks.

    ``joints.mat`` holds ``joints`` (14, 3, 400): x, y (pixels, 1-based as MATLAB writes them, kept as
    stored) and 1 = visible. Only visible joints inside the image are kept. Several photos show more
    people than the one annotated. Split: seeded 80/20.
    """
    from scipy.io import loadmat

    joints = loadmat(io.BytesIO(snapshot.read("joints.mat")))["joints"]  # (14, 3, N)
    if joints.shape[:2] != (14, 3):
        raise ValueError(f"{snapshot.git_dir}:joints.mat: expected joints (14, 3, N), got {joints.shape}")
    writer = FolderWriter(out, max_side, with_parts=False, with_masks=False)
    images = [p for p in snapshot.files("images") if p.endswith(".jpg")]
    for path, data in snapshot.read_many(images):
        stem = Path(path).stem
        index = int(stem[2:]) - 1  # im00001.jpg -> 0
        if index >= joints.shape[2]:
            raise ValueError(f"{snapshot.git_dir}: {path} has no joints (joints.mat has {joints.shape[2]})")
        image = decode_image(data, f"{snapshot.git_dir}:{path}")
        rows = []
        for x, y, v in joints[:, :, index]:
            inside = 0 <= x <= image.width and 0 <= y <= image.height
            rows.append([float(x), float(y), 1] if v > 0 and inside else [0.0, 0.0, 0])
        writer.add(stem, image, None, keypoints=rows)
    return writer.finish(
        LSP, snapshot, keypoint_names=LSP_NAMES, flip_permutation=LSP_FLIP, notes="keypoints only; no masks"
    )


PETS = DevSet(
    name="pets",
    repo="Naveen-Dodda/Sample_Pets_dataset",
    commit="9281626a62066c09f278b9b41ac4bad3683d7541",
    licence="Oxford-IIIT Pet (Parkhi et al., CVPR 2012). The repository has no licence file; the data set's "
    "README it carries says 'made available for research purposes only; use of these images must respect "
    "the terms of use of the original websites' (Flickr etc.). VGG's page lists the annotations as CC BY-SA "
    "4.0, the images' copyright staying with their owners. Treat as research-only.",
    content="599 photos (of the sample's 600): Abyssinian and Bengal cats, American bulldogs; foreground "
    "masks from the trimaps; no parts, no keypoints",
    build=build_pets,
)
CARPARTS = DevSet(
    name="carparts",
    repo="dsmlr/Car-Parts-Segmentation",
    commit="e970560da9785216dafb77f5749456d70864bfeb",
    licence="unknown/research-only: the repository has no licence file; its README asks to cite Pasupa et "
    "al., 'Evaluation of deep learning algorithms for semantic segmentation of car parts', Complex & "
    "Intelligent Systems 2021. Faces and number plates in the photos were anonymised by the authors.",
    content="500 photos of sedans, pickups and SUVs from several views; 7 merged parts (bumper, glass, door, "
    "light, lid, mirror, wheel) from 18 part polygons; mask = union of the parts; no keypoints",
    build=build_carparts,
)
LSP = DevSet(
    name="lsp",
    repo="MiraiLouis/lsp_cpm",
    commit="9f9100aa84dd3355d3c76b96e42bc4ecf501bf50",
    licence="unknown/research-only: the repository has no licence file. The images and joints are the "
    "first 400 of Leeds Sports Pose Extended (Johnson & Everingham, CVPR 2011), Flickr photos distributed "
    "by the authors for research use.",
    content="400 photos of people doing parkour, gymnastics and athletics, whole bodies, often small and "
    "in clutter, sometimes with other people; 14 body joints of one person; no masks, no parts",
    build=build_lsp,
)
SETS = {s.name: s for s in (PETS, CARPARTS, LSP)}


COMPOSITE_SIDE = 320  # composite images are square, this side


@functools.cache
def _object_free_view(folder: Path, name: str) -> Image.Image | None:
    """The largest square window of a photo with (almost) none of its own object, at COMPOSITE_SIDE.

    Windows of 60 %, 50 % and 40 % of the shorter side on a grid; the first size with a window where under
    2 % of the pixels are the photo's object (its mask) wins. None when no window is free enough.
    """
    photo = Image.open(folder / "images" / name).convert("RGB")
    obj = np.asarray(Image.open(folder / "masks" / f"{Path(name).stem}.png").convert("L")) > 127
    H, W = obj.shape
    integral = np.pad(obj.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    for frac in (0.6, 0.5, 0.4):
        side = int(frac * min(H, W))
        best = None
        for y in range(0, H - side + 1, max(1, side // 8)):
            for x in range(0, W - side + 1, max(1, side // 8)):
                inside = integral[y + side, x + side] - integral[y, x + side] - integral[y + side, x]
                inside += integral[y, x]
                if best is None or inside < best[0]:
                    best = (inside, x, y)
        if best is not None and best[0] < 0.02 * side * side:
            _, x, y = best
            view = photo.crop((x, y, x + side, y + side))
            return view.resize((COMPOSITE_SIDE, COMPOSITE_SIDE), Image.LANCZOS)
    return None


def composite(
    objects: Path, backgrounds: Path, out: Path, lo: float, hi: float, seed: int = SPLIT_SEED
) -> dict:
    """A stress set from two built sets: ``objects``' masked objects pasted small on ``backgrounds``' photos.

    Every object photo of a split is cut out along its mask, scaled so that it covers a fraction of the
    background drawn uniformly from ``[lo, hi]`` (less when it would not fit), and pasted at a random place
    on the next background of the same split (cycling). A background is the largest square window of one of
    ``backgrounds``' photos that holds (almost) none of that photo's own object (:func:`_object_free_view`:
    streets, buildings, trees, showrooms, parts of other cars), so only the pasted object recurs. The object
    is small and anywhere. Masks are exact (the pasted mask). Splits follow the object set's.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=False)
    (out / "images").mkdir()
    (out / "masks").mkdir()
    counts, shares = {"train": 0, "test": 0}, []
    for split in ("train", "test"):
        names = (objects / f"{split}.txt").read_text().split()
        bg_names = (backgrounds / f"{split}.txt").read_text().split()
        written = []
        bg_names = [n for n in bg_names if _object_free_view(backgrounds, n) is not None]
        for i, name in enumerate(names):
            stem = Path(name).stem
            photo = Image.open(objects / "images" / name).convert("RGB")
            mask = np.asarray(Image.open(objects / "masks" / f"{stem}.png").convert("L")) > 127
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            cut, cut_mask = photo.crop(box), Image.fromarray(mask.astype(np.uint8) * 255).crop(box)
            bg_name = bg_names[i % len(bg_names)]
            canvas = _object_free_view(backgrounds, bg_name).copy()  # (cached: paste on a copy)
            W, H = canvas.size
            target = rng.uniform(lo, hi) * W * H
            scale = min((target / mask.sum()) ** 0.5, 0.95 * W / cut.width, 0.95 * H / cut.height)
            w, h = max(1, round(cut.width * scale)), max(1, round(cut.height * scale))
            cut, cut_mask = cut.resize((w, h), Image.LANCZOS), cut_mask.resize((w, h), Image.BILINEAR)
            x, y = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            canvas.paste(cut, (x, y), cut_mask)
            full = np.zeros((H, W), np.uint8)
            full[y : y + h, x : x + w] = (np.asarray(cut_mask) > 127) * 255
            out_stem = f"{stem}__on__{Path(bg_name).stem}"
            canvas.save(out / "images" / f"{out_stem}.jpg", quality=92)
            Image.fromarray(full).save(out / "masks" / f"{out_stem}.png")
            shares.append(float((full > 0).mean()))
            written.append(f"{out_stem}.jpg")
        (out / f"{split}.txt").write_text("\n".join(written) + "\n")
        counts[split] = len(written)
    source = {
        "composite_of": {"objects": str(objects), "backgrounds": str(backgrounds)},
        "object_share": [lo, hi],
        "seed": seed,
        "object_share_measured": {"mean": float(np.mean(shares)), "min": float(np.min(shares)),
                                  "max": float(np.max(shares))},
        "licence": "as the two source sets' (see their SOURCE.json): research-only",
    }  # fmt: skip
    (out / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")
    nbytes = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"images": counts["train"] + counts["test"], **counts, "bytes": nbytes}


def closeup(objects: Path, out: Path, lo: float, hi: float, seed: int = SPLIT_SEED) -> dict:
    """A stress set of large objects: every photo of ``objects`` cropped close around its own object.

    The issue's face portraits have the head fill ~60 % of the frame, cut by the border. Here each photo is
    cropped to a square centred on its mask's centroid whose side makes the object cover a share drawn
    uniformly from ``[lo, hi]`` of it (parts of the object fall outside when it is elongated, as the
    shoulders and hair of a portrait do), shifted to stay inside the photo (the share is then lower),
    and resized to COMPOSITE_SIDE. Masks are cropped with it; splits follow the object set's.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=False)
    (out / "images").mkdir()
    (out / "masks").mkdir()
    counts, shares = {"train": 0, "test": 0}, []
    for split in ("train", "test"):
        written = []
        for name in (objects / f"{split}.txt").read_text().split():
            stem = Path(name).stem
            photo = Image.open(objects / "images" / name).convert("RGB")
            mask = np.asarray(Image.open(objects / "masks" / f"{stem}.png").convert("L")) > 127
            H, W = mask.shape
            ys, xs = np.nonzero(mask)
            side = int(min((mask.sum() / rng.uniform(lo, hi)) ** 0.5, H, W))
            x = int(np.clip(round(xs.mean() - side / 2), 0, W - side))
            y = int(np.clip(round(ys.mean() - side / 2), 0, H - side))
            box = (x, y, x + side, y + side)
            view = photo.crop(box).resize((COMPOSITE_SIDE, COMPOSITE_SIDE), Image.LANCZOS)
            view_mask = Image.fromarray(mask.astype(np.uint8) * 255).crop(box)
            view_mask = view_mask.resize((COMPOSITE_SIDE, COMPOSITE_SIDE), Image.NEAREST)
            view.save(out / "images" / f"{stem}.jpg", quality=92)
            view_mask.save(out / "masks" / f"{stem}.png")
            shares.append(float((np.asarray(view_mask) > 127).mean()))
            written.append(f"{stem}.jpg")
        (out / f"{split}.txt").write_text("\n".join(written) + "\n")
        counts[split] = len(written)
    source = {
        "closeup_of": str(objects),
        "object_share": [lo, hi],
        "seed": seed,
        "object_share_measured": {"mean": float(np.mean(shares)), "min": float(np.min(shares)),
                                  "max": float(np.max(shares))},
        "licence": "as the source set's (see its SOURCE.json): research-only",
    }  # fmt: skip
    (out / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")
    return {"images": counts["train"] + counts["test"], **counts, "share": float(np.mean(shares))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the sets, their sources and licences")
    build = sub.add_parser("build", help="write one set (or all) in the folder layout")
    build.add_argument("name", choices=[*SETS, "all"])
    build.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT}/NAME)")
    build.add_argument("--max-side", type=int, default=320, help="shorter image side at most (default 320)")
    build.add_argument(
        "--mirror",
        type=Path,
        default=Path(os.environ.get("PARTDISCO_MIRROR", DEFAULT_MIRROR)),
        help="folder holding the fetched snapshots OWNER+NAME/repo (default /work/.mirror)",
    )
    build.add_argument("--force", action="store_true", help="replace an existing output folder")
    comp = sub.add_parser(
        "composite", help="a small-object stress set: one set's objects pasted on another's photos"
    )
    comp.add_argument("--objects", type=Path, required=True, help="a built set with masks (e.g. pets)")
    comp.add_argument("--backgrounds", type=Path, required=True, help="a built set (e.g. carparts)")
    comp.add_argument("--out", type=Path, required=True)
    comp.add_argument("--share", type=float, nargs=2, default=(0.05, 0.4), help="object share of the frame")
    close = sub.add_parser(
        "closeup", help="a large-object stress set: a set's photos cropped close around their objects"
    )
    close.add_argument("--objects", type=Path, required=True, help="a built set with masks (e.g. pets)")
    close.add_argument("--out", type=Path, required=True)
    close.add_argument("--share", type=float, nargs=2, default=(0.5, 0.8), help="object share of the frame")
    args = parser.parse_args(argv)
    if args.command == "closeup":
        counts = closeup(args.objects, args.out, *args.share)
        print(
            f"{args.out}: {counts['images']} images ({counts['train']} train, {counts['test']} test), "
            f"object {100 * counts['share']:.1f} % of the frame on average"
        )
        return 0
    if args.command == "composite":
        counts = composite(args.objects, args.backgrounds, args.out, *args.share)
        print(f"{args.out}: {counts['images']} images ({counts['train']} train, {counts['test']} test)")
        return 0
    if args.command == "list":
        for spec in SETS.values():
            print(f"{spec.name}\n  source:  github:{spec.repo} @ {spec.commit}\n  content: {spec.content}")
            print(f"  licence: {spec.licence}\n")
        return 0
    names = list(SETS) if args.name == "all" else [args.name]
    for name in names:
        spec = SETS[name]
        if args.out is None:
            out = DEFAULT_OUT / name
        else:
            out = args.out / name if args.name == "all" else args.out
        if args.force and out.exists():
            shutil.rmtree(out)
        counts = spec.build(open_snapshot(spec, args.mirror), out, args.max_side)
        print(
            f"{name}: {counts['images']} images ({counts['train']} train, {counts['test']} test), "
            f"{counts['bytes'] / 1e6:.1f} MB in {out}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
