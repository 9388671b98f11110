"""The README's Python code blocks run as pasted (issue #16), on a tiny run folder and images made here."""

from __future__ import annotations

import re
from pathlib import Path

from .test_first_try import make_run, write_photos

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run_as_pasted(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no Python block"
    make_run(tmp_path / "runs" / "x", image_size=32)
    photos = write_photos(tmp_path / "photos", n=2)
    (photos / "photo0.jpg").rename(photos / "a.jpg")
    (photos / "photo1.jpg").rename(photos / "b.jpg")
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(blocks):
        namespace: dict = {"__name__": f"readme_block_{i}"}
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "(40, 56) uint8 (4, 40, 56)" in out  # the snippet's own print of the label / probability shapes
    assert tuple(namespace["logits"].shape) == (2, 4, 4, 4)
    assert (tmp_path / "runs" / "x" / "metrics-synthetic-test.json").is_file()
