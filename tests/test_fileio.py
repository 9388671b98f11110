"""One atomic writer (issue #12, 1): a file is replaced whole or not at all, and every writer uses it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from partdisco import fileio


class Boom(RuntimeError):
    pass


def _write_half_then_raise(tmp: str) -> None:
    with open(tmp, "wb") as f:
        f.write(b"half a fi")
    raise Boom("writer failed")


def test_a_failing_writer_leaves_no_partial_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(Boom):
        fileio.atomic_write(target, _write_half_then_raise)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no .a.json.*.tmp left
    with pytest.raises(Boom):
        fileio.atomic_write(tmp_path / "new.bin", _write_half_then_raise)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # and no partial new file


def test_interrupt_is_cleaned_up_too(tmp_path: Path) -> None:
    def interrupted(tmp: str) -> None:
        Path(tmp).write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(tmp_path / "k.txt", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_writers_values_permissions_and_parents(tmp_path: Path) -> None:
    path = fileio.write_json(tmp_path / "sub" / "m.json", {"b": 1.5, "a": [1, 2]})
    assert path == tmp_path / "sub" / "m.json"
    assert path.read_text() == json.dumps({"b": 1.5, "a": [1, 2]}, indent=2, sort_keys=True)
    text = fileio.write_json(tmp_path / "p.json", {"b": 1, "a": 2}, indent=1, sort_keys=False).read_text()
    assert text == '{\n "b": 1,\n "a": 2\n}'
    assert fileio.write_text(tmp_path / "t.txt", "héllo").read_bytes() == "héllo".encode()
    assert fileio.write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "t.txt").stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    fileio.save_torch({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["w"].tolist() == [0, 1, 2]


def test_every_writer_goes_through_fileio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Config, checkpoints (both writers), PNGs and the contact sheet call the one atomic_write."""
    import numpy as np

    from partdisco.config import RunConfig, save_config
    from partdisco.models import create_segmenter, export_checkpoint
    from partdisco.visualise import save_png, write_contact_sheet

    seen: list[str] = []
    real = fileio.atomic_write

    def spy(path, write):  # type: ignore[no-untyped-def]
        seen.append(Path(path).name)
        return real(path, write)

    monkeypatch.setattr(fileio, "atomic_write", spy)
    import partdisco.visualise.sheet as sheet

    monkeypatch.setattr(sheet, "atomic_write", spy)  # imported by name there
    save_config(RunConfig(), tmp_path / "config.yaml")
    fileio.save_torch({"x": 1}, tmp_path / "step.pt")  # what training's checkpoints call
    export_checkpoint(create_segmenter("resnet18", 2), tmp_path / "model.pt")
    save_png(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    write_contact_sheet(tmp_path / "index.html", [], "title", 2)
    assert seen == ["config.yaml", "step.pt", "model.pt", "a.png", "index.html"]
