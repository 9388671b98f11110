import copy
import json
from pathlib import Path

import pytest
import torch

from partdisco.api import resolve_train_config
from partdisco.config import ConfigError
from partdisco.engine.checkpoint import latest_checkpoint, load_checkpoint, step_checkpoints
from partdisco.engine.train import TrainingDivergedError, fit
from partdisco.engine.train import setup as train_mod  # builds the Objective
from partdisco.engine.train.schedule import lr_factor
from partdisco.models import create_segmenter, load_segmenter

pytestmark = pytest.mark.slow


def test_end_to_end_run_folder(tiny_overrides, tmp_path):
    cfg = resolve_train_config(
        [*tiny_overrides, "train.steps=4", "train.checkpoint_every=2", "train.eval_every=2"]
    )
    run = fit(cfg)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/total", "train/eqv", "train/lr", "eval/px_fg_nmi"} <= scalars
    assert [e.step for e in events.Scalars("eval/px_fg_nmi")] == [2, 4]  # every 2 steps and at the end
    assert "parts/test" in events.Tags()["images"]
    for name in ("config.yaml", "model.pt", "metrics.json", "parts.png", "train.log"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [s for s, _ in step_checkpoints(run)] == [2, 4]
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("kp_fg_nmi", "kp_fg_ari", "px_fg_nmi", "px_fg_ari", "px_nmi", "miou", "baseline_xy_kmeans"):
        assert key in metrics, key
    assert 0.0 <= metrics["px_fg_nmi"] <= 100.0 and metrics["images"] == 8
    # the synthetic preset is the built-in check of mask-free training: the learnt foreground is scored
    assert 0.0 <= metrics["fg_iou"] <= 100.0 and "px_nmi_predbg" in metrics
    assert "fg_iou" in (run / "train.log").read_text()  # in the final metrics table
    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt["step"] == 4 and ckpt["config"]["model"]["num_parts"] == 4
    model = load_segmenter(run / "model.pt")
    assert model.num_parts == 4 and not model.training
    # fit hands the logger back: a later message of the same session does not land in this run's train.log
    import logging

    before = (run / "train.log").read_text()
    assert "finished 4 steps" in before
    logging.getLogger("partdisco.segment").warning("a message after the run")
    assert (run / "train.log").read_text() == before
    assert not [h for h in logging.getLogger("partdisco").handlers if getattr(h, "_partdisco", False)]


def _state(path):
    return load_checkpoint(path)["model"]


def test_kill_and_resume_equals_uninterrupted(tiny_overrides, tmp_path):
    common = [o for o in tiny_overrides if not o.startswith("out=")] + [
        "train.steps=6",
        "train.checkpoint_every=3",
    ]
    full = fit(resolve_train_config([*common, f"out={tmp_path / 'full'}"]))
    # "kill" after 4 steps: the last checkpoint is step 3, step 4 is lost
    part = fit(resolve_train_config([*common, f"out={tmp_path / 'part'}"]), stop_after=4)
    assert latest_checkpoint(part).name == "step_0000003.pt"
    resumed = fit(resolve_train_config([f"resume={part}", "log.progress=false"]))
    assert resumed == part
    a, b = _state(full / "model.pt"), _state(part / "model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_checkpoint(part / "model.pt")["step"] == 6


def test_resume_can_extend_steps(tiny_overrides):
    run = fit(resolve_train_config([*tiny_overrides, "train.steps=2", "train.checkpoint_every=2"]))
    cfg = resolve_train_config([f"resume={run}", "train.steps=3"])
    assert cfg.train.steps == 3 and cfg.model.arch == "resnet18"
    fit(cfg)
    assert load_checkpoint(run / "model.pt")["step"] == 3


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        resolve_train_config([f"resume={tmp_path / 'nope'}"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        resolve_train_config([f"resume={tmp_path / 'empty'}"])


def test_nan_stops_with_step_and_keeps_last_checkpoint(tiny_overrides, monkeypatch):
    real = train_mod.Objective.__call__
    calls = {"n": 0}

    def poisoned(self, **kw):
        terms = real(self, **kw)
        calls["n"] += 1
        if calls["n"] >= 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(train_mod.Objective, "__call__", poisoned)
    cfg = resolve_train_config([*tiny_overrides, "train.steps=6", "train.checkpoint_every=2"])
    with pytest.raises(TrainingDivergedError, match=r"non-finite loss at step 3 .*step_0000002.pt"):
        fit(cfg)
    run = cfg.out
    assert [s for s, _ in step_checkpoints(run)] == [2]
    assert torch.isfinite(
        torch.stack([v.float().sum() for v in _state(latest_checkpoint(run)).values()])
    ).all()


def test_batch_size_two_and_background_channel(tiny_overrides):
    # a background channel trained from the masks (the synthetic preset itself trains mask-free)
    overrides = [*tiny_overrides, "train.steps=2", "model.background_channel=true", "data.masks=auto"]
    run = fit(resolve_train_config(overrides))
    assert load_segmenter(run / "model.pt").background_channel
    log = (run / "train.log").read_text()
    assert " bg=" in log and "fg_border" not in log  # the mask's term, not the mask-free priors


def test_lr_schedule_poly():
    cfg = resolve_train_config(["train.steps=10"])
    assert lr_factor(0, cfg.optim, 10) == 1.0
    assert lr_factor(5, cfg.optim, 10) == pytest.approx(0.5**cfg.optim.power)
    assert lr_factor(10, cfg.optim, 10) == 0.0


def test_bf16_channels_last_smoke(tiny_overrides):
    cfg = resolve_train_config(
        [
            *tiny_overrides,
            "train.steps=2",
            "train.precision=bf16",
            "train.channels_last=true",
            "eval.baseline=false",
        ]
    )
    run = fit(cfg)
    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


def test_fp16_on_cpu_is_a_clear_error(tiny_overrides):
    cfg = resolve_train_config([*tiny_overrides, "train.steps=1", "train.precision=fp16", "device=cpu"])
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        fit(cfg)


def test_wandb_without_package_is_a_clear_error(tiny_overrides, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    cfg = resolve_train_config([*tiny_overrides, "train.steps=1", "log.wandb=true"])
    # a ConfigError (one line from the CLI), raised before the run folder is made
    with pytest.raises(ConfigError, match=r"pip install 'partdisco\[wandb\]'"):
        fit(cfg)
    assert not Path(cfg.out).exists()


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_fused_optimiser_updates_as_the_per_tensor_loop(name):
    """make_optimizer uses the fused kernel on the CPU (issue #24): SGD bit for bit, AdamW to rounding."""
    from partdisco.config import OptimConfig
    from partdisco.engine.train import make_optimizer

    torch.manual_seed(0)
    cfg = OptimConfig(name=name)
    model = create_segmenter("resnet18", num_parts=3)
    twin = copy.deepcopy(model)
    fused = make_optimizer(model, cfg)
    assert all(group["fused"] for group in fused.param_groups)
    loop_cls = torch.optim.SGD if name == "sgd" else torch.optim.AdamW
    groups = twin.param_groups(cfg.lr, cfg.lr * cfg.head_lr_mult)
    loop = loop_cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        for group in loop.param_groups:
            group["momentum"] = cfg.momentum
    for step in range(3):
        for a, b in zip(model.parameters(), twin.parameters()):
            grad = torch.randn(a.shape, generator=torch.Generator().manual_seed(step))
            a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        loop.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        if name == "sgd":
            assert torch.equal(a, b)
        else:  # the fused AdamW rounds differently (an ulp)
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
