"""Issue #15, points 1-3 and 6: a run folder belongs to one run, resume is honest, only finite models."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from partdisco.api import resolve_train_config
from partdisco.cli import main
from partdisco.config import ConfigError
from partdisco.engine import runfolder
from partdisco.engine.checkpoint import latest_checkpoint, load_checkpoint, step_checkpoints
from partdisco.engine.runfolder import RESUME_MUTABLE, RunFolderBusyError, RunLock, holds_run
from partdisco.engine.train import TrainingDivergedError, fit
from partdisco.engine.train import loop as train_mod  # the loop calls train_step

pytestmark = pytest.mark.slow




def _files(folder):
    """{relative path: bytes} of every file under folder (the lock file excluded)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock" and "tensorboard" not in p.parts and p.name != "train.log"
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_args):
    """A finished 2-step run (checkpoints at 1 and 2, model.pt); tests copy it before changing it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    overrides = [*tiny_args, "eval.baseline=false", "train.steps=2", "train.checkpoint_every=1", f"out={out}"]
    return fit(resolve_train_config(overrides))


@pytest.fixture
def run_copy(finished_run, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(finished_run, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# --------------------------------------------------------------------------------------- 1: ownership


def test_new_run_into_a_run_folder_is_refused_and_changes_nothing(run_copy, tiny_overrides):
    before = _files(run_copy)
    assert holds_run(run_copy) == ["config.yaml", "checkpoints", "model.pt"]
    cfg = resolve_train_config(
        [*[o for o in tiny_overrides if not o.startswith("out=")], "train.steps=3", f"out={run_copy}"]
    )
    with pytest.raises(ConfigError, match=rf"already holds a run .*resume={run_copy}.*out=NEW_FOLDER"):
        fit(cfg)
    assert _files(run_copy) == before


def test_config_of_a_saved_run_does_not_target_its_folder(run_copy, capsys):
    before = _files(run_copy)
    code = main(["train", "--config", str(run_copy / "config.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "already holds a run" in err and "resume=" in err
    assert _files(run_copy) == before


def test_a_second_process_is_kept_out(tmp_path, tiny_overrides):
    run = tmp_path / "run"
    lock = RunLock(run)  # another open file description: flock conflicts like another process
    try:
        with pytest.raises(
            RunFolderBusyError, match=rf"in use by another partdisco process \(pid {os.getpid()}\)"
        ):
            fit(resolve_train_config([*tiny_overrides, "train.steps=1"]))
        assert not holds_run(run)
    finally:
        lock.release()
    RunLock(run).release()  # free once the holder is gone


def test_the_lock_dies_with_a_killed_process(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from partdisco.engine.runfolder import RunLock
        lock = RunLock({str(tmp_path)!r})
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusyError, match=f"pid {child.pid}"):
            RunLock(tmp_path)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    RunLock(tmp_path).release()  # free again: nothing to clean up by hand


# --------------------------------------------------------------------------------------- 2: resume


@pytest.mark.parametrize(
    "override",
    [
        "model.num_parts=8",
        "model.arch=resnet50",
        "seed=7",
        "model.normalization=caffe",
        "train.batch_size=4",
        "optim.name=sgd",
        "loss.lambda_eqv=1.0",
    ],
)
def test_resume_refuses_other_changes_before_touching_files(run_copy, override):
    before = _files(run_copy)
    cfg = resolve_train_config([f"resume={run_copy}", override, "train.steps=3"])
    with pytest.raises(ConfigError, match=rf"cannot change {override.split('=')[0]}: ") as info:
        fit(cfg)
    assert len(str(info.value).splitlines()) == 1
    assert _files(run_copy) == before  # config.yaml too: a plain resume= still resumes the same run


def test_resume_lr_change_takes_effect_and_temp_files_go(run_copy):
    stale = [run_copy / "checkpoints" / ".step_0000003.pt.tmp-4242", run_copy / "config.yaml.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    cfg = resolve_train_config([f"resume={run_copy}", "train.steps=3", "optim.lr=0.003"])
    fit(cfg)
    assert not any(p.exists() for p in stale)
    assert [s for s, _ in step_checkpoints(run_copy)] == [2, 3]
    last = step_checkpoints(run_copy)[-1][1]  # model.pt is weights-only: the optimizer is in checkpoints/
    groups = load_checkpoint(last)["optimizer"]["param_groups"]
    assert [g["base_lr"] for g in groups] == [0.003, pytest.approx(0.003 * cfg.optim.head_lr_mult)]
    saved = (run_copy / "config.yaml").read_text()
    assert "lr: 0.003" in saved


def test_resume_allow_list_is_documented():
    doc = (Path(__file__).parents[2] / "docs" / "RELIABILITY.md").read_text()
    for key in RESUME_MUTABLE:
        assert f"`{key}`" in doc, key


def test_resume_below_the_checkpoint_step_is_refused(run_copy):
    with pytest.raises(ConfigError, match="train.steps=1 but .* is at step 2 already"):
        fit(resolve_train_config([f"resume={run_copy}", "train.steps=1"]))


def test_checkpoint_missing_a_field_gives_one_line(run_copy, capsys):
    path = latest_checkpoint(run_copy)
    state = torch.load(path, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)
    code = main(["train", f"resume={run_copy}", "train.steps=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "lacks optimizer" in err and str(path) in err


# --------------------------------------------------------------------------------------- 3: finite


def test_exploded_weights_stop_before_a_checkpoint_is_called_good(tiny_overrides, monkeypatch, tmp_path):
    real = train_mod.train_step
    calls = {"n": 0}

    def poisoned(learner, *args, **kwargs):
        terms = real(learner, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # after the last loss: the loss stays finite, one weight explodes
            with torch.no_grad():
                next(learner.model.parameters()).view(-1)[0] = float("inf")
        return terms

    monkeypatch.setattr(train_mod, "train_step", poisoned)
    cfg = resolve_train_config([*tiny_overrides, "train.steps=2", "train.checkpoint_every=1"])
    with pytest.raises(
        TrainingDivergedError, match=r"non-finite weights at step 2 .*last good checkpoint: .*step_0000001"
    ):
        fit(cfg)
    run = tmp_path / "run"
    assert [s for s, _ in step_checkpoints(run)] == [1] and not (run / "model.pt").exists()
    log = (run / "train.log").read_text()
    assert "non-finite weights at step 2" in log and "Traceback" not in log


def test_huge_lr_never_finishes_as_a_model(tiny_overrides, tmp_path, capsys):
    code = main(["train", *tiny_overrides, "train.steps=2", "train.checkpoint_every=1", "optim.lr=1e37"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("partdisco train: error: non-finite")
    run = tmp_path / "run"
    assert not (run / "model.pt").exists()
    for _, path in step_checkpoints(run):
        assert all(
            torch.isfinite(v).all() for v in load_checkpoint(path)["model"].values() if v.is_floating_point()
        )
    assert "non-finite" in (run / "train.log").read_text()


def test_load_segment_eval_refuse_non_finite_weights(tmp_path, capsys):
    from PIL import Image

    from partdisco.api import load
    from partdisco.models import create_segmenter, export_checkpoint
    from partdisco.models.weights import NonFiniteWeightsError

    seg = create_segmenter("resnet18", num_parts=4)
    with torch.no_grad():
        seg.layer5.conv2d_list[0].weight[0, 0, 0, 0] = float("nan")
    path = export_checkpoint(seg, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteWeightsError, match="hold NaN or inf"):
        load(path)
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    for argv in (
        ["segment", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "seg"), "--quiet"],
        ["eval", str(path), "dataset=synthetic", "--quiet", "--no-regression"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "NaN or inf" in err, argv
    assert not (tmp_path / "seg" / "parts.json").exists()


# --------------------------------------------------------------------------------------- 6: one line


def test_disk_full_while_checkpointing_is_one_line_and_logged(tiny_overrides, tmp_path, monkeypatch, capsys):
    def full(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", full)  # fileio.save_torch writes every checkpoint
    code = main(["train", *tiny_overrides, "train.steps=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "No space left on device" in err[-1] and "free space" in err[-1]
    assert not any("Traceback" in line for line in err)
    run = tmp_path / "run"
    assert not list(run.rglob("*.tmp*")), "a failed write leaves no temp file"
    assert "No space left on device" in (run / "train.log").read_text()


def test_read_only_out_is_refused_before_any_work(tiny_overrides, tmp_path, monkeypatch, capsys):
    # Tests run as root, for whom chmod does not stop writes: the read-only state is simulated at the
    # check the code makes (os.access, which also reports read-only file systems).
    real_access = os.access
    monkeypatch.setattr(
        runfolder.os,
        "access",
        lambda p, mode: False if str(p).startswith(str(tmp_path)) else real_access(p, mode),
    )
    code = main(["train", *tiny_overrides, "train.steps=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "is not writable" in err
    assert not (tmp_path / "run").exists()
