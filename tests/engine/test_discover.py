"""Foreground discovery (data.foreground=discover): the object is what recurs across the photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from partdisco.engine.discover import (
    DiscoverySettings,
    discover_foreground,
    discovery_complete,
    fit_linear,
    recurring_classes,
)

OBJECT = (1.0, 0.5, 0.1)  # the recurring object's colour (orange)
DISTRACTORS = [(1.0, 0.0, 0.0), (0.0, 0.9, 0.0), (0.0, 0.0, 1.0)]  # saturated, each in a third of the images


class ColourNetwork:
    """A stand-in for the ImageNet network: class c fires where the pixel has prototype colour c.

    Dense features are the stride-8 mean colour; the first four of 20 "classes" are the object colour and
    the three distractor colours, the other 16 never fire (as most of ImageNet's 1,000 for one photo), so a
    grey background, where nothing fires, has a near-uniform softmax.
    """

    prototypes = torch.tensor([OBJECT, *DISTRACTORS])  # (4, 3)

    def __call__(self, image01: torch.Tensor, with_logits: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        dense = F.avg_pool2d(image01, 8)  # (B, 3, h8, w8)
        dist = ((dense.permute(0, 2, 3, 1)[..., None, :] - self.prototypes) ** 2).sum(-1)  # (B, h8, w8, 4)
        logits = (8.0 * (0.3 - dist).clamp_min(0)).permute(0, 3, 1, 2)  # 0 everywhere but near a prototype
        return dense, torch.cat([logits, torch.zeros(len(dense), 16, *logits.shape[-2:])], dim=1)


def _scene(rng: np.random.Generator, i: int, object_frac: float, distractor: bool, side: int = 96):
    """Grey noise, an orange box of ``object_frac`` of the frame, and (maybe) a bigger saturated disk."""
    img = np.clip(0.5 + 0.05 * rng.standard_normal((side, side, 3)), 0, 1)
    obj = np.zeros((side, side), bool)
    h = w = int(round(side * np.sqrt(object_frac)))
    y0, x0 = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
    if distractor:  # object in one half, a larger saturated disk in the other
        h = w = min(h, side // 2 - 4)
        x0 = int(rng.integers(0, side // 2 - w + 1))
        y0 = int(rng.integers(0, side - h + 1))
        yy, xx = np.mgrid[:side, :side]
        disk = (yy - side / 2) ** 2 + (xx - 3 * side / 4) ** 2 < (side / 4.5) ** 2
        img[disk] = DISTRACTORS[i % 3]
    obj[y0 : y0 + h, x0 : x0 + w] = True
    img[obj] = OBJECT
    return (img * 255).astype(np.uint8), obj


def _folder(
    tmp_path: Path, n: int, object_frac: float, distractor: bool
) -> tuple[list[Path], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir(parents=True)
    paths, masks = [], []
    for i in range(n):
        img, obj = _scene(rng, i, object_frac, distractor)
        path = tmp_path / "images" / f"im{i:02d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
        masks.append(obj)
    return paths, masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _read(mask_dir: Path, path: Path) -> np.ndarray:
    return np.asarray(Image.open(mask_dir / f"{path.stem}.png")) > 0


def test_the_recurring_object_is_foreground_and_the_salient_distractor_is_not(tmp_path):
    paths, objects = _folder(tmp_path, 12, 0.1, distractor=True)
    settings = DiscoverySettings(size=96, classes=1, refine_radius=0.0)
    found = discover_foreground(paths, tmp_path / "fg", settings, network=ColourNetwork(), progress=False)
    assert found.classes == [0]  # the object's class recurs; each distractor's is in a third of the images
    for path, obj in zip(paths, objects):
        mask = _read(found.mask_dir, path)
        img = np.asarray(Image.open(path)).astype(float) / 255
        disk = (np.abs(img - np.array(DISTRACTORS[int(path.stem[2:]) % 3])).sum(-1) < 0.1) & ~obj
        assert _iou(mask, obj) > 0.7, path.name  # a 30-pixel box at stride 8
        assert mask[disk].mean() < 0.05, f"{path.name}: the salient distractor was taken for the object"


def test_an_object_that_fills_most_of_the_frame_is_all_foreground(tmp_path):
    paths, objects = _folder(tmp_path, 8, 0.8, distractor=False)
    settings = DiscoverySettings(size=96, classes=1, refine_radius=0.0)
    found = discover_foreground(paths, tmp_path / "fg", settings, network=ColourNetwork(), progress=False)
    for path, obj in zip(paths, objects):
        assert _iou(_read(found.mask_dir, path), obj) > 0.85, path.name  # no area prior shrinks it
    assert found.fg_fraction > 0.7


def test_the_run_folder_records_what_was_found_and_a_finished_discovery_is_recognised(tmp_path):
    paths, _ = _folder(tmp_path, 6, 0.2, distractor=False)
    out = tmp_path / "fg"
    assert not discovery_complete(out, paths)
    discover_foreground(
        paths, out, DiscoverySettings(size=64, classes=2), network=ColourNetwork(), progress=False
    )
    meta = json.loads((out / "discovery.json").read_text())
    assert meta["images"] == 6 and meta["seeds"]["foreground"] > 0 and meta["seeds"]["background"] > 0
    assert (out / "overview.png").is_file()
    assert discovery_complete(out, paths)
    (out / "masks" / "im03.png").unlink()  # an interrupted discovery is redone
    assert not discovery_complete(out, paths)


def test_recurring_classes_rank_by_summed_probability():
    net = ColourNetwork()
    images = [
        torch.ones(1, 3, 16, 16) * torch.tensor(c).view(1, 3, 1, 1) for c in [OBJECT, OBJECT, DISTRACTORS[0]]
    ]
    classes, share = recurring_classes(net, images, 2)
    assert classes.tolist() == [0, 1] and share[0] > share[1]


def test_no_object_to_single_out_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    path = tmp_path / "images" / "grey.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    with pytest.raises(ValueError, match="single out an object"):
        discover_foreground([path], tmp_path / "fg", network=ColourNetwork(), progress=False)
    with pytest.raises(ValueError, match="no training images"):
        discover_foreground([], tmp_path / "fg", network=ColourNetwork(), progress=False)


def test_fit_linear_separates_two_clouds():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 5, generator=gen) + 2, torch.randn(50, 5, generator=gen) - 2])
    y = torch.cat([torch.zeros(200), torch.ones(50)])  # unbalanced: the weights balance the classes
    mean, std, w, b = fit_linear(x, y)
    pred = torch.sigmoid(((x - mean) / std) @ w + b) > 0.5
    assert (pred.float() == y).float().mean() > 0.98


def test_fit_linear_balance_moves_the_boundary_towards_the_rare_class():
    # overlapping clouds, 1 foreground in 5: balanced weights call more of the overlap foreground
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(400, 3, generator=gen) + 0.5, torch.randn(100, 3, generator=gen) - 0.5])
    y = torch.cat([torch.zeros(400), torch.ones(100)])
    shares = []
    for balance in (0.0, 0.5, 1.0):
        mean, std, w, b = fit_linear(x, y, balance=balance)
        shares.append(float((torch.sigmoid(((x - mean) / std) @ w + b) > 0.5).float().mean()))
    assert shares[0] < 0.15 < shares[1] < shares[2]  # unbalanced: fewer than the 20 % true share
    assert shares[2] > 0.3  # balanced: more than the true share


@pytest.mark.slow
def test_recipe_cpu_discovers_the_foreground_of_a_folder_and_trains_on_it(tmp_path):
    """The real pipeline end to end: the installed EfficientNet-Lite0, masks in RUN/foreground."""
    from partdisco import api

    paths, _ = _folder(tmp_path / "photos", 6, 0.3, distractor=False)
    run = tmp_path / "run"
    overrides = ["data.discover_size=64", "train.steps=1", "train.batch_size=2", "data.image_size=64"]
    api.train(["dataset=folder", f"data.root={tmp_path / 'photos'}", "recipe=cpu", *overrides, f"out={run}"])
    masks = sorted(p.name for p in (run / "foreground" / "masks").iterdir())
    assert masks == [f"{p.stem}.png" for p in paths]
    log = (run / "train.log").read_text()
    assert "foreground discovery on 6 training images" in log and "mask-free training" not in log
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    assert state["config"]["model"]["background_channel"] is True
    assert state["config"]["model"]["arch"] == "efficientnet_lite0"
    assert state["foreground"] == json.loads((run / "foreground" / "classifier.json").read_text())
    from partdisco.engine.inference import segment_images

    model = api.load(run / "model.pt")
    assert model.inference_defaults.foreground is not None
    maps = segment_images(model, [np.asarray(Image.open(paths[0]).convert("RGB"))])
    assert maps[0].background == "discovered" and 0 < (maps[0].labels > 0).mean() < 1


def test_a_run_stopped_during_or_after_discovery_can_be_started_again(tmp_path):
    from partdisco.engine.runfolder import check_new_run_folder

    run = tmp_path / "run"
    (run / "foreground" / "masks").mkdir(parents=True)  # killed before the first checkpoint
    (run / "foreground" / "masks" / "im00.png").write_bytes(b"")
    (run / "train.log").write_text("")
    check_new_run_folder(run)  # a failed start, not "files of the user's": the same command starts again


def test_discover_keys_are_checked_and_reach_the_settings():
    from partdisco.config import ConfigError, load_config

    cfg = load_config("synthetic", ["data.discover_rounds=16", "data.discover_balance=0.5"])
    assert (cfg.data.discover_rounds, cfg.data.discover_balance) == (16, 0.5)
    with pytest.raises(ConfigError, match="data.discover_balance"):
        load_config("synthetic", ["data.discover_balance=1.5"])
    with pytest.raises(ConfigError, match="data.discover_rounds"):
        load_config("synthetic", ["data.discover_rounds=-1"])
