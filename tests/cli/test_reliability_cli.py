"""Issue #15, points 4, 5, 6 and 8: one-line refusals, bad data by name, no silent data loss, option order."""

import errno
import json
import os
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco import api
from partdisco.cli import main
from partdisco.engine import runfolder
from partdisco.models import create_segmenter, export_checkpoint

TINY_EVAL = ["dataset=synthetic", "data.synthetic_test=4", "data.image_size=32", "eval.baseline=false"]
TINY_EVAL += ["data.synthetic_train=4"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return export_checkpoint(create_segmenter("resnet18", num_parts=3), tmp_path_factory.mktemp("c") / "m.pt")


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------------------- 8: option order


def test_eval_takes_keys_after_options(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", str(checkpoint), "--quiet", "--no-regression", *TINY_EVAL, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["images"] == 4
    argv = ["eval", str(checkpoint), *TINY_EVAL[:2], "--quiet", *TINY_EVAL[2:], "--no-regression", "--out"]
    assert main([*argv, str(out)]) == 0


def test_unknown_options_are_still_refused(checkpoint):
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(checkpoint), "--quiet", "--nope"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------- 6: one line


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.checkpoint_every=0", "train.checkpoint_every: must be >= 1"),
        ("train.log_every=0", "train.log_every: must be >= 1"),
        ("train.vis_every=0", "train.vis_every: must be >= 1"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints: must be >= 1"),
        ("optim.lr=1e39", "optim.lr: '1e39' is not a finite float32 number"),
        ("optim.lr=nan", "optim.lr: 'nan' is not a finite float32 number"),
        (f"seed={2**64}", "seed: must be 0..2**63-1"),
        ("data.image_size=100000", "data.image_size: must be 16..2048"),
        ("model.num_parts=1000", "model.num_parts: must be >= 2 parts and <= 255"),
    ],
)
def test_overflowing_and_zero_values_are_one_line(override, message, tmp_path, capsys):
    assert main(["train", override, f"out={tmp_path / 'run'}"]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_config_yaml_that_is_a_list(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("- train.steps=3\n- model.num_parts=4\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "expected a mapping (key: value lines) at the top level, got a list" in _one_line_error(capsys)


def test_yaml_bomb_gives_a_short_message(tmp_path, capsys):
    levels = ["&a0 [" + ", ".join(["x"] * 10) + "]"]
    for i in range(1, 6):  # 10**6 leaves when expanded
        levels.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("model:\n  num_parts: [" + ", ".join(levels) + "]\n")
    assert main(["train", "--config", str(path)]) == 2
    err = _one_line_error(capsys)
    assert len(err) < 2500 and "model.num_parts: expected an integer, got [[" in err


def test_os_errors_are_one_line_with_the_way_out():
    from partdisco.cli import one_line

    text = one_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/model.pt"))
    assert text == "No space left on device (/x/model.pt); the disk is full: free space or write elsewhere"
    assert "read-only" in one_line(OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro"))


# --------------------------------------------------------------------------------------- 5: data loss


def test_convert_onto_its_source_is_refused(checkpoint, tmp_path, capsys):
    before = checkpoint.read_bytes()
    assert main(["convert", str(checkpoint), str(checkpoint)]) == 2
    assert "DST" in _one_line_error(capsys)
    assert checkpoint.read_bytes() == before


def test_data_synth_never_overwrites_a_data_set(tmp_path, capsys):
    root = tmp_path / "set"
    assert main(["data", "synth", str(root), "--n", "10", "--size", "16", "--split", "both"]) == 0
    before = (root / "keypoints.json").read_bytes(), (root / "train.txt").read_bytes()
    capsys.readouterr()
    assert main(["data", "synth", str(root), "--n", "6", "--size", "16", "--seed", "3"]) == 2
    assert "already exists and is a data set" in _one_line_error(capsys)
    assert ((root / "keypoints.json").read_bytes(), (root / "train.txt").read_bytes()) == before


def test_eval_falls_back_to_a_writable_folder(checkpoint, tmp_path, monkeypatch, capsys):
    # Tests run as root, for whom chmod does not stop writes: read-only is simulated at os.access.
    real = os.access
    ro = str(checkpoint.parent)
    monkeypatch.setattr(runfolder.os, "access", lambda p, m: False if str(p) == ro else real(p, m))
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(checkpoint), "--quiet", "--no-regression", *TINY_EVAL]) == 0
    assert (tmp_path / "metrics-synthetic-test.json").is_file()
    assert not list(checkpoint.parent.glob("metrics-*.json"))


def test_eval_refuses_an_unwritable_out_before_the_work(checkpoint, tmp_path, monkeypatch, capsys):
    real = os.access
    monkeypatch.setattr(runfolder.os, "access", lambda p, m: False if "ro" in str(p) else real(p, m))
    monkeypatch.setattr(api, "load_config", lambda *a, **k: pytest.fail("evaluation started"))
    (tmp_path / "ro").mkdir()
    assert main(["eval", str(checkpoint), *TINY_EVAL, "--out", str(tmp_path / "ro" / "m.json")]) == 2
    assert "is not writable" in _one_line_error(capsys)


def test_eval_disk_full_keeps_the_metrics_in_the_message(checkpoint, tmp_path, monkeypatch, capsys):
    for method in ("write_text", "write_bytes"):  # whichever the atomic writer (partdisco.fileio) uses
        real = getattr(pathlib.Path, method)

        def full(self, *args, _real=real, **kwargs):
            if self.name.startswith(".m.json"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, method, full)
    out = tmp_path / "m.json"
    assert main(["eval", str(checkpoint), "--quiet", "--no-regression", *TINY_EVAL, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "No space left on device" in err and '"px_fg_nmi":' in err
    assert not list(tmp_path.glob(".m.json*"))


# --------------------------------------------------------------------------------------- 4: bad data


def _folder_set(root, n=4, mask_value=0, keypoints=None, size=24):
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(np.full((size, size), mask_value, np.uint8)).save(root / "masks" / f"im{i}.png")
    if keypoints is not None:
        (root / "keypoints.json").write_text(json.dumps({"names": ["head", "tail"], "keypoints": keypoints}))
    (root / "train.txt").write_text("im0.png\nim1.png\n")
    (root / "test.txt").write_text("im2.png\nim3.png\n")
    return root


def test_data_check_reports_every_empty_mask(tmp_path, capsys):
    root = _folder_set(tmp_path / "set")
    assert main(["data", "check", str(root), "--dataset", "folder"]) == 1
    out = capsys.readouterr().out
    for i in range(4):
        assert f"EMPTY  images/im{i}.png" in out
    assert "no mask has a foreground pixel" in out and "result: PROBLEMS" in out


def test_training_refuses_masks_without_foreground_at_step_0(tmp_path, capsys):
    root = _folder_set(tmp_path / "set", n=4)
    run = tmp_path / "run"
    argv = ["train", "dataset=folder", f"data.root={root}", "model.features=texture", "data.image_size=16"]
    assert main([*argv, "train.batch_size=2", f"out={run}", "log.progress=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "none of the 2 training masks looked at has a foreground pixel" in err
    assert not runfolder.holds_run(run)  # nothing of a run written: a fixed data set trains into it


def test_data_check_reports_bad_keypoints_by_file(tmp_path, capsys):
    nan = float("nan")
    keypoints = {
        "im0.png": [[nan, 3, 1], [4, 4, 1]],
        "im1.png": [[-2, 3, 1], [4, 4, 1]],
        "im2.png": [[5, 99, 1], [4, 4, 1]],
        "im3.png": [[5, 5, 1], [4, 4, 1]],
    }
    root = _folder_set(tmp_path / "set", mask_value=255, keypoints=keypoints)
    assert main(["data", "check", str(root), "--dataset", "folder"]) == 1
    out = capsys.readouterr().out
    assert "BAD  images/im0.png: keypoint 0 (head) is not finite" in out
    assert "BAD  images/im1.png: keypoint 0 (head) is negative" in out
    assert "BAD  images/im2.png: keypoint 0 (head) lies outside the 24x24 image" in out
    assert "im3.png" not in out.split("scan:")[1]


def test_non_utf8_split_list_names_the_file(tmp_path, capsys):
    root = _folder_set(tmp_path / "set", mask_value=255)
    (root / "train.txt").write_bytes(b"im0.png\nim\xff1.png\n")
    assert main(["data", "check", str(root), "--dataset", "folder"]) == 1
    out = capsys.readouterr().out
    assert f"{root / 'train.txt'}:2: byte 0xff at offset 10 is not UTF-8 text" in out


def test_scores_from_a_few_keypoints_are_flagged_in_the_table():
    table = api.format_metrics(
        {"kp_fg_nmi": 100.0, "keypoints_used": 1, "px_fg_nmi": 40.0, "fg_pixels": 9000}
    )
    rows = dict(line.split(None, 1) for line in table.splitlines()[1:] if not line.startswith("*"))
    assert rows["kp_fg_nmi"].startswith("100.0 *") and rows["px_fg_nmi"].strip() == "40.0"
    assert "* kp_* from only 1 keypoint(s) (< 20): not a meaningful score" in table
