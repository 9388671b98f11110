"""Colour-guided refinement of the predicted foreground (engine/inference/refine.py), used by segment/eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from partdisco.config import ConfigError, DataConfig, EvalConfig, load_config
from partdisco.data import folder
from partdisco.data.synthetic import write_folder
from partdisco.engine.evaluate import evaluate_full_images
from partdisco.engine.inference import DEFAULT_FG_REFINE, inference_fg_refine, segment_images
from partdisco.engine.inference.refine import box_mean, guided_filter, refine_probs, refine_radius
from partdisco.engine.segment import SegmentOptions, segment_files
from partdisco.models.checkpoint import trained_fg_refine
from partdisco.models.segmenter import InferenceDefaults


class BlockyForeground(nn.Module):
    """Background channel from 8 x 8 pooled saturation (stride-8 blocky edges), one part per colour."""

    num_parts = 2
    arch = "blocky"
    background_channel = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def preprocess(self, image01: torch.Tensor) -> torch.Tensor:
        return image01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 8)  # (B, 3, h, w)
        sat = pooled.amax(1, keepdim=True) - pooled.amin(1, keepdim=True)  # (B, 1, h, w)
        red_vs_blue = pooled[:, :1] - pooled[:, 2:3]  # (B, 1, h, w)
        parts = torch.cat([red_vs_blue, -red_vs_blue], 1) * self.scale  # (B, 2, h, w)
        bg = self.scale * (0.3 - sat) * 4 + parts.amax(1, keepdim=True)
        return torch.cat([bg, parts], 1)


def _scene(size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A red/blue object off the 8-px grid on a grey textured background, and its mask."""
    rng = np.random.default_rng(0)
    image = (128 + rng.normal(0, 6, (size, size, 3))).clip(0, 255).astype(np.uint8)
    mask = np.zeros((size, size), bool)
    mask[29:67, 21:43] = True  # red
    mask[37:59, 43:75] = True  # blue
    image[29:67, 21:43] = (230, 40, 40)
    image[37:59, 43:75] = (40, 60, 230)
    return image, mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_box_mean_is_the_clipped_window_mean() -> None:
    x = torch.rand(2, 3, 13, 17, dtype=torch.float64)
    for r in (1, 2, 5):
        want = F.avg_pool2d(x, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
        torch.testing.assert_close(box_mean(x, r), want)
    # a window larger than the image averages the whole image
    torch.testing.assert_close(box_mean(x, 40), x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    assert box_mean(x, 0) is x


def test_box_mean_in_float32_stays_close_to_float64_on_large_images() -> None:
    """Centred float32 cumulative sums (issue #24: 4x less memory traffic than float64) lose little."""
    torch.manual_seed(0)
    x = torch.rand(1, 2, 1024, 768)
    x[..., :512, :] += 5.0  # an offset half: uncentred float32 sums would drift
    for r in (3, 61):
        want = box_mean(x.double(), r)
        assert (box_mean(x, r).double() - want).abs().max() < 5e-6 * want.abs().max()  # relative
    assert box_mean(x, 3).dtype == torch.float32


def test_sym3_solve_is_the_linear_solve() -> None:
    from partdisco.engine.inference.refine import _solve_sym3

    torch.manual_seed(0)
    a = torch.randn(2, 5, 7, 3, 3)
    sym = a @ a.transpose(-1, -2)  # (2, 5, 7, 3, 3) positive semi-definite
    rows, cols = torch.triu_indices(3, 3)
    upper = sym[..., rows, cols].permute(0, 3, 1, 2)  # (2, 6, 5, 7)
    rhs = torch.randn(2, 3, 5, 7)
    want = torch.linalg.solve(sym + 1e-2 * torch.eye(3), rhs.permute(0, 2, 3, 1)[..., None])[..., 0]
    torch.testing.assert_close(_solve_sym3(upper, rhs, 1e-2), want.permute(0, 3, 1, 2), rtol=1e-4, atol=1e-4)


def test_the_fast_guided_filter_follows_the_edges_at_full_resolution() -> None:
    """Fits on the image shrunk 4 times, applied at full resolution: the object's edges stay sharp."""
    image, mask = _scene()
    guide = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    coarse = torch.from_numpy(np.roll(mask, (2, -2), (0, 1))).float()[None, None]
    coarse = F.interpolate(F.avg_pool2d(coarse, 8), size=mask.shape, mode="bilinear")
    radius = refine_radius(96, DEFAULT_FG_REFINE[0])
    exact = guided_filter(guide, coarse, radius, DEFAULT_FG_REFINE[1])[0, 0].numpy() > 0.5
    fast = guided_filter(guide, coarse, radius, DEFAULT_FG_REFINE[1], subsample=4)[0, 0].numpy() > 0.5
    assert _iou(fast, mask) > 0.93 and _iou(fast, exact) > 0.93
    # the fast filter's output is not just the shrunk one upsampled: its edges are the guide's, pixel-exact
    shrunk = F.interpolate(coarse, scale_factor=0.25, mode="area")
    blocky = F.interpolate(shrunk, size=mask.shape, mode="bilinear")[0, 0].numpy() > 0.5
    assert _iou(fast, mask) > _iou(blocky, mask) + 0.05
    assert torch.equal(
        guided_filter(guide, coarse, radius, 1e-3, subsample=1), guided_filter(guide, coarse, radius, 1e-3)
    )
    tiny = guided_filter(guide[..., :3, :5], coarse[..., :3, :5], 2, 1e-3, subsample=8)  # shrinks to 1 x 1
    assert tiny.shape == (1, 1, 3, 5) and torch.isfinite(tiny).all()
    with pytest.raises(ValueError, match="subsample"):
        guided_filter(guide, coarse, radius, 1e-3, subsample=0)


def test_guided_filter_on_a_flat_guide_is_a_double_box_mean() -> None:
    src = torch.rand(1, 1, 20, 20)
    guide = torch.full((1, 3, 20, 20), 0.5)
    out = guided_filter(guide, src, radius=3, eps=1e-3)
    torch.testing.assert_close(out, box_mean(box_mean(src, 3), 3), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="radius"):
        guided_filter(guide, src, radius=0, eps=1e-3)
    with pytest.raises(ValueError, match="expected guide"):
        guided_filter(guide[:, :1], src, radius=2, eps=1e-3)


def test_guided_filter_snaps_a_blurred_shifted_mask_to_the_edges() -> None:
    image, mask = _scene()
    guide = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    coarse = torch.from_numpy(np.roll(mask, (2, -2), (0, 1))).float()[None, None]
    coarse = F.interpolate(F.avg_pool2d(coarse, 8), size=mask.shape, mode="bilinear")  # blocky and blurred
    before = _iou(coarse[0, 0].numpy() > 0.5, mask)
    radius = refine_radius(96, DEFAULT_FG_REFINE[0])
    after = _iou(guided_filter(guide, coarse, radius, DEFAULT_FG_REFINE[1])[0, 0].numpy() > 0.5, mask)
    assert before < 0.85 and after > 0.95


def test_refine_probs_keeps_a_distribution_and_the_part_ranking() -> None:
    image, _ = _scene(32)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    probs = torch.randn(1, 4, 32, 32).softmax(1)
    out = refine_probs(probs, x, 0.1, 1e-3)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 32, 32))
    assert torch.equal(out[:, 1:].argmax(1), probs[:, 1:].argmax(1))
    ratio = out[:, 1:] / out[:, 1:].sum(1, keepdim=True)
    torch.testing.assert_close(ratio, probs[:, 1:] / probs[:, 1:].sum(1, keepdim=True))
    assert refine_probs(probs, x, 0.0, 1e-3) is probs


def test_segment_refines_the_predicted_foreground_only() -> None:
    model = BlockyForeground().eval()
    image, mask = _scene()
    (plain,) = segment_images(model, [image], size=96, crop="none", fg_refine=0.0)
    (refined,) = segment_images(model, [image], size=96, crop="none")  # the default radius
    assert _iou(plain.labels > 0, mask) < 0.85 and _iou(refined.labels > 0, mask) > 0.95
    assert refined.probs is not None
    np.testing.assert_allclose(refined.probs.sum(0), 1.0, atol=1e-5)
    # the two-pass object crop refines both passes
    (crop,) = segment_images(model, [image], size=96, crop="auto")
    (crop_plain,) = segment_images(model, [image], size=96, crop="auto", fg_refine=0.0)
    assert _iou(crop.labels > 0, mask) > _iou(crop_plain.labels > 0, mask) + 0.03
    # with a mask the background is the mask's: nothing to refine, the maps do not depend on the radius
    given = mask.astype(np.float32)
    a = segment_images(model, [image], [given], size=96, fg_refine=0.0)[0]
    b = segment_images(model, [image], [given], size=96)[0]
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.probs, b.probs)
    with pytest.raises(ValueError, match="fg_refine"):
        segment_images(model, [image], size=96, fg_refine=0.7)


def test_refinement_defaults_to_the_checkpoints_setting() -> None:
    model = BlockyForeground()
    assert inference_fg_refine(model) == DEFAULT_FG_REFINE
    assert trained_fg_refine({"config": {"eval": {"fg_refine_radius": 0.0, "fg_refine_eps": 0.01}}}) == (
        0.0,
        0.01,
    )
    assert trained_fg_refine({"config": {"data": {}}}) is None
    model.inference_defaults = InferenceDefaults(fg_refine=(0.0, 0.01))  # eval.fg_refine_radius=0
    assert inference_fg_refine(model) == (0.0, 0.01)
    assert inference_fg_refine(model, 0.05) == (0.05, 0.01)
    image, _ = _scene()
    off = segment_images(model.eval(), [image], size=96, crop="none")[0].labels
    assert np.array_equal(off, segment_images(model, [image], size=96, crop="none", fg_refine=0.0)[0].labels)


def test_api_segment_and_files_use_the_same_refinement(tmp_path: Path) -> None:
    from partdisco.api import segment

    model = BlockyForeground().eval()
    image, mask = _scene()
    labels, _ = segment(model, image, size=96)
    assert np.array_equal(labels, segment_images(model, [image], size=96)[0].labels)
    plain, _ = segment(model, image, size=96, fg_refine=0.0)
    assert _iou(labels > 0, mask) > _iou(plain > 0, mask) + 0.03
    Image.fromarray(image).save(tmp_path / "scene.png")
    summary = segment_files(
        model, [tmp_path / "scene.png"], tmp_path / "out", SegmentOptions(size=96), progress=False
    )
    written = np.asarray(Image.open(tmp_path / "out" / "labels" / "scene.png"))
    assert np.array_equal(written, labels)
    settings = __import__("json").loads(summary.parts_json.read_text())["settings"]
    assert settings["fg_refine"] == list(DEFAULT_FG_REFINE)


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    write_folder(root, 8, image_size=64, test_fraction=0.5, progress=False)
    return root


def test_full_image_eval_scores_the_refined_foreground(synth_folder: Path) -> None:
    model = BlockyForeground().eval()
    test_set = folder.build(DataConfig(name="folder", root=str(synth_folder), image_size=64), "test", False)
    names = list(test_set.files)
    images = [np.asarray(Image.open(synth_folder / "images" / n).convert("RGB")) for n in names]
    masks = [np.asarray(Image.open(synth_folder / "masks" / n)) > 0 for n in names]

    def iou(radius: float) -> float:
        maps = segment_images(model, images, size=64, crop="object", fg_refine=radius)
        inter = sum(int(((m.labels > 0) & g).sum()) for m, g in zip(maps, masks))
        union = sum(int(((m.labels > 0) | g).sum()) for m, g in zip(maps, masks))
        return 100.0 * inter / union

    for radius in (0.0, 0.0625):
        cfg = EvalConfig(fg_refine_radius=radius)
        out = evaluate_full_images(model, test_set, cfg, size=64, padding=0.05, mode="predicted")
        assert out["fg_iou"] == pytest.approx(iou(radius), abs=1e-9)


def test_pipeline_eval_scores_the_refined_foreground(synth_folder: Path) -> None:
    from partdisco.engine.evaluate import evaluate
    from partdisco.geometry.logits import ALIGN_PIXELS

    model = BlockyForeground().eval()
    test_set = folder.build(DataConfig(name="folder", root=str(synth_folder), image_size=64), "test", False)
    for radius in (0.0, 0.0625):
        cfg = EvalConfig(baseline=False, fg_refine_radius=radius)
        reported = evaluate(model, test_set, cfg, torch.device("cpu"))["fg_iou_crops"]
        inter = union = 0
        for i in range(len(test_set)):  # by hand: upsample, softmax, refine, argmax over K + 1
            sample = test_set[i]
            image = sample["image"][None]
            with torch.no_grad():
                logits = F.interpolate(
                    model(image), size=(64, 64), mode="bilinear", align_corners=ALIGN_PIXELS
                )
            probs = refine_probs(logits.softmax(1), image, radius, 1e-3)
            pred, gt = probs.argmax(1)[0] > 0, sample["fg_mask"][0] > 0.5
            inter += int((pred & gt).sum())
            union += int((pred | gt).sum())
        assert reported == pytest.approx(100.0 * inter / union, abs=1e-9)


def test_config_checks_the_refinement_keys() -> None:
    cfg = load_config("synthetic", ["eval.fg_refine_radius=0"])
    assert cfg.eval.fg_refine_radius == 0.0
    with pytest.raises(ConfigError, match="eval.fg_refine_radius"):
        load_config("synthetic", ["eval.fg_refine_radius=0.5"])
    with pytest.raises(ConfigError, match="eval.fg_refine_eps"):
        load_config("synthetic", ["eval.fg_refine_eps=0"])
