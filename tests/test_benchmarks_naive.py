"""The benchmark baseline (benchmarks/naive_reference.py) computes what our step computes."""

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from partdisco.config import LossConfig, OptimConfig
from partdisco.engine.train import (
    Learner,
    StepInputs,
    draw_step,
    make_optimizer,
    set_train_mode,
    step_generator,
    train_step,
)
from partdisco.engine.train.precision import make_scaler
from partdisco.geometry.warps import sample_warp_params, warp_grid
from partdisco.imaging.color import apply_color_jitter, rgb_to_lab, sample_jitter_params
from partdisco.losses import (
    Objective,
    contrastive_infonce,
    equivariance_kl,
    sample_positive_images,
    within_part_variance,
)
from partdisco.models import build_feature_extractor, create_segmenter

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "naive_reference.py"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _PATH.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


naive = _load("naive_reference")
bench = _load("bench_step")


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors gain nothing from a second thread, and OpenMP spinning on a shared 2-core machine makes
    # these steps 5x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _binary_masks(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, S, S) {0, 1} discs of random centre and radius (the reference's masks are binary)."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    centre = size * (0.3 + 0.4 * torch.rand(batch, 2, generator=generator))
    radius = size * (0.2 + 0.15 * torch.rand(batch, generator=generator))
    d2 = (xs - centre[:, 0, None, None]) ** 2 + (ys - centre[:, 1, None, None]) ** 2
    return (d2 < radius[:, None, None] ** 2).float().unsqueeze(1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_naive_step_equals_train_step(monkeypatch):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    B, K, S = 3, 4, 32
    image = torch.rand(B, 3, S, S, generator=gen)
    mask = _binary_masks(B, S, gen)
    cfg = LossConfig(jitter_prob=1.0, grayscale_prob=0.3, tps_sigma=0.05)
    ours_model = create_segmenter("resnet18", num_parts=K)
    naive_models = [copy.deepcopy(ours_model), copy.deepcopy(ours_model)]
    features_net = build_feature_extractor("texture", None)
    for model in (ours_model, *naive_models):
        set_train_mode(model, freeze_bn=False)
    inputs = StepInputs(image=image, fg_mask=mask)

    def ours_step(model):
        learner = Learner(
            model=model,
            features_net=features_net,
            objective=Objective(cfg),
            optimizer=make_optimizer(model, OptimConfig()),
            scaler=make_scaler(torch.device("cpu"), "fp32"),
        )
        return train_step(learner, inputs, draw_step(1234, 7, cfg, B))

    ours = ours_step(ours_model)

    def naive_step(model):
        draws = naive.draw_step_randomness(B, K, step_generator(1234, 7), cfg)
        return naive.naive_reference_step(
            model, features_net, inputs, make_optimizer(model, OptimConfig()), draws, cfg
        )

    theirs = naive_step(naive_models[0])
    assert set(theirs) == set(ours)
    # L_e and the gradient norm get looser bounds: the naive per-sample float32 TPS solve is ~1e-6
    # (normalised) off partdisco's float64-solved grid, and a random network amplifies that into ~1e-4 of
    # L_e and ~1e-3 of the gradient norm; with the same grid (below) everything agrees to float precision
    tolerance = {
        "eqv": 5e-4,
        "feat": 1e-4,
        "color": 1e-4,
        "contrastive": 1e-4,
        "total": 1e-4,
        "grad_norm": 5e-3,
    }
    for key, tol in tolerance.items():
        assert torch.isfinite(ours[key]) and ours[key] > 0, key
        assert _rel(theirs[key], ours[key]) < tol, (key, theirs[key].item(), ours[key].item())

    # Given the same grid, the two steps compute the same thing; compared where float32 rounding is not
    # amplified. The network inputs (jittered view 1; view 2 normalised, then warped) and the gradient of the
    # loss with respect to each forward pass's logits determine every parameter gradient (the backward pass
    # through the network is the same module code), so they are compared tightly; measured: inputs ~1e-7,
    # logit gradients ~1.5e-5 (the fused and the naive float32 loss formulations round differently).
    monkeypatch.setattr(naive, "tps_grid_per_sample", lambda warp, size, device: warp_grid(warp, size))
    ours_model = copy.deepcopy(naive_models[1])  # fresh copies of the same initial weights
    mine, other = _capture(ours_model), _capture(naive_models[1])
    ours = ours_step(ours_model)
    theirs = naive_step(naive_models[1])
    for key in tolerance:
        assert _rel(theirs[key], ours[key]) < 1e-5, key
    assert len(mine["input"]) == len(other["input"]) == 2
    for a, b in zip(other["input"], mine["input"]):
        assert _rel(a, b) < 1e-5
    for a, b in zip(other["output"], mine["output"]):
        assert _rel(a.grad, b.grad) < 1e-4
    # The parameter gradients themselves: the head's agree like the logit gradients; the trunk's do not get a
    # tight elementwise bound. This random, untrained ResNet with training-mode BatchNorm on a 3-image batch
    # amplifies the ~1e-5 float32 difference of the logit gradients ~200x by conv1 (2.5e-3 measured on one
    # CPU, < 1e-4 on another: ATen/oneDNN accumulate in a CPU-dependent order); only an error in the
    # comparison of the inputs or logit gradients above could make them differ by more than that.
    for (name, p), q in zip(ours_model.named_parameters(), naive_models[1].parameters()):
        assert _rel(q.grad, p.grad) < (1e-4 if name.startswith("layer5.") else 2e-2), name


def _capture(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """Record every forward pass's input and output (with its gradient, after backward) of ``model``."""
    seen: dict[str, list[torch.Tensor]] = {"input": [], "output": []}

    def hook(module, args, output):
        seen["input"].append(args[0].detach().clone())
        output.retain_grad()
        seen["output"].append(output)

    model.register_forward_hook(hook)
    return seen


def test_naive_step_rejects_background_channel():
    model = create_segmenter("resnet18", num_parts=2, background_channel=True)
    cfg = LossConfig()
    draws = naive.draw_step_randomness(2, 2, torch.Generator().manual_seed(0), cfg)
    inputs = StepInputs(image=torch.rand(2, 3, 16, 16), fg_mask=torch.ones(2, 1, 16, 16))
    with pytest.raises(ValueError, match="background channel"):
        naive.naive_reference_step(
            model,
            build_feature_extractor("texture", None),
            inputs,
            make_optimizer(model, OptimConfig()),
            draws,
            cfg,
        )


def test_color_jitter_per_image_equals_batched():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, 12, 10, generator=gen)
    images[0] = 0.5  # a flat grey image (hue undefined)
    params = sample_jitter_params(8, gen, prob=0.75, grayscale_prob=0.4, hue=0.5)
    assert params.apply.any() and (~params.apply).any() and params.gray.any()
    out = naive.color_jitter_per_image(images, params)
    assert out.shape == images.shape
    assert (out - apply_color_jitter(images, params)).abs().max() < 1e-5


def test_lab_per_image_equals_batched():
    images = torch.rand(3, 3, 5, 7, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(naive.lab_per_image(images), rgb_to_lab(images), atol=1e-4)


def test_tps_grid_per_sample_equals_warp_grid():
    warp = sample_warp_params(4, torch.Generator().manual_seed(4), tps_sigma=0.08)
    grid = naive.tps_grid_per_sample(warp, (9, 13))
    assert grid.shape == (4, 9, 13, 2)
    assert (grid - warp_grid(warp, (9, 13))).abs().max() < 1e-4
    assert torch.allclose(naive.source_control_points(warp, 2), warp.source_control_points()[2], atol=1e-6)


def test_consistency_loss_equals_within_part_variance():
    gen = torch.Generator().manual_seed(5)
    probs = torch.softmax(3 * torch.randn(3, 4, 10, 10, generator=gen), dim=1)
    mask = _binary_masks(3, 10, gen)
    features = torch.randn(3, 6, 10, 10, generator=gen) * mask
    per_image = sum(
        naive.consistency_loss((probs * mask)[b : b + 1], features[b : b + 1], mask[b : b + 1])
        for b in range(3)
    )
    ours = within_part_variance(probs, mask, features)  # (B,)
    assert _rel(per_image, ours.sum()) < 1e-5
    assert _rel(naive.consistency_loss(probs * mask, features, mask), ours.mean()) < 1e-5


def test_contrastive_loop_equals_vectorised():
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(5, 4, 8, generator=gen)
    positives = sample_positive_images(5, 4, gen)
    loop = naive.contrastive_loss_loop(z, positives, 0.19)
    assert _rel(loop, contrastive_infonce(z, positives, 0.19)) < 1e-5


def test_equivariance_loss_equals_equivariance_kl():
    gen = torch.Generator().manual_seed(7)
    pred, target = torch.randn(2, 2, 4, 6, 6, generator=gen).unbind(0)
    warped_fg = torch.rand(2, 1, 6, 6, generator=gen)
    ours = equivariance_kl(pred, target, warped_fg)
    assert ours > 0
    assert _rel(naive.equivariance_loss(pred, target, warped_fg), ours) < 1e-5


def test_train_table_reports_speedups_and_targets():
    args = bench.parse_args(["--configs", "naive,ours_fp32,ours_fast"])
    cpu = {"peak_rss_mib": 1000.0, "setup_rss_mib": 400.0}
    results = {
        "naive": {"seconds": [2.0, 2.0], **cpu},
        "ours_fp32": {"seconds": [0.5, 0.5], **cpu},
        "ours_fast": {"seconds": [1.0], **cpu},
    }
    text = "\n".join(bench.train_table(results, args))
    assert (
        "| naive | reference structure" in text
        and "| 2000.0 (2000.0) | 0.500 | 3.00 | 1000 MiB RSS (+600" in text
    )
    assert "| 500.0 (500.0) | 2.000 | 12.00 |" in text and "| 4.00x |" in text
    assert "- ours_fp32: 4.00x naive (target 2x: reached)" in text
    assert "- ours_fast: 2.00x naive (target 4x: not reached)" in text
    failed = bench.train_table({"naive": {"error": "exit code 1: MemoryError"}}, args)
    assert "failed: exit code 1: MemoryError" in failed[-1]


def test_bench_step_smoke(tmp_path, capsys):
    out = tmp_path / "BENCH.md"
    argv = ["--size", "32", "--batch", "2", "--arch", "resnet18", "--features", "texture", "--steps", "1"]
    argv += ["--warmup", "0", "--threads", "1", "--configs", "naive,ours_fp32", "--no-isolate"]
    argv += ["--inference", "--eval", "--eval-images", "2", "--eval-batch", "2", "--write", str(out)]
    bench.main(argv)
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "## Training step, inference and evaluation on cpu" in text
    assert "| naive |" in text and "| ours_fp32 |" in text and "- ours_fp32: " in text
    assert "| fp32 | 1 |" in text and "| fp32 | 16 |" in text and "| bf16 + channels-last | 16 |" in text
    assert "| 2 | " in text.split("Evaluation:")[1]
    assert "failed" not in text
    assert "ours_fp32" in capsys.readouterr().out
    bench.main([*argv, "--configs", ""])  # appends a second section
    assert out.read_text().count("## Training step") == 2
