"""Issue #22: a real full disk (a small tmpfs), not only a simulated ENOSPC.

torch reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc]``, not as an OSError;
these tests fill a real file system. Mounting needs root (CAP_SYS_ADMIN): elsewhere they skip, saying why.
"""

import contextlib
import errno
import os
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from partdisco.cli import main
from partdisco.fileio import save_torch, write_json


@pytest.fixture
def small_disk(tmp_path):
    """A factory: ``small_disk(size)`` mounts a tmpfs of that size (e.g. "2m") and returns its folder."""
    mounted = []

    def mount(size):
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}): needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-l", str(folder)], check=False)  # lazy: a held file does not block it


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and not any(line.startswith("Traceback") for line in err), err
    return errors[0]


def test_torch_save_on_a_full_disk_is_enospc_and_leaves_the_old_file(small_disk):
    disk = small_disk("1m")
    old = save_torch({"w": torch.zeros(10)}, disk / "model.pt").read_bytes()
    with pytest.raises(OSError) as err:
        save_torch({"w": torch.zeros(2**20)}, disk / "model.pt")  # 4 MB onto 1 MB
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(disk / "model.pt")
    assert (disk / "model.pt").read_bytes() == old and os.listdir(disk) == ["model.pt"]
    with pytest.raises(OSError) as err:
        write_json(disk / "m.json", {"a": "x" * 2**21})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(disk / "m.json")


def test_training_onto_a_full_disk_is_one_line_naming_the_checkpoint(small_disk, tiny_args, capsys):
    out = small_disk("2m") / "run"  # config.yaml fits, a resnet18 checkpoint (~50 MB) does not
    argv = ["train", *tiny_args, "eval.baseline=false", "train.steps=1", f"out={out}"]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "No space left on device" in line and "step_0000001.pt" in line and "the disk is full" in line
    assert "No space left on device" in (out / "train.log").read_text()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_segment_onto_a_full_disk_names_the_file_and_the_rerun_works(small_disk, tmp_path, capsys):
    from partdisco.models import create_segmenter, export_checkpoint

    torch.manual_seed(0)
    ckpt = export_checkpoint(create_segmenter("resnet18", num_parts=3), tmp_path / "m.pt")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(src / f"im{i}.png")
    disk = small_disk("400k")
    argv = ["segment", str(ckpt), str(src), "--out", str(disk / "out"), "--size", "32", "--batch-size", "2"]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "No space left on device (" in line and str(disk / "out") in line and "the disk is full" in line
    subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)  # space is freed
    assert main(argv) == 0
    assert len(list((disk / "out" / "labels").glob("*.png"))) == 6
