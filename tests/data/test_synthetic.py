import colorsys
import json
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.config import DataConfig
from partdisco.data.synth.creature import keypoint_specs
from partdisco.data.synthetic import (
    PART_HUES,
    STRESS_PRESETS,
    Paint,
    Scene,
    SceneOptions,
    Shape,
    SyntheticParts,
    build,
    flip_permutation_for,
    generate_sample,
    keypoint_names_for,
    part_names_for,
    render_scene,
    sample_generator,
    sample_name,
    sample_scene,
    stress_options,
    write_folder,
)

FLAT = Paint((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), "flat", 1.0, 0.0, (0.0, 0.0), 0.0)


def _single_shape_scene(shape: Shape) -> Scene:
    """A black background, one flat white shape, no noise: image intensity = coverage."""
    black = (0.0, 0.0, 0.0)
    return Scene((black,) * 4, (), (shape,), (), 0.0, 0)


@pytest.fixture(scope="module")
def samples64():
    return [generate_sample(0, "train", i, 64) for i in range(100)]


class TestNames:
    def test_part_names(self):
        assert part_names_for(4) == ["head", "body", "wings", "tail"]
        assert part_names_for(5) == ["head", "body", "wings", "tail", "legs"]

    def test_keypoint_names(self):
        names4, names5 = keypoint_names_for(4), keypoint_names_for(5)
        assert len(names4) == 9 and len(names5) == 11
        assert names5[:9] == names4 and names5[9:] == ["left_foot", "right_foot"]

    @pytest.mark.parametrize("num_parts", [4, 5])
    def test_flip_permutation_swaps_sides(self, num_parts):
        names = keypoint_names_for(num_parts)
        perm = flip_permutation_for(num_parts)
        assert sorted(perm) == list(range(len(names)))
        assert [perm[p] for p in perm] == list(range(len(names)))  # an involution
        for i, j in enumerate(perm):
            swapped = names[i].replace("left_", "@").replace("right_", "left_").replace("@", "right_")
            assert names[j] == swapped

    @pytest.mark.parametrize("bad", [3, 6, 0])
    def test_bad_num_parts(self, bad):
        with pytest.raises(ValueError, match="num_parts"):
            part_names_for(bad)

    def test_sample_name(self):
        assert sample_name("train", 123) == "synth_train_000123.png"
        assert sample_name("test", 7) == "synth_test_000007.png"


class TestDeterminism:
    def test_same_index_identical(self):
        a = SyntheticParts(10, 32, seed=3)[7]
        SyntheticParts(10, 32, seed=3)[2]  # other calls in between must not matter
        b = SyntheticParts(10, 32, seed=3)[7]
        for key in ("image", "fg_mask", "parts", "keypoints", "bbox"):
            assert torch.equal(a[key], b[key]), key

    def test_independent_of_global_rng(self):
        np.random.seed(0)
        torch.manual_seed(0)
        a = generate_sample(1, "train", 4, 32)
        np.random.seed(99)
        torch.manual_seed(99)
        np.random.rand(10)
        b = generate_sample(1, "train", 4, 32)
        assert np.array_equal(a["image"], b["image"])

    def test_seeds_splits_indices_differ(self):
        base = generate_sample(0, "train", 0, 32)["image"]
        assert not np.array_equal(base, generate_sample(1, "train", 0, 32)["image"])
        assert not np.array_equal(base, generate_sample(0, "test", 0, 32)["image"])
        assert not np.array_equal(base, generate_sample(0, "train", 1, 32)["image"])

    def test_generator_streams(self):
        assert sample_generator(0, "train", 5).random() == sample_generator(0, "train", 5).random()
        assert sample_generator(0, "train", 5).random() != sample_generator(0, "test", 5).random()

    def test_scene_independent_of_size(self):
        # The random draws do not depend on S: keypoints scale exactly with the image.
        small, large = generate_sample(2, "test", 3, 64), generate_sample(2, "test", 3, 128)
        both = (small["keypoints"][:, 2] > 0) & (large["keypoints"][:, 2] > 0)
        assert both.sum() >= 5
        np.testing.assert_allclose(large["keypoints"][both, :2], 2 * small["keypoints"][both, :2], rtol=1e-5)
        # and the part maps agree up to edge pixels
        down = large["parts"][::2, ::2]
        assert (down == small["parts"]).mean() > 0.9


class TestSampleContents:
    @pytest.mark.parametrize("num_parts,size", [(4, 64), (5, 48), (4, 16)])
    def test_shapes_dtypes_ranges(self, num_parts, size):
        ds = SyntheticParts(3, size, split="test", seed=1, num_parts=num_parts)
        n_kp = len(ds.keypoint_names)
        for i in range(len(ds)):
            s = ds[i]
            assert s["image"].shape == (3, size, size) and s["image"].dtype == torch.float32
            assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
            assert s["fg_mask"].shape == (1, size, size) and s["fg_mask"].dtype == torch.float32
            assert s["parts"].shape == (size, size) and s["parts"].dtype == torch.int64
            assert int(s["parts"].min()) >= 0 and int(s["parts"].max()) <= num_parts
            assert s["keypoints"].shape == (n_kp, 3) and s["keypoints"].dtype == torch.float32
            assert s["bbox"].shape == (4,) and s["bbox"].dtype == torch.float32
            assert s["class_id"].dtype == torch.int64 and int(s["class_id"]) == 0
            assert s["index"].dtype == torch.int64 and int(s["index"]) == i
            assert s["name"] == f"synth_test_{i:06d}.png"

    def test_every_part_in_most_samples(self, samples64):
        presence = np.array([[np.any(s["parts"] == k) for k in range(1, 5)] for s in samples64])
        assert presence.mean(axis=0).min() >= 0.95

    def test_every_part_in_most_samples_five_parts(self):
        samples = [generate_sample(0, "train", i, 48, num_parts=5) for i in range(40)]
        presence = np.array([[np.any(s["parts"] == k) for k in range(1, 6)] for s in samples])
        assert presence.mean(axis=0).min() >= 0.9

    def test_fg_mask_is_parts_positive(self, samples64):
        for s in samples64:
            np.testing.assert_array_equal(s["fg_mask"][0], (s["parts"] > 0).astype(np.float32))

    def test_bbox_encloses_mask_tightly(self, samples64):
        for s in samples64:
            ys, xs = np.nonzero(s["parts"])
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_array_equal(s["bbox"], np.array(expected, dtype=np.float32))

    def test_keypoints_inside_their_part(self, samples64):
        part_of = dict(keypoint_specs(4))
        labels = np.array([part_of[name] for name in keypoint_names_for(4)])
        for s in samples64:
            kp = s["keypoints"]
            visible = kp[:, 2] > 0
            assert set(np.unique(kp[:, 2])) <= {0.0, 1.0}
            assert np.all(kp[~visible] == 0)  # invisible rows are (0, 0, 0)
            ix, iy = np.floor(kp[visible, 0]).astype(int), np.floor(kp[visible, 1]).astype(int)
            np.testing.assert_array_equal(s["parts"][iy, ix], labels[visible])

    def test_keypoints_mostly_visible(self, samples64):
        visibility = np.mean([s["keypoints"][:, 2] for s in samples64], axis=0)
        assert visibility.min() >= 0.85, dict(zip(keypoint_names_for(4), visibility))

    def test_left_right_are_the_creature_sides(self, samples64):
        # Seen from above in image coordinates (y down), the creature's left is where
        # cross(forward, point - body) < 0, forward = head_center - body_center.
        names = keypoint_names_for(4)
        head, body = names.index("head_center"), names.index("body_center")
        left, right = names.index("left_wing_elbow"), names.index("right_wing_elbow")
        checked = 0
        for s in samples64:
            kp = s["keypoints"]
            if not kp[[head, body, left, right], 2].all():
                continue
            forward = kp[head, :2] - kp[body, :2]
            for idx, sign in ((left, -1.0), (right, 1.0)):
                d = kp[idx, :2] - kp[body, :2]
                assert sign * (forward[0] * d[1] - forward[1] * d[0]) > 0
            checked += 1
        assert checked >= 80

    def test_rotation_covers_all_directions(self, samples64):
        names = keypoint_names_for(4)
        head, body = names.index("head_center"), names.index("body_center")
        angles = [
            math.atan2(*(s["keypoints"][head, 1::-1] - s["keypoints"][body, 1::-1]))
            for s in samples64
            if s["keypoints"][[head, body], 2].all()
        ]
        counts, _ = np.histogram(angles, bins=8, range=(-math.pi, math.pi))
        assert counts.min() >= 4, counts

    def test_position_is_not_a_giveaway(self):
        sklearn = pytest.importorskip("sklearn")
        from sklearn.cluster import KMeans
        from sklearn.metrics import normalized_mutual_info_score

        assert sklearn
        coords, truth = [], []
        for i in range(200):
            s = generate_sample(0, "train", i, 48)
            ys, xs = np.nonzero(s["parts"])
            x0, y0, x1, y1 = s["bbox"]
            coords.append(np.stack([(xs + 0.5 - x0) / (x1 - x0), (ys + 0.5 - y0) / (y1 - y0)], axis=1))
            truth.append(s["parts"][ys, xs])
        pred = KMeans(4, n_init=2, random_state=0).fit_predict(np.concatenate(coords))
        nmi = normalized_mutual_info_score(np.concatenate(truth), pred)
        assert nmi < 0.35, nmi

    def test_background_distractors_never_copy_a_part(self):
        # A patterned distractor never has a hue inside a part's colour family.
        def in_family(hue):
            return any(min(abs(hue - c), 1 - abs(hue - c)) <= half for c, half in PART_HUES.values())

        checked = 0
        for i in range(100):
            scene = sample_scene(sample_generator(0, "train", i), 5)
            for shape in scene.shapes:
                if shape.label == 0 and shape.paint.texture != "flat":
                    hue = colorsys.rgb_to_hsv(*shape.paint.colour)[0]
                    assert not in_family(hue), (i, shape.paint)
                    checked += 1
        assert checked > 50


class TestRendering:
    def test_disc_coverage_is_antialiased(self):
        disc = Shape("ellipse", (0.5, 0.5, 0.3, 0.3, 0.0), 1, FLAT)
        out = render_scene(_single_shape_scene(disc), 40)
        coverage = out["image"][0]
        radius = 0.3 * 40
        assert abs(coverage.sum() - math.pi * radius**2) < 0.01 * math.pi * radius**2
        partial = (coverage > 0.02) & (coverage < 0.98)
        assert partial.sum() > 40  # a grey rim, not a binary edge
        assert abs(out["fg_mask"].sum() - math.pi * radius**2) < 0.03 * math.pi * radius**2

    def test_square_polygon_exact(self):
        # Square [10, 20) x [10, 20) pixels on a 32 px image: coverage is exact, labels too.
        sq = Shape("polygon", tuple(v / 32 for v in (10, 10, 20, 10, 20, 20, 10, 20)), 2, FLAT)
        out = render_scene(_single_shape_scene(sq), 32)
        expected = np.zeros((32, 32), dtype=np.float32)
        expected[10:20, 10:20] = 1.0
        np.testing.assert_allclose(out["image"][1], expected, atol=1e-5)
        np.testing.assert_array_equal(out["parts"], expected.astype(np.int64) * 2)
        np.testing.assert_array_equal(out["bbox"], [10, 10, 20, 20])

    def test_capsule_area(self):
        cap = Shape("capsule", (0.25, 0.5, 0.75, 0.5, 0.1, 0.1), 3, FLAT)
        out = render_scene(_single_shape_scene(cap), 64)
        length, radius = 0.5 * 64, 0.1 * 64
        area = 2 * radius * length + math.pi * radius**2
        assert abs(out["image"][2].sum() - area) < 0.01 * area

    def test_paint_only_shape_keeps_labels(self):
        disc = Shape("ellipse", (0.5, 0.5, 0.3, 0.3, 0.0), 1, FLAT)
        black = Paint((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), "flat", 1.0, 0.0, (0.0, 0.0), 0.0)
        eye = Shape("ellipse", (0.5, 0.5, 0.1, 0.1, 0.0), -1, black)
        out = render_scene(Scene(((0.0, 0.0, 0.0),) * 4, (), (disc, eye), (), 0.0, 0), 40)
        assert out["image"][0, 20, 20] == 0.0 and out["parts"][20, 20] == 1

    @pytest.mark.parametrize("texture", ["gradient", "spots", "stripes", "checker", "grid", "waves"])
    def test_textures_in_range_and_varied(self, texture):
        # period 0.15 S (the gradient's half length: 0.5 S, centred)
        period, origin = (0.5, (0.5, 0.5)) if texture == "gradient" else (0.15, (0.1, 0.2))
        paint = Paint((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), texture, period, 0.3, origin, 0.0)
        square = Shape("polygon", (0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0), 1, paint)
        image = render_scene(_single_shape_scene(square), 64)["image"][0]
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert image.max() - image.min() > 0.8 and 0.1 < image.mean() < 0.9

    def test_empty_foreground_bbox_is_whole_image(self):
        out = render_scene(_single_shape_scene(Shape("ellipse", (2.0, 2.0, 0.1, 0.1, 0.0), 1, FLAT)), 16)
        assert out["fg_mask"].sum() == 0
        np.testing.assert_array_equal(out["bbox"], [0, 0, 16, 16])

    def test_bad_paint_and_shape(self):
        with pytest.raises(ValueError, match="plaid"):
            Paint((0, 0, 0), (1, 1, 1), "plaid", 0.1, 0.0, (0.0, 0.0), 0.0)
        with pytest.raises(ValueError, match="'star'"):
            Shape("star", (0.5, 0.5, 0.1), 1, FLAT)
        with pytest.raises(ValueError, match="capsule"):
            Shape("capsule", (0.5, 0.5, 0.1), 1, FLAT)

    def test_fast_enough(self):
        # Lenient floor (the measured rate is about 700/s at 64 px on one core) so a loaded CI box passes.
        start = time.perf_counter()
        for i in range(50):
            generate_sample(0, "train", i, 64)
        assert 50 / (time.perf_counter() - start) > 100


class TestDataset:
    def test_attributes(self):
        ds = SyntheticParts(5, 32, num_parts=5)
        assert len(ds) == 5 and ds.has_masks is True and ds.skipped == []
        assert ds.part_names == part_names_for(5) and ds.keypoint_names == keypoint_names_for(5)
        assert ds.flip_permutation == flip_permutation_for(5)

    def test_negative_and_out_of_range_index(self):
        ds = SyntheticParts(3, 32)
        assert torch.equal(ds[-1]["image"], ds[2]["image"]) and int(ds[-1]["index"]) == 2
        with pytest.raises(IndexError, match="out of range"):
            ds[3]

    def test_cache_returns_equal_independent_copies(self):
        ds = SyntheticParts(2, 32, cache=True)
        first = ds[1]
        first["image"].zero_()
        second = ds[1]
        assert float(second["image"].sum()) > 0
        assert torch.equal(second["image"], SyntheticParts(2, 32)[1]["image"])

    @pytest.mark.parametrize(
        "kwargs,match",
        [
            (dict(n=-1, image_size=32), "n must be"),
            (dict(n=2, image_size=8), "image_size"),
            (dict(n=2, image_size=32, split="val"), "'val'"),
            (dict(n=2, image_size=32, num_parts=7), "num_parts"),
        ],
    )
    def test_bad_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            SyntheticParts(**kwargs)

    def test_dataloader_collates(self):
        loader = torch.utils.data.DataLoader(SyntheticParts(4, 32), batch_size=4)
        batch = next(iter(loader))
        assert batch["image"].shape == (4, 3, 32, 32) and batch["parts"].shape == (4, 32, 32)
        assert batch["keypoints"].shape == (4, 9, 3) and len(batch["name"]) == 4


class TestBuild:
    def test_reads_config(self):
        cfg = DataConfig(image_size=48, synthetic_train=11, synthetic_test=5, synthetic_seed=7)
        train, test = build(cfg, "train", train=True), build(cfg, "test", train=False)
        assert (len(train), len(test)) == (11, 5)
        assert train.image_size == 48 and train.seed == 7 and test.split == "test"
        assert torch.equal(train[0]["image"], SyntheticParts(11, 48, "train", seed=7)[0]["image"])

    def test_bad_split(self):
        with pytest.raises(ValueError, match="'validation'"):
            build(DataConfig(), "validation", train=False)


class TestWriteFolder:
    def test_round_trip(self, tmp_path):
        counts = write_folder(tmp_path / "out", 6, image_size=32, seed=2, test_fraction=0.34, progress=False)
        assert counts == {"train": 4, "test": 2, "images": 6}
        root = tmp_path / "out"
        train = (root / "train.txt").read_text().split()
        test = (root / "test.txt").read_text().split()
        assert train == [f"synth_train_{i:06d}.png" for i in range(4)]
        assert test == [f"synth_test_{i:06d}.png" for i in range(2)]
        assert json.loads((root / "part_names.json").read_text()) == part_names_for(4)
        kp_file = json.loads((root / "keypoints.json").read_text())
        assert kp_file["names"] == keypoint_names_for(4)
        assert sorted(kp_file["keypoints"]) == sorted(train + test)
        for split, names in (("train", train), ("test", test)):
            ds = SyntheticParts(len(names), 32, split=split, seed=2)
            for i, name in enumerate(names):
                sample = ds[i]
                image = np.asarray(Image.open(root / "images" / name))
                assert image.shape == (32, 32, 3) and image.dtype == np.uint8
                expected = np.round(sample["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
                np.testing.assert_array_equal(image, expected)
                mask = np.asarray(Image.open(root / "masks" / name))
                np.testing.assert_array_equal(mask, sample["fg_mask"][0].numpy().astype(np.uint8) * 255)
                parts = np.asarray(Image.open(root / "parts" / name))
                np.testing.assert_array_equal(parts, sample["parts"].numpy().astype(np.uint8))
                np.testing.assert_allclose(np.array(kp_file["keypoints"][name]), sample["keypoints"].numpy())

    def test_bad_arguments(self, tmp_path):
        with pytest.raises(ValueError, match="n must be"):
            write_folder(tmp_path, 0, progress=False)
        with pytest.raises(ValueError, match="test_fraction"):
            write_folder(tmp_path, 3, test_fraction=1.5, progress=False)


def _background_saturated_fraction(sample: dict) -> float:
    """Share of background pixels that are strongly saturated and bright (HSV s > 0.8 and v > 0.8)."""
    rgb = sample["image"].transpose(1, 2, 0)  # (S, S, 3)
    hi, lo = rgb.max(-1), rgb.min(-1)
    sat = (hi - lo) / np.maximum(hi, 1e-6)
    background = sample["parts"] == 0
    return float(((sat > 0.8) & (hi > 0.8) & background).sum() / background.sum())


def _background_gradient(sample: dict) -> float:
    """Mean absolute horizontal + vertical difference of the image over background pixel pairs."""
    img = sample["image"]  # (3, S, S)
    bg = sample["parts"] == 0
    dx = np.abs(np.diff(img, axis=2)).sum(0)[bg[:, 1:] & bg[:, :-1]]
    dy = np.abs(np.diff(img, axis=1)).sum(0)[bg[1:] & bg[:-1]]
    return float(np.concatenate([dx, dy]).mean())


@pytest.fixture(scope="module")
def variants():
    """40 test samples at 64 px of the default set and of each stress variant (same seed and indices)."""
    out = {}
    for name in ("default", "small", "salient", "clutter", "all"):
        options = stress_options([] if name == "default" else [name])
        out[name] = [generate_sample(0, "test", i, 64, 4, options) for i in range(40)]
    return out


class TestStressVariants:
    def test_default_options_are_the_builtin_set(self):
        for index in range(5):
            a = generate_sample(3, "train", index, 48)
            b = generate_sample(3, "train", index, 48, 4, SceneOptions())
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
        assert stress_options([]) == SceneOptions() and SceneOptions().is_default

    @pytest.mark.parametrize("name", ["salient", "clutter"])
    def test_background_variants_keep_the_creature(self, variants, name):
        # drawn from a second stream and behind the creature: the labels and keypoints are the default's
        for base, stressed in zip(variants["default"], variants[name], strict=True):
            np.testing.assert_array_equal(base["parts"], stressed["parts"])
            np.testing.assert_array_equal(base["keypoints"], stressed["keypoints"])
            assert not np.array_equal(base["image"], stressed["image"])

    def test_small_objects(self, variants):
        lo, hi = STRESS_PRESETS["small"]["object_scale"]
        fg_default = np.mean([s["fg_mask"].mean() for s in variants["default"]])
        fg_small = np.array([s["fg_mask"].mean() for s in variants["small"]])
        assert fg_small.mean() < 0.5 * fg_default
        for sample in variants["small"]:
            x0, y0, x1, y1 = sample["bbox"]
            assert max(x1 - x0, y1 - y0) <= hi * 64 + 2  # the posed extent bounds the pixel box
            assert sample["parts"].max() >= 1
        # the box covers about 5-40 % of the frame
        areas = np.array(
            [(s["bbox"][2] - s["bbox"][0]) * (s["bbox"][3] - s["bbox"][1]) for s in variants["small"]]
        )
        assert 0.03 < np.percentile(areas / 64**2, 10) and np.percentile(areas / 64**2, 90) < 0.45
        assert lo < hi

    def test_salient_distractors(self, variants):
        default = np.array([_background_saturated_fraction(s) for s in variants["default"]])
        salient = np.array([_background_saturated_fraction(s) for s in variants["salient"]])
        assert default.mean() < 0.002
        assert salient.mean() > 0.02 and (salient > default).mean() > 0.8

    def test_clutter_textures_the_background(self, variants):
        default = np.array([_background_gradient(s) for s in variants["default"]])
        clutter = np.array([_background_gradient(s) for s in variants["clutter"]])
        assert (clutter > default).all() and clutter.mean() > 2 * default.mean()

    def test_all_combines_everything(self, variants):
        for small, combined in zip(variants["small"], variants["all"], strict=True):
            np.testing.assert_array_equal(small["parts"], combined["parts"])
        assert stress_options(["all"]) == SceneOptions(object_scale=(0.25, 0.7), salient=(1, 4), clutter=True)

    def test_object_scale_override_and_bad_options(self):
        assert stress_options(["small"], object_scale=(0.1, 0.2)).object_scale == (0.1, 0.2)
        with pytest.raises(ValueError, match="unknown stress variant 'tiny'"):
            stress_options(["tiny"])
        with pytest.raises(ValueError, match="object_scale"):
            SceneOptions(object_scale=(0.5, 0.2))
        with pytest.raises(ValueError, match="salient"):
            SceneOptions(salient=(3, 1))

    def test_write_folder_records_the_variant(self, tmp_path):
        options = stress_options(["small", "clutter"])
        write_folder(
            tmp_path / "out", 3, image_size=32, seed=4, test_fraction=0.34, progress=False, options=options
        )
        record = json.loads((tmp_path / "out" / "synthetic.json").read_text())
        assert (
            record["object_scale"] == [0.25, 0.7]
            and record["clutter"] is True
            and record["salient"] == [0, 0]
        )
        name = sample_name("train", 1)
        expected = generate_sample(4, "train", 1, 32, 4, options)["parts"]
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "parts" / name)), expected)
        write_folder(tmp_path / "plain", 2, image_size=32, progress=False, options=SceneOptions())
        assert not (tmp_path / "plain" / "synthetic.json").exists()

    def test_dataset_takes_options(self):
        options = stress_options(["salient"])
        ds = SyntheticParts(2, 32, split="test", seed=1, options=options)
        expected = generate_sample(1, "test", 1, 32, 4, options)["image"]
        np.testing.assert_array_equal(ds[1]["image"].numpy(), expected)
