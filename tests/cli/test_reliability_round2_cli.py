"""Issue #22 (round 2): refusals that keep the user's files, one-line errors that name the file."""

import shutil

import pytest
import torch

from partdisco.cli import main
from partdisco.models import create_segmenter, export_checkpoint


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run folder as training leaves it (model.pt, config.yaml, a checkpoint), without training."""
    run = tmp_path_factory.mktemp("r") / "run"
    torch.manual_seed(0)
    model = export_checkpoint(create_segmenter("resnet18", num_parts=3), run / "model.pt")
    (run / "config.yaml").write_text("dataset: synthetic\n")
    (run / "checkpoints").mkdir()
    shutil.copy(model, run / "checkpoints" / "step_0000001.pt")
    return run


@pytest.fixture
def run_copy(fake_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(fake_run, dst)
    return dst


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------------------- 3: run files


@pytest.mark.parametrize(
    "argv, named",
    [
        (["export", "{run}", "{run}/model.pt", "--fp16"], "is the file it reads"),
        (["export", "{run}", "{run}/checkpoints/step_0000001.pt"], "is a file of the run folder"),
        (["export", "{run}/checkpoints/step_0000001.pt", "{run}/model.pt"], "is a file of the run folder"),
        (["eval", "{run}", "--out", "{run}/model.pt"], "is the file it reads"),
        (["eval", "{run}/model.pt", "--out", "{run}/checkpoints/step_0000001.pt"], "is a file of the run"),
        (["convert", "{run}/checkpoints/step_0000001.pt", "{run}/model.pt"], "is a file of the run folder"),
    ],
)
def test_export_eval_convert_never_replace_a_runs_files(run_copy, argv, named, capsys):
    before = _snapshot(run_copy)
    assert main([a.format(run=run_copy) for a in argv]) == 2
    err = _one_line_error(capsys)
    assert named in err
    assert _snapshot(run_copy) == before


def test_eval_out_that_is_not_a_metrics_file_is_refused(run_copy, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert main(["eval", str(run_copy), "--out", str(notes)]) == 2
    assert "is not a metrics JSON file" in _one_line_error(capsys)
    assert notes.read_text() == "my notes"


def test_export_to_a_new_path_still_works(run_copy, tmp_path):
    assert main(["export", str(run_copy), str(tmp_path / "small.pt"), "--fp16"]) == 0
    assert (tmp_path / "small.pt").is_file()


# --------------------------------------------------------------------------------------- 7 and tracebacks


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.schedule_steps=-5", "optim.schedule_steps"),
        ("optim.head_lr_mult=-1", "optim.head_lr_mult"),
        ("optim.power=-1", "optim.power"),
        ("optim.warmup_steps=-1", "optim.warmup_steps"),
        ("eval.max_images=-1", "eval.max_images"),
        ("eval.max_images=0", "eval.max_images"),
        ("eval.fg_refine_eps=1e-46", "eval.fg_refine_eps"),
        ("device=cuda:abc", "device='cuda:abc'"),
    ],
)
def test_values_that_were_accepted_or_crashed_are_one_line(override, key, tmp_path, capsys):
    argv = ["train", "data.image_size=32", "train.steps=1", f"out={tmp_path / 'run'}", override]
    assert main(argv) == 2
    err = _one_line_error(capsys)
    assert key in err
    assert not (tmp_path / "run").exists()


def test_a_symlink_loop_among_segment_inputs_is_skipped_or_named(fake_run, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").symlink_to(src / "b.png")
    (src / "b.png").symlink_to(src / "a.png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(src / "ok.png")
    out = tmp_path / "out"
    assert main(["segment", str(fake_run), str(src), "--out", str(out), "--size", "32", "--quiet"]) == 0
    assert [p.name for p in (out / "labels").iterdir()] == ["ok.png"]
    capsys.readouterr()
    assert main(["segment", str(fake_run), str(src / "a.png"), "--out", str(out), "--size", "32"]) == 2
    assert "is a symbolic link to nothing" in _one_line_error(capsys)


def test_a_folder_of_only_unreadable_images_is_one_line(tmp_path, capsys):
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    for i in range(4):
        (root / "images" / f"im{i}.png").write_bytes(b"not an image")
    argv = ["train", "dataset=folder", f"data.root={root}", "data.image_size=32", "model.arch=resnet18"]
    argv += ["model.features=texture", "train.steps=1", "train.batch_size=2", f"out={tmp_path / 'run'}"]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if " error: " in line]
    assert len(errors) == 1 and not any("Traceback" in line for line in lines)
    assert f"none of the 4 images in {root} could be read" in errors[0]
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize(
    "header, named",
    [
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,1e400]}}', "bad header entry"),
        (b'{"a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}}', "bad header entry"),
        (b"[" * 100000, "nests too deep"),
    ],
)
def test_a_malformed_safetensors_header_is_one_line(header, named, tmp_path):
    import struct

    from partdisco.api import load_backbone
    from partdisco.models import CheckpointError

    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(CheckpointError, match=named):
        load_backbone(path)


def test_data_synth_refuses_an_absurd_size(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path / "s"), "--size", "100000"]) == 2
    assert "must be 16..2048, got 100000" in _one_line_error(capsys)
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------------------- misleading


def test_eval_with_nothing_to_score_says_so_before_the_work(fake_run, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    root = tmp_path / "photos"
    (root / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(root / "images" / f"p{i}.png")
    out = tmp_path / "m.json"
    assert main(["eval", str(fake_run), "dataset=folder", f"data.root={root}", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if " error: " in line]
    assert len(err) == 1 and "nothing to score" in err[0] and str(root) in err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "content, named",
    [
        ("train:\n  steps: 3\n".encode("utf-16"), "is not UTF-8 text"),
        (bytes(range(256)), "is not UTF-8 text"),
    ],
)
def test_a_config_file_that_is_not_utf8_is_named(content, named, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert main(["train", "--config", str(path)]) == 2
    err = _one_line_error(capsys)
    assert named in err and str(path) in err


def test_keypoints_json_with_strings_names_the_file(tmp_path):
    from partdisco.data.folder import read_keypoints_json

    path = tmp_path / "keypoints.json"
    path.write_text('{"names": ["beak"], "keypoints": {"a.png": [["x", 3, 1]]}}')
    with pytest.raises(ValueError, match=rf"{path}: keypoints of 'a.png' are not all numbers"):
        read_keypoints_json(path)


def test_the_eta_leaves_the_start_up_out_and_stays_updated(tmp_path, monkeypatch, tiny_args):
    import re
    import types

    from partdisco.api import resolve_train_config
    from partdisco.engine.train import fit
    from partdisco.engine.train import loop as train_mod  # train_step and the clock

    clock = {"now": 0.0}
    real = train_mod.train_step

    def timed_step(*args, **kwargs):  # the first step takes 100 s (start-up), the others 1 s
        clock["now"] += 100.0 if clock["now"] == 0.0 else 1.0
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", timed_step)
    monkeypatch.setattr(train_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    run = tmp_path / "run"
    fit(resolve_train_config([*tiny_args, "eval.baseline=false", "train.steps=5", f"out={run}"]))
    log = (run / "train.log").read_text()
    assert (
        "1.00 s/step over 2 steps after the first (its start-up left out): the other 2 take about 0 min 2 s"
        in log
    )
    assert re.search(r"step 4/5 .*\(about 0 min 1 s left\)", log)  # updated at every logged step


def test_readme_api_comments_count_the_background_channel():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "(K, H, W)" not in readme and "(B, K, h, w)" not in readme
    assert "C = model.num_parts + 1 when model.background_channel" in readme


def test_a_failed_write_names_the_destination_not_the_temp_file(tmp_path):
    import errno
    import os

    from partdisco.cli import one_line
    from partdisco.fileio import atomic_write

    def full_disk(tmp):  # PIL and numpy raise ENOSPC without a file name
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "labels" / "cat.png", full_disk)
    assert err.value.filename == str(tmp_path / "labels" / "cat.png")
    assert one_line(err.value).startswith(f"No space left on device ({tmp_path / 'labels' / 'cat.png'})")
    assert os.listdir(tmp_path / "labels") == []
