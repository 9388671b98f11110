"""The discovered foreground travels with the model: classifier record, checkpoint, ONNX, segment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.test_discover import DISTRACTORS, ColourNetwork, _folder, _iou, _scene
from partdisco.engine.discover import DiscoverySettings, _seeds, discover_foreground, read_classifier
from partdisco.engine.inference import discovered as discovered_module
from partdisco.engine.inference.discovered import discovered_mask
from partdisco.engine.inference.images import segment_images
from partdisco.models import InferenceDefaults, create_segmenter
from partdisco.models.checkpoint import export_checkpoint, inference_defaults
from partdisco.models.foreground import ForegroundClassifier


def _trained_classifier(tmp_path, **settings) -> ForegroundClassifier:
    paths, _ = _folder(tmp_path / "photos", 12, 0.1, distractor=True)
    cfg = DiscoverySettings(size=96, classes=1, refine_radius=0.0, **settings)
    found = discover_foreground(paths, tmp_path / "fg", cfg, network=ColourNetwork(), progress=False)
    return found.classifier


def test_discovery_writes_the_classifier_it_learnt(tmp_path):
    clf = _trained_classifier(tmp_path)
    assert read_classifier(tmp_path / "fg") == clf
    assert len(clf.weight) == 3 and clf.size == 96 and clf.refine_radius == 0.0  # ColourNetwork: 3 features
    settings = json.loads((tmp_path / "fg" / "discovery.json").read_text())["settings"]
    assert (settings["rounds"], settings["balance"]) == (16, 0.5)  # the defaults, recorded


def test_the_classifier_finds_the_object_on_a_photo_it_never_saw(tmp_path):
    clf = _trained_classifier(tmp_path)
    rng = np.random.default_rng(7)
    for i in range(3):
        image, obj = _scene(rng, i, 0.1, distractor=True)
        mask = discovered_mask(clf, image, network=ColourNetwork()) > 0.5
        disk = (np.abs(image / 255.0 - np.array(DISTRACTORS[i % 3])).sum(-1) < 0.1) & ~obj
        assert _iou(mask, obj) > 0.7
        assert mask[disk].mean() < 0.05, "the salient distractor was taken for the object"


def test_masks_of_a_batch_are_those_of_each_photo_alone(tmp_path):
    """segment batches discovery on a GPU: a batch may not change any photo's mask (issue #24)."""
    from partdisco.engine.inference.discovered import discovered_masks

    clf = _trained_classifier(tmp_path)
    rng = np.random.default_rng(11)
    images = [_scene(rng, i, 0.1, distractor=True)[0] for i in range(5)]
    images.append(np.ascontiguousarray(images[0][:, :80]))  # another input size: its own group
    alone = [discovered_mask(clf, image, network=ColourNetwork()) for image in images]
    batched = discovered_masks(clf, images, network=ColourNetwork(), batch_size=4)
    assert len(batched) == len(images)
    for one, many in zip(alone, batched):
        np.testing.assert_array_equal(one, many)
    exact = discovered_masks(clf, images, network=ColourNetwork(), subsample=1)
    assert all(_iou(e > 0.5, a > 0.5) > 0.9 for e, a in zip(exact, alone))  # the fast filter: close


def test_self_training_seeds_follow_the_classifier_not_the_footprint():
    feats = torch.tensor([[1.0], [2.0], [-1.0], [-2.0], [0.0]]).half()
    foot = torch.zeros(5)  # the footprint says: all background
    settings = DiscoverySettings(seed_low=0.2, seed_high=0.6)
    with pytest.raises(ValueError, match="every seed location is background"):
        _seeds([(feats, foot)], settings)
    linear = (torch.zeros(1), torch.ones(1), torch.tensor([4.0]), torch.zeros(1))  # sigmoid(4x)
    x, y = _seeds([(feats, foot)], settings, linear)
    by_value = {float(v): float(label) for v, label in zip(x[:, 0], y)}
    assert by_value == {1.0: 1.0, 2.0: 1.0, -1.0: 0.0, -2.0: 0.0}  # 0.0 (p = 0.5) is not sure: left out


def test_a_malformed_classifier_is_refused_with_its_name(tmp_path):
    (tmp_path / "classifier.json").write_text('{"mean": [0.0], "std": [1.0]}')
    with pytest.raises(ValueError, match="classifier.json"):
        read_classifier(tmp_path)
    (tmp_path / "classifier.json").write_text("[0.0, 1.0]")
    with pytest.raises(ValueError, match=r"classifier.json: not a foreground classifier \(expected a map"):
        read_classifier(tmp_path)
    (tmp_path / "classifier.json").write_text("not json")
    with pytest.raises(ValueError, match="classifier.json: unreadable"):
        read_classifier(tmp_path)
    assert read_classifier(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="one value per channel"):
        ForegroundClassifier((0.0,), (1.0, 1.0), (1.0, 1.0), 0.0)
    with pytest.raises(ValueError, match="std must be > 0"):
        ForegroundClassifier((0.0,), (0.0,), (1.0,), 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        ForegroundClassifier((0.0,), (1.0,), (float("nan"),), 0.0)


def _model_with(clf: ForegroundClassifier):
    torch.manual_seed(0)
    seg = create_segmenter("resnet18", num_parts=3, background_channel=True)
    seg.inference_defaults = InferenceDefaults(image_size=64, foreground=clf)
    return seg


def test_segment_takes_the_foreground_from_the_discovered_classifier(tmp_path, monkeypatch):
    clf = _trained_classifier(tmp_path)
    monkeypatch.setattr(discovered_module, "discovery_network", lambda device="cpu": ColourNetwork())
    seg = _model_with(clf)  # random weights: its own background channel knows nothing
    image, obj = _scene(np.random.default_rng(3), 1, 0.1, distractor=True)
    found = segment_images(seg, [image])[0]
    assert found.background == "discovered"
    assert _iou(found.labels > 0, obj) > 0.7
    assert set(np.unique(found.labels[found.labels > 0])) <= {1, 2, 3}
    own = segment_images(seg, [image], background="model")[0]  # the switch back to the model's channel
    assert own.background == "model"
    masked = segment_images(seg, [image], [obj.astype(np.float32)])[0]  # a given mask still wins
    assert masked.background == "mask" and _iou(masked.labels > 0, obj) > 0.99


def test_the_classifier_travels_in_checkpoints_and_exports(tmp_path):
    clf = ForegroundClassifier((0.1, 0.2), (1.0, 2.0), (0.5, -0.5), 0.25, size=64)
    seg = _model_with(clf)
    path = export_checkpoint(seg, tmp_path / "model.pt")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["foreground"] == clf.to_dict()
    assert inference_defaults(ckpt).foreground == clf
    from partdisco.models.reader import load_checkpoint_file

    assert load_checkpoint_file(path).segmenter.inference_defaults.foreground == clf
    ckpt["foreground"] = {"mean": "x"}
    with pytest.raises(ValueError, match="checkpoint entry 'foreground'"):
        inference_defaults(ckpt)


def test_the_classifier_travels_in_onnx_metadata(tmp_path):
    pytest.importorskip("onnxruntime")
    from partdisco.models.onnx_model import OnnxSegmenter, export_onnx

    clf = ForegroundClassifier((0.1, 0.2), (1.0, 2.0), (0.5, -0.5), 0.25, size=64)
    path = export_onnx(_model_with(clf), tmp_path / "model.onnx")
    assert OnnxSegmenter(path).inference_defaults.foreground == clf
