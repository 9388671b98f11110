"""benchmarks/score_segment.py scores label maps against a dev set; benchmarks/devsets.py rebuilds one.

Every folder is made here (CI has no data sets): a 3-image development set with masks, parts and keypoints,
prediction folders in ``partdisco segment``'s layout, and a tiny git repository in the Car Parts layout.
"""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


score_segment = _load("score_segment")
devsets = _load("devsets")

H, W = 8, 12


def _parts_map() -> np.ndarray:
    """(8, 12): the object is rows 2..5, columns 2..9; part 1 = its left half, part 2 = its right half."""
    parts = np.zeros((H, W), dtype=np.uint8)
    parts[2:6, 2:6] = 1
    parts[2:6, 6:10] = 2
    return parts


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def devset(tmp_path):
    root = tmp_path / "dev"
    parts = _parts_map()
    names = ["a.jpg", "b.jpg", "c.jpg"]
    for name in names:
        stem = Path(name).stem
        _save(root / "images" / name, np.full((H, W, 3), 128, dtype=np.uint8))
        _save(root / "masks" / f"{stem}.png", (parts > 0).astype(np.uint8) * 255)
        _save(root / "parts" / f"{stem}.png", parts)
    (root / "train.txt").write_text("a.jpg\n")
    (root / "test.txt").write_text("b.jpg\nc.jpg\n")
    keypoints = {"names": ["left", "right"], "keypoints": {n: [[3.5, 3.5, 1], [8.5, 4.5, 1]] for n in names}}
    keypoints["keypoints"]["c.jpg"][1] = [0, 0, 0]  # invisible
    (root / "keypoints.json").write_text(json.dumps(keypoints))
    return root


def _prediction(tmp_path: Path, maps: dict[str, np.ndarray]) -> Path:
    pred = tmp_path / "seg"
    for stem, labels in maps.items():
        _save(pred / "labels" / f"{stem}.png", labels.astype(np.uint8))
    return pred


def test_perfect_prediction_scores_100(tmp_path, devset):
    parts = _parts_map()
    # other label ids than the truth's: NMI / ARI do not care which id a part gets
    relabelled = np.select([parts == 1, parts == 2], [7, 3], 0)
    result = score_segment.score(devset, _prediction(tmp_path, {"b": relabelled, "c": relabelled}))
    pred = result["prediction"]
    assert result["images"] == 2 and pred["resized"] == 0
    for key in ("fg_iou", "fg_iou_mean", "parts_nmi", "parts_ari", "fg_nmi", "full_nmi", "kp_nmi", "kp_ari"):
        assert pred[key] == pytest.approx(100.0), key


def test_partial_prediction_by_hand(tmp_path, devset):
    parts = _parts_map()
    half = np.zeros((H, W), dtype=np.uint8)
    half[2:6, 2:6] = 1  # finds the left part only: the right part is predicted background
    everything = np.ones((H, W), dtype=np.uint8)  # one part, no background
    result = score_segment.score(devset, _prediction(tmp_path, {"b": half, "c": everything}))
    pred = result["prediction"]
    fg = int((parts > 0).sum())  # 32
    assert pred["fg_iou"] == pytest.approx(100 * (16 + fg) / (fg + H * W))
    assert pred["fg_iou_mean"] == pytest.approx(100 * (16 / 32 + 32 / 96) / 2)
    # keypoints: b reads labels (1, 0) for keypoints (0, 1); c reads 1 for keypoint 0 only
    table = np.array([[0, 1], [2, 0]])
    assert pred["kp_nmi"] == pytest.approx(score_segment.nmi_from_table(table))
    assert 0.0 < pred["parts_nmi"] < 100.0


def test_baselines(devset):
    result = score_segment.score(devset)
    base = result["baselines"]
    fg_fraction = 32 / 96
    assert "prediction" not in result
    assert base["all_fg"]["fg_iou"] == pytest.approx(100 * fg_fraction)
    assert base["all_fg"]["parts_nmi"] == pytest.approx(0.0)
    # the object's halves are the 2x2 grid's columns (rows 2..5 straddle the grid's row boundary at 4)
    assert 0.0 < base["grid2x2"]["parts_nmi"] < 100.0
    assert "fg_iou" not in base["grid2x2"]
    # the centre box of scale s is chosen on train.txt (one image): the best of 0.3..0.9
    s = result["centre_scale"]["centre_box"]
    ious = {}
    for scale in score_segment.SCALES:
        region = score_segment.centre_region((H, W), scale, ellipse=False)
        ious[scale] = (region & (_parts_map() > 0)).sum() / (region | (_parts_map() > 0)).sum()
    assert ious[s] == max(ious.values())
    assert base["centre_box"]["fg_iou"] == pytest.approx(100 * ious[s])


def test_grid_and_centre_region_shapes():
    grid = score_segment.grid_labels((6, 9), 3)
    assert grid[0, 0] == 1 and grid[0, -1] == 3 and grid[-1, -1] == 9
    assert sorted(np.unique(grid).tolist()) == list(range(1, 10))
    box = score_segment.centre_region((10, 10), 0.6, ellipse=False)
    ellipse = score_segment.centre_region((10, 10), 0.6, ellipse=True)
    assert box.sum() == 36 and ellipse.sum() < box.sum() and not (ellipse & ~box).any()


def test_resized_prediction_and_missing_label_map(tmp_path, devset):
    big = np.kron(_parts_map(), np.ones((2, 2), dtype=np.uint8))  # twice the size
    result = score_segment.score(devset, _prediction(tmp_path, {"b": big, "c": big}))
    assert result["prediction"]["resized"] == 2 and result["prediction"]["fg_iou"] == pytest.approx(100.0)
    shutil.rmtree(tmp_path / "seg")
    pred = _prediction(tmp_path, {"b": big})
    assert score_segment.main(["--devset", str(devset), "--pred", str(pred)]) == 2


def test_cli_writes_json(tmp_path, devset, capsys):
    out = tmp_path / "scores.json"
    assert score_segment.main(["--devset", str(devset), "--json", str(out)]) == 0
    assert "| all_fg |" in capsys.readouterr().out
    assert json.loads(out.read_text())["images"] == 2


# ------------------------------------------------------------------------------------------------ devsets


def _git(repo: Path, *args: str) -> str:
    env = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    return subprocess.run(
        ["git", "-C", str(repo), *env, *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def carparts_mirror(tmp_path):
    """A bare git snapshot in the Car Parts layout: 2 train images and 1 test image, 600 x 400 px."""
    work = tmp_path / "work"
    categories = [{"id": 1, "name": "_background_"}, {"id": 2, "name": "wheel"}, {"id": 3, "name": "hood"}]
    for folder, names in (("trainingset", ["car1.jpg", "car2.jpg"]), ("testset", ["car3.jpg"])):
        images, annotations = [], []
        for i, name in enumerate(names):
            _save(work / folder / "JPEGImages" / name, np.full((400, 600, 3), 90 + 40 * i, dtype=np.uint8))
            images.append({"id": i, "file_name": name, "width": 600, "height": 400})
            wheel = [100, 200, 300, 200, 300, 400, 100, 400]  # x from 100 to 300, y from 200 to 400
            annotations.append({"id": 2 * i, "image_id": i, "category_id": 2, "segmentation": [wheel]})
            hood = [400, 0, 600, 0, 600, 100, 400, 100]
            annotations.append({"id": 2 * i + 1, "image_id": i, "category_id": 3, "segmentation": [hood]})
        doc = {"images": images, "categories": categories, "annotations": annotations}
        (work / folder / "annotations.json").write_text(json.dumps(doc))
    _git(work, "init", "-q")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "fixture")
    mirror = tmp_path / "mirror"
    (mirror / "dsmlr+Car-Parts-Segmentation").mkdir(parents=True)
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(mirror / "dsmlr+Car-Parts-Segmentation" / "repo")],
        check=True,
    )
    return mirror


def test_devsets_builds_carparts_layout(tmp_path, carparts_mirror, capsys):
    out = tmp_path / "carparts"
    args = ["build", "carparts", "--out", str(out), "--mirror", str(carparts_mirror), "--max-side", "200"]
    assert devsets.main(args) == 0
    assert "lacks commit" in capsys.readouterr().err  # the fixture is not the pinned commit
    assert (out / "train.txt").read_text().split() == ["car1.jpg", "car2.jpg"]
    assert (out / "test.txt").read_text().split() == ["car3.jpg"]
    assert json.loads((out / "part_names.json").read_text()) == devsets.CAR_PART_NAMES
    image = Image.open(out / "images" / "car3.jpg")
    assert image.size == (300, 200)  # shorter side 400 -> 200
    parts = np.asarray(Image.open(out / "parts" / "car3.png"))
    mask = np.asarray(Image.open(out / "masks" / "car3.png"))
    wheel, lid = devsets.CAR_PART_NAMES.index("wheel") + 1, devsets.CAR_PART_NAMES.index("lid") + 1
    assert parts.shape == (200, 300) and parts[150, 100] == wheel and parts[20, 250] == lid
    assert parts[20, 20] == 0 and ((mask > 0) == (parts > 0)).all()
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["counts"]["images"] == 3 and "github.com/dsmlr/Car-Parts-Segmentation" in source["repo"]
    with pytest.raises(SystemExit, match="not empty"):  # an existing set is never written into
        devsets.main(args)


def test_devsets_missing_snapshot_names_the_fetch_source(tmp_path):
    with pytest.raises(SystemExit, match="github:dsmlr/Car-Parts-Segmentation"):
        devsets.main(["build", "carparts", "--out", str(tmp_path / "x"), "--mirror", str(tmp_path / "none")])


def test_seeded_split_is_fixed():
    names = [f"img{i}.jpg" for i in range(50)]
    first = devsets.seeded_test_split(names)
    assert first == devsets.seeded_test_split(list(reversed(names))) and len(first) == 10


def test_keypoints_only_devset(tmp_path, devset):
    shutil.rmtree(devset / "masks")
    shutil.rmtree(devset / "parts")
    parts = _parts_map()
    result = score_segment.score(devset, _prediction(tmp_path, {"b": parts, "c": parts}))
    assert result["fg_fraction"] is None and result["centre_scale"] == {}
    assert set(result["prediction"]) == {"folder", "resized", "kp_nmi", "kp_ari"}
    assert result["prediction"]["kp_nmi"] == pytest.approx(100.0)
    assert set(result["baselines"]) == {"all_fg", "grid2x2", "grid3x3"}


def test_devsets_builds_lsp_keypoints(tmp_path):
    from scipy.io import savemat

    work = tmp_path / "work"
    joints = np.zeros((14, 3, 2))
    joints[:, 0, :], joints[:, 1, :], joints[:, 2, :] = 50.0, 20.0, 1.0
    joints[3, :, 1] = (500.0, 20.0, 1.0)  # outside the 100 x 80 image: dropped
    joints[4, 2, 1] = 0.0  # invisible
    for i in range(2):
        _save(work / "images" / f"im{i + 1:05d}.jpg", np.full((80, 100, 3), 100, dtype=np.uint8))
    work.mkdir(exist_ok=True)
    savemat(work / "joints.mat", {"joints": joints})
    _git(work, "init", "-q")
    _git(work, "add", "-A")
    _git(work, "commit", "-qm", "fixture")
    mirror = tmp_path / "mirror"
    (mirror / "MiraiLouis+lsp_cpm").mkdir(parents=True)
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work), str(mirror / "MiraiLouis+lsp_cpm" / "repo")], check=True
    )
    out = tmp_path / "lsp"
    assert devsets.main(["build", "lsp", "--out", str(out), "--mirror", str(mirror), "--max-side", "40"]) == 0
    doc = json.loads((out / "keypoints.json").read_text())
    assert doc["names"] == devsets.LSP_NAMES and doc["flip_permutation"] == devsets.LSP_FLIP
    first, second = doc["keypoints"]["im00001.jpg"], doc["keypoints"]["im00002.jpg"]
    assert first[0] == [25.0, 10.0, 1]  # scaled by 40 / 80
    assert second[3] == [0, 0, 0] and second[4] == [0, 0, 0] and second[5] == [25.0, 10.0, 1]
    assert not (out / "masks").exists()


def test_devsets_closeup_crops_around_the_object_with_its_mask(tmp_path):
    """closeup: square crops centred on each object, the object 50-80 % of the frame, masks aligned."""
    src = tmp_path / "objects"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(0)
    for split, names in (("train", ["a", "b"]), ("test", ["c"])):
        for k, name in enumerate(names):
            photo = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)  # dark background
            mask = np.zeros((120, 160), np.uint8)
            y, x = 30 + 10 * k, 50 + 20 * k
            mask[y : y + 40, x : x + 30] = 255  # a 40 x 30 object, 6 % of the photo
            photo[mask > 0] = 250  # a bright object
            Image.fromarray(photo).save(src / "images" / f"{name}.png")
            Image.fromarray(mask).save(src / "masks" / f"{name}.png")
        (src / f"{split}.txt").write_text("\n".join(f"{n}.png" for n in names) + "\n")
    out = tmp_path / "closeup"
    assert devsets.main(["closeup", "--objects", str(src), "--out", str(out)]) == 0
    assert (out / "train.txt").read_text().split() == ["a.jpg", "b.jpg"]
    assert (out / "test.txt").read_text().split() == ["c.jpg"]
    for name in ("a", "b", "c"):
        image = np.asarray(Image.open(out / "images" / f"{name}.jpg").convert("L")).astype(float)
        mask = np.asarray(Image.open(out / "masks" / f"{name}.png")) > 127
        assert image.shape == mask.shape == (devsets.COMPOSITE_SIDE,) * 2
        assert 0.45 < mask.mean() < 0.85  # the share drawn from [0.5, 0.8], up to the crop's rounding
        assert image[mask].mean() > 200 and image[~mask].mean() < 90  # the mask sits on the bright object
    doc = json.loads((out / "SOURCE.json").read_text())
    assert doc["object_share"] == [0.5, 0.8] and 0.45 < doc["object_share_measured"]["mean"] < 0.85
