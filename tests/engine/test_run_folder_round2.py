"""Issue #22, points 1, 2 and 10: a run's config.yaml starts a new run, foreign folders are left alone, a
run that failed before its first checkpoint can start again, Ctrl-C keeps the work, resume says what it
cannot take."""

import os
import shutil
import signal

import pytest
import torch

from partdisco.api import resolve_train_config
from partdisco.cli import main
from partdisco.config import ConfigError
from partdisco.engine.checkpoint import step_checkpoints
from partdisco.engine.runfolder import remove_stale_tmp
from partdisco.engine.train import NO_CHECKPOINT_YET, TrainingDivergedError, fit, prepare_run
from partdisco.engine.train import loop as train_mod  # the loop calls train_step

pytestmark = pytest.mark.slow


def _files(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock" and "tensorboard" not in p.parts and p.name != "train.log"
    }


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, tiny_args):
    """A 1-step run resumed once to step 2: its config.yaml records ``resume: RUN``."""
    out = tmp_path_factory.mktemp("resumed") / "run"
    fit(resolve_train_config([*tiny_args, "eval.baseline=false", "train.steps=1", f"out={out}"]))
    fit(resolve_train_config([f"resume={out}", "train.steps=2"]))
    assert "resume:" in (out / "config.yaml").read_text()
    return out


@pytest.fixture
def run_copy(resumed_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(resumed_run, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------ 1: --config RUN/config.yaml out=NEW


def test_config_of_a_resumed_run_starts_the_new_run_it_names(run_copy, tmp_path):
    before = _files(run_copy)
    new = tmp_path / "new"
    cfg = resolve_train_config([f"out={new}", "train.steps=1"], config_file=run_copy / "config.yaml")
    assert cfg.resume is None
    assert prepare_run(cfg)[1] == new
    fit(cfg)
    assert (new / "model.pt").is_file() and [s for s, _ in step_checkpoints(new)] == [1]
    assert _files(run_copy) == before  # the resumed run is not continued, nor pruned


@pytest.mark.parametrize(
    "words, named",
    [
        (["dataset=cub"], "dataset=cub"),
        (["recipe=cpu"], "recipe=cpu"),
        (["out=elsewhere"], "out=elsewhere"),
    ],
)
def test_resume_refuses_words_it_would_ignore(run_copy, words, named, capsys):
    before = _files(run_copy)
    assert main(["train", f"resume={run_copy}", "train.steps=3", *words]) == 2
    err = _one_line(capsys)
    assert named in err and f"resume={run_copy}" in err
    assert _files(run_copy) == before


def test_resume_refuses_another_config_file(run_copy, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("train:\n  steps: 5\n")
    with pytest.raises(ConfigError, match="--config .*other.yaml"):
        resolve_train_config([f"resume={run_copy}"], config_file=other)
    # the run's own config.yaml is the same run: accepted
    assert resolve_train_config([f"resume={run_copy}"], config_file=run_copy / "config.yaml").out == str(
        run_copy
    )


def test_divergence_after_resume_names_the_checkpoint_it_resumed_from(run_copy, monkeypatch):
    real = train_mod.train_step

    def nan_step(*args, **kwargs):
        out = real(*args, **kwargs)
        out["total"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(train_mod, "train_step", nan_step)
    with pytest.raises(TrainingDivergedError, match=r"last good checkpoint: .*step_0000002\.pt"):
        fit(resolve_train_config([f"resume={run_copy}", "train.steps=3"]))


# ------------------------------------------------------------------------ 2: out= a folder that is not a run


def test_new_run_into_a_folder_of_other_files_is_refused_and_changes_nothing(tmp_path, tiny_args, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.tmp").write_text("draft")
    (folder / "metrics.json").write_text('{"mine": 1}')
    (folder / "parts.png").write_bytes(b"not ours")
    before = sorted(p.name for p in folder.iterdir())
    assert main(["train", *tiny_args, "train.steps=1", f"out={folder}"]) == 2
    err = _one_line(capsys)
    assert f"out={folder} is not empty and is not a run folder" in err and "metrics.json" in err
    assert sorted(p.name for p in folder.iterdir()) == before  # not even a .lock file
    assert (folder / "notes.tmp").read_text() == "draft" and (
        folder / "parts.png"
    ).read_bytes() == b"not ours"


def test_only_our_temp_files_are_removed(tmp_path):
    (tmp_path / "notes.tmp").write_text("mine")
    (tmp_path / ".config.yaml.x1y2.tmp").write_text("ours")
    assert [p.name for p in remove_stale_tmp(tmp_path)] == [".config.yaml.x1y2.tmp"]
    assert (tmp_path / "notes.tmp").read_text() == "mine"


# ------------------------------------------------------------------------ 10: failed starts, Ctrl-C


def test_a_batch_larger_than_the_data_set_leaves_no_run(tmp_path, tiny_args):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="fewer than one global batch"):
        fit(resolve_train_config([*tiny_args, "data.synthetic_train=2", "train.batch_size=4", f"out={out}"]))
    assert not (out / "config.yaml").exists()


def test_a_run_that_failed_before_its_first_checkpoint_can_start_again(
    tmp_path, tiny_overrides, monkeypatch, capsys
):
    run = tmp_path / "run"

    def boom(*args, **kwargs):
        raise TrainingDivergedError("non-finite loss at step 1; stopped; " + NO_CHECKPOINT_YET)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "train_step", boom)
        with pytest.raises(TrainingDivergedError, match="start the run again"):
            fit(resolve_train_config([*tiny_overrides, "train.steps=2"]))
    assert (run / "config.yaml").is_file() and not step_checkpoints(run)
    # resume= explains what to do instead of "no checkpoints"
    capsys.readouterr()
    assert main(["train", f"resume={run}"]) == 2
    err = _one_line(capsys)
    assert "stopped before its first checkpoint" in err and f"--config {run / 'config.yaml'}" in err
    # ... and that works, as does the same command again
    assert main(["train", "--config", str(run / "config.yaml")]) == 0
    assert (run / "model.pt").is_file()


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(tmp_path, tiny_overrides, monkeypatch):
    run = tmp_path / "run"
    real, calls = train_mod.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during step 2
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        fit(resolve_train_config([*tiny_overrides, "train.steps=5", "train.checkpoint_every=100"]))
    assert [s for s, _ in step_checkpoints(run)] == [2]  # step 2 finished, then saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.setattr(train_mod, "train_step", real)
    fit(resolve_train_config([f"resume={run}", "train.steps=3"]))
    assert (run / "model.pt").is_file()


def test_resume_on_another_number_of_processes_is_refused(run_copy):
    last = step_checkpoints(run_copy)[-1][1]
    state = torch.load(last, weights_only=True)
    assert state["world_size"] == 1
    state["world_size"] = 2
    torch.save(state, last)
    with pytest.raises(ConfigError, match=r"trained by 2 process\(es\), this is 1.*nproc_per_node 2"):
        fit(resolve_train_config([f"resume={run_copy}", "train.steps=3"]))
