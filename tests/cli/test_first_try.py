"""First-try UX (issue #16): what a new user passes is accepted, defaults agree between API and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import partdisco
from partdisco.cli import main
from partdisco.config import load_config
from partdisco.models import create_segmenter
from partdisco.models.checkpoint import export_checkpoint


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
    assert model.inference_defaults.image_size == 32
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
    from partdisco.engine.inference import DEFAULT_IMAGE_SIZE, inference_size

    seg = create_segmenter("resnet18", 3)
    assert seg.inference_defaults.image_size is None and inference_size(seg) == DEFAULT_IMAGE_SIZE == 256


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


# ---------------------------------------------------------------------------------------- 6. shareable


TINY_TRAIN = [
    "data.image_size=32",
    "data.synthetic_train=8",
    "data.synthetic_test=4",
    "model.arch=resnet18",
    "model.features=texture",
    "train.batch_size=2",
    "train.steps=2",
    "train.checkpoint_every=2",
    "train.vis_every=1000",
    "log.progress=false",
    "log.tensorboard=false",
    "eval.batch_size=4",
    "eval.baseline=false",
]


class TestShareableOutputs:
    def test_final_model_is_weights_only_and_resume_still_works(self, tmp_path, capsys):
        from partdisco.engine.checkpoint import load_checkpoint

        run = tmp_path / "run"
        assert main(["train", *TINY_TRAIN, f"out={run}"]) == 0
        final = load_checkpoint(run / "model.pt")
        assert "optimizer" not in final and "scaler" not in final and final["step"] == 2
        full = load_checkpoint(run / "checkpoints" / "step_0000002.pt")
        assert "optimizer" in full
        assert (run / "model.pt").stat().st_size < 0.75 * (
            run / "checkpoints" / "step_0000002.pt"
        ).stat().st_size
        capsys.readouterr()
        assert main(["train", f"resume={run / 'model.pt'}", "train.steps=3"]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("partdisco train: error: resume:") and "weights only" in last
        assert main(["train", f"resume={run}", "train.steps=3", "log.progress=false"]) == 0
        assert load_checkpoint(run / "model.pt")["step"] == 3

    def test_export_weights_only_and_fp16(self, tmp_path, capsys):
        from partdisco.engine.checkpoint import load_checkpoint

        run = make_run(tmp_path / "run")
        photos = write_photos(tmp_path / "photos", n=1)
        assert main(["export", str(run), str(tmp_path / "w16.pt"), "--fp16"]) == 0
        assert "float16" in capsys.readouterr().out
        assert main(["export", str(run), str(tmp_path / "w32.pt")]) == 0
        half = load_checkpoint(tmp_path / "w16.pt")
        assert half["model"]["conv1.weight"].dtype == torch.float16 and "optimizer" not in half
        assert half["config"]["data"]["image_size"] == 32
        size16, size32 = (tmp_path / "w16.pt").stat().st_size, (tmp_path / "w32.pt").stat().st_size
        assert size16 < 0.6 * size32
        m16, m32 = partdisco.load(tmp_path / "w16.pt"), partdisco.load(tmp_path / "w32.pt")
        assert m16.inference_defaults.image_size == 32 and next(m16.parameters()).dtype == torch.float32
        with torch.no_grad():
            x = torch.rand(1, 3, 32, 32)
            torch.testing.assert_close(m16(m16.preprocess(x)), m32(m32.preprocess(x)), atol=0.05, rtol=0.05)
        assert main(["segment", str(tmp_path / "w16.pt"), str(photos), "--quiet"]) == 0

    def test_index_html_is_portable_and_lists_unreadable_files(self, tmp_path, capsys):
        import re
        import shutil

        run = make_run(tmp_path / "run")
        photos = write_photos(tmp_path / "photos", n=2)
        (photos / "broken.jpg").write_bytes(b"not an image")
        out = tmp_path / "parts"
        assert main(["segment", str(run), str(photos), "--out", str(out), "--quiet"]) == 0
        moved = tmp_path / "mailed" / "parts"
        shutil.copytree(out, moved)
        shutil.rmtree(photos)
        html = (moved / "index.html").read_text()
        links = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert links and not any(link.startswith(("..", "/")) for link in links)
        assert all((moved / link).is_file() for link in links)
        assert any(link.startswith("input/") for link in links)
        assert "broken.jpg" in html and "unreadable" in html
        assert "0: background" not in html and "1: part 1" in html

    def test_legend_shows_background_with_masks(self, tmp_path, capsys):
        run = make_run(tmp_path / "run")
        photos = write_photos(tmp_path / "photos", n=1, size=(40, 56))
        masks = tmp_path / "masks"
        masks.mkdir()
        mask = np.zeros((40, 56), np.uint8)
        mask[10:30, 10:40] = 255
        Image.fromarray(mask).save(masks / "photo0.png")
        out = tmp_path / "parts"
        assert (
            main(["segment", str(run), str(photos), "--out", str(out), "--masks", str(masks), "--quiet"]) == 0
        )
        html = (out / "index.html").read_text()
        assert "0: background" in html and "background: mask" in html

    def test_border_without_border_part_says_so(self, tmp_path, capsys, monkeypatch):
        import partdisco.engine.inference.images as inference_mod  # _postprocess calls the heuristic there

        monkeypatch.setattr(inference_mod, "border_background_parts", lambda labels: [])
        run = make_run(tmp_path / "run")
        photos = write_photos(tmp_path / "photos", n=2)
        out = tmp_path / "parts"
        assert (
            main(["segment", str(run), str(photos), "--out", str(out), "--background", "border", "--quiet"])
            == 0
        )
        printed = capsys.readouterr().out
        assert "2 image(s) without background" in printed and "found no part" in printed
        entries = json.loads((out / "parts.json").read_text())["images"]
        assert {e["background"] for e in entries.values()} == {"none"}
        assert all("found no part" in e["background_note"] for e in entries.values())
        assert "background: none (--background border found no part" in (out / "index.html").read_text()

    def test_border_postprocess_values(self):
        from partdisco.engine.inference.background import BORDER_NOT_FOUND
        from partdisco.engine.inference.images import _postprocess

        probs = torch.zeros(4, 8, 8)
        probs[0, :4, :4] = probs[1, :4, 4:] = probs[2, 4:, :4] = probs[3, 4:, 4:] = 1.0  # quadrants
        maps = _postprocess(probs, (8, 8), None, "border", False, False)
        assert maps.background == "none" and maps.note == BORDER_NOT_FOUND and maps.labels.min() == 1
        probs = torch.zeros(4, 8, 8)
        probs[0] = 1.0
        probs[0, 3:5, 3:5], probs[1, 3:5, 3:5] = 0.0, 1.0  # part 1 frames part 2
        maps = _postprocess(probs, (8, 8), None, "border", False, False)
        assert maps.background == "border" and maps.note == "" and (maps.labels == 0).sum() == 60


# ---------------------------------------------------------------------------------------- 5. say it


def test_wandb_without_package_is_refused_before_the_run_folder(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    code = main(["train", *TINY_TRAIN, "log.wandb=true", f"out={tmp_path / 'never'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "log.wandb=true needs the wandb package" in err
    assert not (tmp_path / "never").exists()


def test_unlabelled_photos_train_with_eta_warning_table_and_diagnostics(tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", n=4, size=(36, 44))
    run = tmp_path / "run"
    args = [
        "train",
        "dataset=folder",
        f"data.root={photos}",
        *TINY_TRAIN,
        "train.steps=4",
        "optim.name=sgd",
        "optim.lr=1e-5",
        f"out={run}",
    ]
    assert main(args) == 0
    log = (run / "train.log").read_text()
    assert "WARNING" in log and "random weights" in log and "optim.name=adamw optim.lr=1e-3" in log
    assert "s/step over 2 steps after the first (its start-up left out): the other 1 take about" in log
    metrics = json.loads((run / "metrics.json").read_text())
    diag = metrics["diagnostics"]
    assert diag["images"] == 4 and len(diag["parts"]) == 4
    assert abs(sum(p["fg_share"] for p in diag["parts"]) - 100.0) < 1e-6
    assert all(0 <= p["images"] <= 4 for p in diag["parts"])
    assert "unsupervised diagnostics" in log and "colour spread (Lab)" in log and "parts.png" in log
    # no raw JSON, no empty metrics table; photos without a split are not called held-out (issue #22)
    assert '{"' not in log and "metrics (x100):" not in log
    assert "on 4 of the 4 test (= training images: the data set has no test.txt / train.txt" in log


def test_metrics_table_has_one_decimal():
    from partdisco.api import format_metrics

    text = format_metrics({"px_fg_nmi": 71.94321, "images": 8, "baseline_xy_kmeans": {"px_fg_nmi": 0.2123}})
    assert text.splitlines()[1].split() == ["px_fg_nmi", "71.9", "0.2"]


def test_part_diagnostics_values():
    from partdisco.engine.evaluate.diagnostics import part_diagnostics

    class Halves(torch.nn.Module):
        """Part 1 on the left half, part 2 on the right, whatever the image."""

        num_parts, background_channel = 2, False

        def preprocess(self, x):
            return x

        def forward(self, x):
            B, _, H, W = x.shape
            logits = torch.zeros(B, 2, H, W)
            logits[:, 0, :, : W // 2] = 1.0
            logits[:, 1, :, W // 2 :] = 1.0
            return logits

    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    samples = [
        {
            "image": red.clone(),
            "fg_mask": torch.ones(1, 8, 8),
            "bbox": torch.tensor([0.0, 0.0, 8.0, 8.0]),
            "class_id": torch.tensor(0),
            "index": torch.tensor(i),
            "name": f"red{i}",
        }
        for i in range(3)
    ]
    diag = part_diagnostics(Halves(), samples, torch.device("cpu"), batch_size=2)
    assert diag["images"] == 3
    left, right = diag["parts"]
    assert left["fg_share"] == pytest.approx(50.0) and right["fg_share"] == pytest.approx(50.0)
    assert left["images"] == right["images"] == 3
    assert left["color_spread_lab"] == pytest.approx(0.0, abs=1e-4)  # same colour in every image
    assert left["position_spread"] == pytest.approx(0.0, abs=1e-4)  # same place in every image


# ---------------------------------------------------------------------------------------- 4. help


class TestHelpTellsTheTruth:
    def _help(self, capsys, *args):
        with pytest.raises(SystemExit) as exc:
            main(["train", *args, "--help"])
        assert exc.value.code == 0
        return capsys.readouterr().out

    def test_default_help_shows_what_partdisco_train_runs(self, capsys):
        out = self._help(capsys)
        assert "model.arch='resnet18'" in out and "optim.name='adamw'" in out and "train.steps=400" in out
        assert "deeplab_r50_2branch'" not in out.split("model.arch=")[1].split("\n")[0].split("[")[0]

    def test_preset_help_shows_the_preset_values(self, capsys):
        out = self._help(capsys, "dataset=folder")
        assert "values dataset=folder resolves to" in out
        assert "model.arch='deeplab_r50_2branch'" in out and "train.steps=20000" in out

    def test_every_key_has_a_meaning_and_named_keys_their_choices(self, capsys):
        from partdisco.cli._options import key_meanings
        from partdisco.config import ARCHS

        meanings = key_meanings()
        assert all(meanings.values()), [k for k, v in meanings.items() if not v]
        out = self._help(capsys)
        arch_line = next(line for line in out.splitlines() if line.strip().startswith("model.arch="))
        assert "[" + " | ".join(ARCHS) + "]" in arch_line
        assert "train.precision='fp32'  (str) [fp32 | bf16 | fp16]" in out
        for key, meaning in meanings.items():
            assert any(line.strip().startswith(f"{key}=") and meaning in line for line in out.splitlines()), (
                key
            )

    def test_print_config_without_data_root(self, capsys):
        assert main(["train", "dataset=folder", "--print-config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["data"]["name"] == "folder" and printed["data"]["root"] is None


def test_file_data_name_alone_does_not_beat_the_command_line_dataset(tmp_path, capsys):
    saved = tmp_path / "mine.yaml"
    saved.write_text(yaml.safe_dump({"data": {"name": "synthetic", "image_size": 48}}))
    photos = write_photos(tmp_path / "photos")
    args = ["train", "--print-config", "--config", str(saved), "dataset=folder", f"data.root={photos}"]
    assert main(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["name"] == "folder" and printed["data"]["image_size"] == 48


def test_file_naming_its_data_set_only_in_data_name_gets_that_preset(tmp_path, capsys):
    photos = write_photos(tmp_path / "photos")
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"data": {"name": "folder", "root": str(photos)}}))
    assert main(["train", "--print-config", "--config", str(mine)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["dataset"] == "folder" and printed["data"]["name"] == "folder"
    assert printed["train"]["steps"] == 20000  # the folder preset's value
