"""First-try UX (issue #16): what a new user passes is accepted, defaults agree between API and CLI."""

from __future__ import annotations

import json

import numpy as np
import torch
import yaml
from PIL import Image

import partdisco
from partdisco.cli import main
from partdisco.config import load_config
from partdisco.models import create_segmenter
from partdisco.models.convert import export_checkpoint


def make_run(run_dir, image_size=32, num_parts=4):
    """A tiny finished run folder: model.pt (weights + the run config) and config.yaml."""
    cfg = load_config(
        "synthetic",
        [
            f"data.image_size={image_size}",
            "data.synthetic_train=4",
            "data.synthetic_test=4",
            "model.arch=resnet18",
            f"model.num_parts={num_parts}",
            "eval.batch_size=4",
            "log.progress=false",
        ],
    )
    torch.manual_seed(0)
    seg = create_segmenter("resnet18", num_parts, preprocess=None)
    run_dir.mkdir(parents=True, exist_ok=True)
    export_checkpoint(seg, run_dir / "model.pt", extra={"config": cfg.to_dict()})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return run_dir


def write_photos(folder, n=3, size=(40, 56)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"photo{i}.jpg")
    return folder


# ---------------------------------------------------------------------------------------- 1. --config


class TestConfigFileAndDataset:
    def test_dataset_on_the_command_line_beats_the_file(self, tmp_path, capsys):
        saved = tmp_path / "config.yaml"
        saved.write_text(yaml.safe_dump(load_config("synthetic", ["train.steps=7"]).to_dict()))
        photos = write_photos(tmp_path / "photos")
        code = main(
            ["train", "--print-config", "--config", str(saved), "dataset=folder", f"data.root={photos}"]
        )
        assert code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["dataset"] == "folder" and printed["data"]["name"] == "folder"
        assert printed["data"]["root"] == str(photos)
        # the file's other values stay on top of the folder preset
        assert printed["train"]["steps"] == 7 and printed["model"]["arch"] == "resnet18"

    def test_command_line_keys_beat_the_file(self, tmp_path, capsys):
        saved = tmp_path / "config.yaml"
        saved.write_text(yaml.safe_dump({"train": {"steps": 7}, "model": {"num_parts": 6}}))
        assert main(["train", "--print-config", "--config", str(saved), "train.steps=9"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["train"]["steps"] == 9 and printed["model"]["num_parts"] == 6


# ---------------------------------------------------------------------------------------- 2. API = CLI


def test_api_and_cli_segment_agree_at_the_checkpoint_size(tmp_path, capsys):
    run = make_run(tmp_path / "run", image_size=32)
    photos = write_photos(tmp_path / "photos", n=2)
    model = partdisco.load(run)
    assert model.image_size == 32
    labels, _ = partdisco.segment(model, [photos / "photo0.jpg", photos / "photo1.jpg"])
    assert main(["segment", str(run), str(photos), "--out", str(tmp_path / "parts"), "--quiet"]) == 0
    for i in range(2):
        cli_labels = np.asarray(Image.open(tmp_path / "parts" / "labels" / f"photo{i}.png"))
        np.testing.assert_array_equal(cli_labels, labels[i])
    settings = json.loads((tmp_path / "parts" / "parts.json").read_text())["settings"]
    assert settings["size"] == 32
    # an explicit size differs from the default (so the comparison above is not vacuous)
    other, _ = partdisco.segment(model, [photos / "photo0.jpg"], size=64)
    assert not np.array_equal(other[0], labels[0])


def test_fresh_model_default_size_is_256():
    from partdisco.engine.segment import DEFAULT_IMAGE_SIZE, inference_size

    seg = create_segmenter("resnet18", 3)
    assert seg.image_size is None and inference_size(seg) == DEFAULT_IMAGE_SIZE == 256


# ---------------------------------------------------------------------------------------- 3. accept inputs


class TestAcceptWhatUsersPass:
    def test_run_folder_as_checkpoint_for_eval(self, tmp_path, capsys):
        run = make_run(tmp_path / "run")
        assert main(["eval", str(run), "--quiet", "--no-regression"]) == 0
        assert (run / "metrics-synthetic-test.json").is_file()

    def test_folder_without_model_pt(self, tmp_path, capsys):
        (tmp_path / "run" / "checkpoints").mkdir(parents=True)
        (tmp_path / "run" / "checkpoints" / "step_0000010.pt").write_bytes(b"x")
        code = main(["segment", str(tmp_path / "run"), str(tmp_path)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert "without model.pt" in err and "step_0000010.pt" in err

    def test_png_as_checkpoint_is_not_a_checkpoint(self, tmp_path, capsys):
        photos = write_photos(tmp_path / "photos", n=1)
        png = tmp_path / "model.png"
        Image.new("RGB", (8, 8)).save(png)
        code = main(["segment", str(png), str(photos), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert "PNG image: not a checkpoint" in err and "allow_pickle" not in err
        (tmp_path / "notes.txt").write_text("hello")
        assert main(["eval", str(tmp_path / "notes.txt")]) == 2
        assert "not a torch file: not a checkpoint" in capsys.readouterr().err

    def test_segment_out_defaults_next_to_the_inputs(self, tmp_path, capsys):
        run = make_run(tmp_path / "run")
        photos = write_photos(tmp_path / "photos", n=1)
        assert main(["segment", str(run), str(photos), "--quiet"]) == 0
        out = capsys.readouterr().out
        expected = (tmp_path / "photos_parts").resolve()
        assert f"writing to {expected}" in out
        assert (expected / "labels" / "photo0.png").is_file() and (expected / "index.html").is_file()

    def test_flat_folder_of_images_is_a_folder_data_set(self, tmp_path):
        from partdisco.config import DataConfig
        from partdisco.data import build_dataset

        photos = write_photos(tmp_path / "photos", n=3)
        ds = build_dataset(DataConfig(name="folder", root=str(photos), image_size=32), "train", train=True)
        assert len(ds) == 3 and ds.sample_name(0) == "photo0.jpg"
        assert tuple(ds[0]["image"].shape) == (3, 32, 32)

    def test_data_check_guesses_the_layout(self, tmp_path, capsys):
        photos = write_photos(tmp_path / "photos", n=2)
        assert main(["data", "check", str(photos)]) == 0
        out = capsys.readouterr().out
        assert "guessed --dataset folder" in out and "result: OK" in out
        cub = tmp_path / "CUB_200_2011"
        cub.mkdir()
        (cub / "images.txt").write_text("")
        (cub / "train_test_split.txt").write_text("")
        main(["data", "check", str(tmp_path / "CUB_200_2011")])
        assert "guessed --dataset cub" in capsys.readouterr().out
        (tmp_path / "empty").mkdir()
        assert main(["data", "check", str(tmp_path / "empty")]) == 2
        assert "--dataset NAME" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- 7. data synth


class TestDataSynth:
    def test_default_writes_held_out_images(self, tmp_path, capsys):
        out = tmp_path / "synth"
        assert main(["data", "synth", str(out), "--n", "3", "--size", "32"]) == 0
        names = sorted(p.name for p in (out / "images").iterdir())
        assert names == [f"synth_test_{i:06d}.png" for i in range(3)]
        assert not (out / "train.txt").exists() and not (out / "test.txt").exists()

    def test_both_keeps_lists(self, tmp_path):
        out = tmp_path / "synth"
        assert main(["data", "synth", str(out), "--n", "4", "--size", "32", "--split", "both",
                     "--test-fraction", "0.25"]) == 0  # fmt: skip
        assert len((out / "test.txt").read_text().split()) == 1

    def test_refuses_an_existing_data_set(self, tmp_path, capsys):
        out = tmp_path / "synth"
        assert main(["data", "synth", str(out), "--n", "2", "--size", "32"]) == 0
        before = sorted(p.name for p in (out / "images").iterdir())
        capsys.readouterr()
        assert main(["data", "synth", str(out), "--n", "2", "--size", "32", "--split", "train"]) == 2
        err = capsys.readouterr().err.strip()
        assert "already exists and is a data set" in err and len(err.splitlines()) == 1
        assert sorted(p.name for p in (out / "images").iterdir()) == before
