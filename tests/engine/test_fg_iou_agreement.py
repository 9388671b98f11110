"""The mask-free foreground IoU that ``eval`` / training print equals ``segment`` + score_segment (issue #21).

A tiny folder data set with masks (photos of different sizes and aspect ratios, objects off centre) is
scored four ways: ``evaluate`` (the default protocol, as the end of training prints it), ``partdisco eval
eval.full_images=predicted``, and ``partdisco segment`` on the test photos scored by
``benchmarks/score_segment.py``; all must give the same ``fg_iou`` (pooled) and ``fg_iou_mean`` (per image).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from partdisco.config import DataConfig, EvalConfig
from partdisco.data import folder
from partdisco.engine.evaluate import evaluate, evaluate_full_images
from partdisco.engine.segment import segment_files
from partdisco.models.segmenter import InferenceDefaults

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "score_segment.py"
SIZE, PADDING = 48, 0.05


def _score_segment():
    spec = importlib.util.spec_from_file_location("score_segment", _BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["score_segment"] = module
    spec.loader.exec_module(module)
    return module


class SaturationForeground(nn.Module):
    """Background channel from 4 x 4 pooled saturation (a crude, blocky foreground), two colour parts."""

    num_parts = 2
    arch = "saturation"
    background_channel = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))
        self.inference_defaults = InferenceDefaults(SIZE, PADDING)  # as a loaded checkpoint carries them

    def preprocess(self, image01: torch.Tensor) -> torch.Tensor:
        return image01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 4)  # (B, 3, h, w)
        sat = pooled.amax(1, keepdim=True) - pooled.amin(1, keepdim=True)  # (B, 1, h, w)
        red_vs_blue = pooled[:, :1] - pooled[:, 2:3]  # (B, 1, h, w)
        parts = torch.cat([red_vs_blue, -red_vs_blue], 1) * self.scale  # (B, 2, h, w)
        bg = self.scale * (0.25 - sat) * 4 + parts.amax(1, keepdim=True)
        return torch.cat([bg, parts], 1)


def _write_folder(root: Path) -> list[str]:
    """Six photos (3 train, 3 test) of a red/blue object with a bright distractor, masks of the object."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    shapes = [(60, 90), (96, 64), (72, 72), (50, 110), (80, 60), (64, 100)]
    names = []
    for i, (h, w) in enumerate(shapes):
        image = (120 + rng.normal(0, 8, (h, w, 3))).clip(0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        top, left = int(rng.integers(2, h // 3)), int(rng.integers(2, w // 3))
        bh, bw = h // 3, w // 3
        mask[top : top + bh, left : left + bw] = 255
        image[top : top + bh, left : left + bw // 2] = (220, 50, 40)
        image[top : top + bh, left + bw // 2 : left + bw] = (40, 60, 220)
        image[h - 8 : h - 2, w - 10 : w - 2] = (230, 220, 30)  # not in the mask: a false foreground
        name = f"photo{i}.png"
        Image.fromarray(image).save(root / "images" / name)
        Image.fromarray(mask).save(root / "masks" / name)
        names.append(name)
    (root / "train.txt").write_text("\n".join(names[:3]) + "\n")
    (root / "test.txt").write_text("\n".join(names[3:]) + "\n")
    return names[3:]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("agree") / "data"
    return root, _write_folder(root)


def test_eval_and_segment_report_the_same_fg_iou(photos: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, test_names = photos
    model = SaturationForeground().eval()
    test_set = folder.build(DataConfig(name="folder", root=str(root), image_size=SIZE), "test", train=False)
    cfg = EvalConfig(baseline=False, batch_size=2)

    default = evaluate(model, test_set, cfg, torch.device("cpu"), size=SIZE, padding=PADDING)
    by_model = evaluate(model, test_set, cfg, torch.device("cpu"))  # size / padding from the model
    full = evaluate_full_images(model, test_set, cfg, size=SIZE, padding=PADDING, mode="predicted")
    segment_files(model, [root / "images" / n for n in test_names], tmp_path / "seg", progress=False)
    scored = _score_segment().score(root, tmp_path / "seg")["prediction"]

    assert default["fg_iou_images"] == full["fg_iou_images"] == 3
    for key in ("fg_iou", "fg_iou_mean"):
        assert 0.0 < scored[key] < 100.0
        assert default[key] == pytest.approx(scored[key], abs=1e-6), key
        assert by_model[key] == pytest.approx(scored[key], abs=1e-6), key
        assert full[key] == pytest.approx(scored[key], abs=1e-6), key
    # the crops around the masks' boxes hide the distractor and most background: not the photos' number
    assert abs(default["fg_iou_crops"] - default["fg_iou"]) > 2.0, default
    assert "fg_iou_crops" in json.dumps(default["protocol"])


def test_fg_iou_needs_whole_images(photos: tuple[Path, list[str]]) -> None:
    """A data set without ``whole_image`` reports the crops' IoU only, under its own name."""
    root, _ = photos

    class CropsOnly(torch.utils.data.Dataset):
        def __init__(self, inner: folder.FolderDataset) -> None:
            self.inner = inner
            self.has_masks, self.part_names, self.full_labels = True, None, None
            self.full_metrics_suffix = None

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, i: int) -> dict:
            return self.inner[i]

    test_set = folder.build(DataConfig(name="folder", root=str(root), image_size=SIZE), "test", train=False)
    out = evaluate(SaturationForeground().eval(), CropsOnly(test_set), EvalConfig(baseline=False), "cpu")
    assert "fg_iou" not in out and 0.0 < out["fg_iou_crops"] <= 100.0


def _whole_image_scores(root: str) -> dict:
    from partdisco.engine.evaluate import whole_image_fg_iou

    torch.set_num_threads(1)
    test_set = folder.build(DataConfig(name="folder", root=root, image_size=SIZE), "test", train=False)
    model = SaturationForeground().eval()
    return whole_image_fg_iou(model, test_set, size=SIZE, padding=PADDING, fg_refine=(0.0625, 1e-3))


def _worker(rank: int, world: int, init_file: str, root: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        Path(out, f"rank{rank}.json").write_text(json.dumps(_whole_image_scores(root)))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_whole_image_fg_iou_with_two_ranks_equals_one_process(
    photos: tuple[Path, list[str]], tmp_path: Path
) -> None:
    import torch.multiprocessing as mp

    root = str(photos[0])
    single = _whole_image_scores(root)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), root, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["fg_iou_images"] == single["fg_iou_images"] == 3
        for key in ("fg_iou", "fg_iou_mean"):
            assert got[key] == pytest.approx(single[key], abs=1e-9), (rank, key)
