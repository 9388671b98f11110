"""Object-centric inference: segment's maps score what eval reports; the crop/paste geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from partdisco.config import DataConfig, EvalConfig
from partdisco.data import folder
from partdisco.data.synthetic import write_folder
from partdisco.data.transforms import crop_resize_labels
from partdisco.engine.evaluate import evaluate, evaluate_full_images
from partdisco.engine.inference import segment_images
from partdisco.engine.inference.crop import crop_input, object_crop, paste_probs
from partdisco.engine.segment import SegmentOptions, segment_files
from partdisco.metrics.clustering import clustering_scores
from partdisco.models.segmenter import InferenceDefaults

# Colour prototypes of the synthetic creatures' parts (head red, body blue, wings green, tail purple).
PROTOTYPES = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.3, 0.9], [0.3, 0.8, 0.3], [0.6, 0.2, 0.8]])


class HueModel(nn.Module):
    """Deterministic part segmenter: nearest colour prototype of 4 x 4 pooled colour (scale-dependent)."""

    num_parts = 4
    arch = "hue"

    def __init__(self, background_channel: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(30.0))
        self.background_channel = background_channel

    def preprocess(self, image01: torch.Tensor) -> torch.Tensor:
        return image01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 4)  # (B, 3, h, w)
        dist = ((pooled[:, None] - PROTOTYPES.view(1, 4, 3, 1, 1)) ** 2).sum(2)  # (B, 4, h, w)
        logits = -self.scale * dist
        if self.background_channel:  # background: low saturation
            sat = pooled.amax(1, keepdim=True) - pooled.amin(1, keepdim=True)  # (B, 1, h, w)
            logits = torch.cat([self.scale * (0.25 - sat) * 4 + logits.amax(1, keepdim=True), logits], 1)
        return logits


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    write_folder(root, 16, image_size=64, test_fraction=0.5, progress=False)
    return root


def _nmi_on_fg(labels: list[np.ndarray], parts: list[np.ndarray]) -> float:
    table = np.zeros((256, 256), dtype=np.int64)
    for lab, gt in zip(labels, parts):
        fg = gt > 0
        np.add.at(table, (lab[fg].astype(np.int64), gt[fg].astype(np.int64)), 1)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    return float(clustering_scores(torch.from_numpy(table))["nmi"])


def test_segment_maps_score_what_eval_reports(synth_folder: Path, tmp_path: Path) -> None:
    model = HueModel().eval()
    cfg = DataConfig(name="folder", root=str(synth_folder), image_size=64)
    test_set = folder.build(cfg, "test", train=False)
    reported = evaluate(model, test_set, EvalConfig(baseline=False), torch.device("cpu"))["px_fg_nmi"]

    inputs = [synth_folder / "images" / name for name in test_set.files]
    parts = [np.asarray(Image.open(synth_folder / "parts" / name)) for name in test_set.files]
    scores = {}
    for crop in ("auto", "none"):
        out = tmp_path / crop
        segment_files(
            model,
            inputs,
            out,
            SegmentOptions(size=64, crop=crop, padding=0.05),
            masks_dir=synth_folder / "masks",
            progress=False,
        )
        labels = [np.asarray(Image.open(out / "labels" / f"{Path(n).stem}.png")) for n in test_set.files]
        scores[crop] = _nmi_on_fg(labels, parts)
    assert reported > 20.0  # a model that finds parts, so the comparison means something
    assert abs(scores["auto"] - reported) < 1.0, (scores, reported)
    # the whole image at the training size shows the object at another scale: a different number
    assert abs(scores["none"] - reported) > 1.0, (scores, reported)

    full = evaluate_full_images(model, test_set, EvalConfig(), size=64, padding=0.05, mode="mask")
    assert full["px_fg_nmi"] == pytest.approx(scores["auto"], abs=1e-6)


def test_full_images_predicted_background(synth_folder: Path) -> None:
    model = HueModel(background_channel=True).eval()
    cfg = DataConfig(name="folder", root=str(synth_folder), image_size=64)
    test_set = folder.build(cfg, "test", train=False)
    out = evaluate_full_images(model, test_set, EvalConfig(), size=64, padding=0.05, mode="predicted")
    assert 0.0 < out["fg_iou"] <= 100.0
    assert "px_nmi_predbg" in out and "px_nmi" not in out and "kp_nmi_predbg" in out
    with pytest.raises(ValueError, match="background channel"):
        evaluate_full_images(HueModel(), test_set, EvalConfig(), size=64, padding=0.05, mode="predicted")


def test_crop_matches_data_pipeline(synth_folder: Path) -> None:
    """The object crop of segment is the data pipeline's crop: labels agree pixel for pixel."""
    model = HueModel().eval()
    cfg = DataConfig(name="folder", root=str(synth_folder), image_size=64)
    test_set = folder.build(cfg, "test", train=False)
    name = test_set.files[0]
    image = np.asarray(Image.open(synth_folder / "images" / name).convert("RGB"))
    mask = (np.asarray(Image.open(synth_folder / "masks" / name)) > 0).astype(np.float32)
    sample = test_set[0]
    box = object_crop(mask, 0.05)
    np.testing.assert_allclose(crop_input(image, box, 64).numpy(), sample["image"].numpy(), atol=1e-6)
    (maps,) = segment_images(model, [image], [mask], size=64, crop="object", padding=0.05)
    pasted_back = crop_resize_labels(maps.labels, box, 64)  # image labels -> the crop grid
    logits = F.interpolate(model(sample["image"][None]), size=(64, 64), mode="bilinear", align_corners=True)
    direct = logits.argmax(1)[0].numpy() + 1
    fg = sample["fg_mask"][0].numpy() > 0.5
    assert (pasted_back[fg] == direct[fg]).mean() > 0.95


def test_paste_identity_and_outside() -> None:
    probs = torch.rand(3, 8, 8).softmax(0)
    out = paste_probs(probs, np.array([0, 0, 7, 7]), (8, 8))
    torch.testing.assert_close(out, probs)
    out = paste_probs(probs, np.array([4, 4, 11, 11]), (12, 12), outside=torch.tensor([1.0, 0.0, 0.0]))
    assert (out[:, :4, :4] == torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)).all()
    torch.testing.assert_close(out[:, 4:, 4:], F.interpolate(probs[None], size=(8, 8))[0])
    assert object_crop(np.zeros((5, 5)), 0.05) is None


def test_two_pass_crops_around_predicted_foreground() -> None:
    """A small object on a large grey image: the second pass segments it at the training scale."""
    model = HueModel(background_channel=True).eval()
    image = np.full((128, 128, 3), 128, np.uint8)
    image[40:72, 40:56] = (250, 50, 50)  # red head
    image[40:72, 56:72] = (50, 76, 230)  # blue body
    (maps,) = segment_images(model, [image], size=32, crop="auto")
    assert maps.background == "model"
    assert (maps.labels[:30] == 0).all() and (maps.labels[:, 100:] == 0).all()
    assert (maps.labels[44:68, 42:54] == 1).mean() > 0.9 and (maps.labels[44:68, 58:70] == 2).mean() > 0.9
    (whole,) = segment_images(model, [image], size=32, crop="none")
    assert (maps.labels > 0).sum() != (whole.labels > 0).sum() or (maps.labels != whole.labels).any()


def test_crop_padding_defaults_to_the_training_padding(synth_folder: Path) -> None:
    # API and CLI share one default (engine.inference.inference_padding): the checkpoint's data.padding_frac
    from partdisco.models.checkpoint import trained_crop_padding

    root = synth_folder
    name = sorted((root / "images").iterdir())[0].name
    image = np.asarray(Image.open(root / "images" / name).convert("RGB"))
    mask = (np.asarray(Image.open(root / "masks" / name)) > 0).astype(np.float32)
    model = HueModel().eval()

    def labels(padding):
        return segment_images(model, [image], [mask], size=32, crop="object", padding=padding)[0].labels

    assert trained_crop_padding({"config": {"data": {"padding_frac": 0.3}}}) == 0.3
    model.inference_defaults = InferenceDefaults(crop_padding=0.3)
    trained = labels(None)
    assert np.array_equal(trained, labels(0.3))
    assert not np.array_equal(trained, labels(0.05))


def test_full_images_read_a_flat_folder(synth_folder: Path, tmp_path: Path) -> None:
    """Images directly in data.root (no images/ folder) are scored like the images/ layout."""
    import shutil

    flat = tmp_path / "flat"
    shutil.copytree(synth_folder / "images", flat)
    for extra in ("masks", "parts"):
        shutil.copytree(synth_folder / extra, flat / extra)
    for split_file in ("train.txt", "test.txt", "part_names.json"):
        if (synth_folder / split_file).exists():
            shutil.copy(synth_folder / split_file, flat / split_file)
    model = HueModel().eval()
    scores = []
    for root in (synth_folder, flat):
        test_set = folder.build(DataConfig(name="folder", root=str(root), image_size=64), "test", train=False)
        full = evaluate_full_images(model, test_set, EvalConfig(), size=64, padding=0.05, mode="mask")
        scores.append(full["px_fg_nmi"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-9) and scores[0] > 20.0
