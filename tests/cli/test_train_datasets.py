"""`partdisco train dataset=NAME data.root=...` runs on tiny copies of every real data set (issue #4)."""

import json

import pytest

from data.tiny_datasets import make_tiny_cub, make_tiny_deepfashion, make_tiny_folder, make_tiny_pascal
from partdisco.cli import main

pytestmark = pytest.mark.slow

COMMON = [
    "data.image_size=32",
    "model.arch=resnet18",
    "model.features=texture",
    "train.steps=2",
    "train.batch_size=2",
    "log.progress=false",
    "eval.batch_size=2",
]


@pytest.mark.parametrize(
    "name, make, extra",
    [
        ("cub", make_tiny_cub, ["model.init_from=none"]),
        ("deepfashion", make_tiny_deepfashion, ["model.init_from=none"]),
        ("pascal_part", make_tiny_pascal, ["data.pascal_class=horse", "model.init_from=none"]),
        ("folder", make_tiny_folder, []),
    ],
)
def test_train_on_tiny_dataset(tmp_path, name, make, extra):
    root = make(tmp_path / "data")
    run = tmp_path / "run"
    code = main(["train", f"dataset={name}", f"data.root={root}", *COMMON, *extra, f"out={run}"])
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["images"] >= 1
    assert (run / "parts.png").is_file() and (run / "model.pt").is_file()


def test_eval_cub_three_class_regression(tmp_path, capsys):
    root = make_tiny_cub(tmp_path / "data")
    run = tmp_path / "run"
    args = ["train", "dataset=cub", f"data.root={root}", *COMMON, "model.init_from=none", f"out={run}"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["eval", str(run / "model.pt"), "--quiet", "--device=cpu"]) == 0
    metrics = json.loads((run / "metrics-cub-test.json").read_text())
    for key in (
        "kp_fg_nmi",
        "kp_regression_error",
        "kp_regression_error_cub001",
        "kp_regression_error_cub003",
    ):
        assert key in metrics, key
    assert metrics["dataset"] == "cub" and metrics["split"] == "test"


def test_corrupt_training_image_is_skipped_and_counted(tmp_path):
    root = make_tiny_folder(tmp_path / "data", corrupt=True)
    run = tmp_path / "run"
    assert main(["train", "dataset=folder", f"data.root={root}", *COMMON, "train.steps=3", f"out={run}"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert any("broken" in name for name in metrics["skipped_images"]["train"])
    strict = main(
        ["train", "dataset=folder", f"data.root={root}", *COMMON, "data.strict=true", f"out={tmp_path / 's'}"]
    )
    assert strict == 2
