import json

import pytest

from partdisco.cli import main
from partdisco.config import RunConfig


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("train", "eval", "convert", "data"):
        assert name in out


def test_train_help_lists_every_key(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in ("model.num_parts", "loss.lambda_eqv", "train.steps", "optim.lr", "data.root", "log.wandb"):
        assert key in out
    assert out.count("=") > len(RunConfig().to_dict())


@pytest.mark.parametrize(
    "args, message",
    [
        (["model.num_parts=1"], "model.num_parts: must be >= 2"),
        (["model.num_partz=4"], "unknown config key 'model.num_partz'"),
        (["train.steps=ten"], "train.steps: expected an integer"),
        (["dataset=folder", "data.root=/nonexistent/folder", "model.features=texture"], "does not exist"),
    ],
)
def test_train_config_errors_are_one_line(capsys, tmp_path, args, message):
    code = main(["train", *args, f"out={tmp_path / 'never'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_print_config(capsys):
    assert main(["train", "--print-config", "model.num_parts=7"]) == 0
    assert "num_parts: 7" in capsys.readouterr().out


def test_data_synth_stress_variants(tmp_path, capsys):
    root = tmp_path / "stress"
    args = [
        "data",
        "synth",
        str(root),
        "--n",
        "4",
        "--size",
        "32",
        "--stress",
        "small,salient",
        "--stress",
        "clutter",
    ]
    assert main(args) == 0
    record = json.loads((root / "synthetic.json").read_text())
    assert record["object_scale"] == [0.25, 0.7] and record["salient"] == [1, 4] and record["clutter"] is True
    assert len(list((root / "parts").glob("*.png"))) == 4
    scaled = tmp_path / "scaled"
    assert (
        main(["data", "synth", str(scaled), "--n", "2", "--size", "32", "--object-scale", "0.3", "0.4"]) == 0
    )
    assert json.loads((scaled / "synthetic.json").read_text())["object_scale"] == [0.3, 0.4]
    capsys.readouterr()
    assert main(["data", "synth", str(tmp_path / "bad"), "--n", "2", "--stress", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown stress variant 'tiny'" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_data_synth_check_train_eval(tmp_path, capsys):
    root = tmp_path / "synth"
    args = [
        "data",
        "synth",
        str(root),
        "--n",
        "12",
        "--size",
        "32",
        "--split",
        "both",
        "--test-fraction",
        "0.25",
    ]
    assert main(args) == 0
    assert len(list((root / "images").glob("*.png"))) == 12
    assert main(["data", "check", str(root), "--dataset", "folder"]) == 0
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "dataset=folder",
            f"data.root={root}",
            "data.image_size=32",
            "model.arch=resnet18",
            "model.features=texture",
            "train.steps=2",
            "train.batch_size=2",
            "log.progress=false",
            f"out={run}",
        ]
    )
    assert code == 0 and (run / "model.pt").is_file()
    capsys.readouterr()
    assert main(["eval", str(run / "model.pt"), "--quiet", f"--out={tmp_path / 'm.json'}"]) == 0
    printed = capsys.readouterr().out
    assert "px_fg_nmi" in printed and "kp_fg_nmi" in printed
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["dataset"] == "folder" and metrics["images"] == 3
    assert "kp_regression_error" in metrics


def test_eval_needs_dataset_for_foreign_checkpoint(tmp_path, capsys):
    import torch

    from partdisco.models import create_segmenter

    seg = create_segmenter("deeplab_r50_2branch", num_parts=4)
    torch.save(
        {"iter": 1, "model_state_dict": seg.state_dict(), "optimizer_state_dict": {}}, tmp_path / "ref.pth"
    )
    assert main(["eval", str(tmp_path / "ref.pth"), "--quiet"]) == 2
    assert "dataset=NAME" in capsys.readouterr().err
