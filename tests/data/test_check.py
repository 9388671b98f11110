from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from partdisco.config import DataConfig
from partdisco.data.check import check_dataset

from .tiny_datasets import make_tiny_cub, make_tiny_folder


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _run(root: Path, name: str, cfg: DataConfig | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = check_dataset(root, name, out=out, cfg=cfg)
    return code, out.getvalue()


class TestCub:
    def test_ok_and_read_only(self, tiny_cub: Path) -> None:
        before = _snapshot(tiny_cub.parent)
        code, text = _run(tiny_cub, "cub")
        assert code == 0, text
        assert "result: OK" in text
        assert "ok       images.txt" in text
        assert "split train (CMR training annotations): 3 images" in text
        assert (
            "split train (evaluation pipeline): 3 samples" in text
            and "split test (evaluation pipeline): 3 samples" in text
        )
        assert "scan: 6 samples read, 0 unreadable" in text
        assert _snapshot(tiny_cub.parent) == before

    def test_missing_required(self, tiny_cub: Path) -> None:
        (tiny_cub / "bounding_boxes.txt").unlink()
        code, text = _run(tiny_cub, "cub")
        assert code == 1
        assert "MISSING  bounding_boxes.txt" in text and "official CUB_200_2011.tgz" in text
        assert "result: PROBLEMS" in text

    def test_optional_absent(self, tmp_path: Path) -> None:
        root = make_tiny_cub(tmp_path, cmr=False, supervised=False)
        code, text = _run(root, "cub")
        assert code == 0, text
        assert "absent   cachedir/cub/data/train_cub_cleaned.mat" in text and "CMR cachedir" in text
        assert "supervisedlabels" in text

    def test_sup_required_when_chosen(self, tmp_path: Path) -> None:
        root = make_tiny_cub(tmp_path, supervised=False)
        code, text = _run(root, "cub", DataConfig(cub_mask="sup"))
        assert code == 1 and "MISSING" in text and "supervisedlabels" in text

    def test_unreadable_listed(self, tiny_cub: Path) -> None:
        bad = next((tiny_cub / "images").rglob("*0004_917.jpg"))
        bad.write_bytes(b"broken")
        code, text = _run(tiny_cub, "cub")
        assert code == 1
        assert "BAD  images/002.Laysan_Albatross/Laysan_Albatross_0004_917.jpg" in text
        assert "1 unreadable" in text

    def test_parent_root(self, tiny_cub: Path) -> None:
        assert _run(tiny_cub.parent, "cub")[0] == 0


class TestOthers:
    def test_deepfashion(self, tiny_deepfashion: Path) -> None:
        code, text = _run(tiny_deepfashion, "deepfashion")
        assert code == 0, text
        assert (
            "split train (evaluation pipeline): 3 samples" in text
            and "split test (evaluation pipeline): 2 samples" in text
        )

    def test_deepfashion_bad_colour(self, tiny_deepfashion: Path) -> None:
        from PIL import Image

        seg = next(tiny_deepfashion.rglob("02_1_front_segment.png"))
        with Image.open(seg) as img:
            size = img.size
        Image.new("RGB", size, (1, 2, 3)).save(seg)
        code, text = _run(tiny_deepfashion, "deepfashion")
        assert code == 1 and "outside the DeepFashion palette" in text

    def test_pascal(self, tiny_pascal: Path) -> None:
        code, text = _run(tiny_pascal, "pascal_part")
        assert code == 0, text
        assert (
            "split train (evaluation pipeline): 2 samples" in text
            and "split test (evaluation pipeline): 1 samples" in text
        )

    def test_pascal_missing_class_list(self, tiny_pascal: Path) -> None:
        code, text = _run(tiny_pascal, "pascal_part", DataConfig(pascal_class="dog"))
        assert code == 1 and "MISSING  VOC2010/ImageSets/Main/dog_train.txt" in text

    def test_folder_ok(self, tiny_folder: Path) -> None:
        code, text = _run(tiny_folder, "folder")
        assert code == 0, text
        assert "ok       masks" in text and "scan: 4 samples read" in text

    def test_folder_corrupt(self, tmp_path: Path) -> None:
        root = make_tiny_folder(tmp_path, corrupt=True)
        code, text = _run(root, "folder")
        assert code == 1 and "BAD  images/broken.png" in text

    def test_folder_missing_images(self, tmp_path: Path) -> None:
        root = make_tiny_folder(tmp_path)
        shutil.rmtree(root / "images")
        code, text = _run(root, "folder")
        assert code == 1 and "MISSING  images" in text

    def test_missing_root(self, tmp_path: Path) -> None:
        code, text = _run(tmp_path / "nowhere", "folder")
        assert code == 1 and "not a folder" in text

    def test_synthetic(self, tmp_path: Path) -> None:
        assert _run(tmp_path, "synthetic")[0] == 0

    def test_unknown_name(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown data set"):
            check_dataset(tmp_path, "imagenet", out=io.StringIO())
