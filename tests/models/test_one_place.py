"""Checkpoint format, checkpoint loading and the segmenter interface each live in one place (#12, 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from partdisco.models import create_segmenter, export_checkpoint
from partdisco.models.checkpoint import (
    FORMAT_VERSION,
    check_format_version,
    checkpoint_record,
    segmenter_from_checkpoint_dict,
)
from partdisco.models.reader import load_checkpoint_file
from partdisco.models.segmenter import InferenceDefaults, PartSegmenter, Segmenter
from partdisco.models.vit import ViTSpec
from partdisco.models.vit_segmenter import ViTSegmenter
from partdisco.models.weights import CheckpointError


def test_one_format_check_for_training_resume_and_loading(tmp_path: Path) -> None:
    from partdisco.engine.checkpoint import load_checkpoint

    newer = {"format_version": FORMAT_VERSION + 1, "model": {}, "model_config": {}}
    torch.save(newer, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer than this partdisco reads") as from_loader:
        segmenter_from_checkpoint_dict(newer)
    with pytest.raises(ValueError, match="newer than this partdisco reads") as from_resume:
        load_checkpoint(tmp_path / "new.pt")
    assert str(from_resume.value).endswith(str(from_loader.value).removeprefix("checkpoint"))
    for bad in ({"model": {}}, {"format_version": 1}, [1, 2], {"format_version": True, "model": {}}):
        with pytest.raises(CheckpointError):
            check_format_version(bad)
    check_format_version({"format_version": FORMAT_VERSION, "model": {}})


def test_one_record_layout_for_both_writers(tmp_path: Path) -> None:
    seg = create_segmenter("resnet18", 3)
    path = export_checkpoint(seg, tmp_path / "m.pt", extra={"step": 7})
    saved = torch.load(path, weights_only=True)
    expected = checkpoint_record(seg.state_dict(), seg.config(), step=7)
    assert list(saved) == list(expected) == ["format_version", "model", "model_config", "step"]
    assert saved["model_config"] == expected["model_config"] and saved["format_version"] == FORMAT_VERSION
    with pytest.raises(ValueError, match="reserved"):
        checkpoint_record({}, {}, model={})


def test_one_loader_behind_every_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import partdisco.api as api
    import partdisco.models.reader as reader

    seg = create_segmenter("resnet18", 3)
    export_checkpoint(seg, tmp_path / "run" / "model.pt")
    loaded = load_checkpoint_file(tmp_path / "run")  # a run folder -> its model.pt
    assert loaded.ours and loaded.layout == "partdisco" and loaded.path == tmp_path / "run" / "model.pt"
    assert not loaded.segmenter.training
    torch.testing.assert_close(loaded.segmenter.state_dict(), seg.state_dict())

    calls: list[str] = []
    real = reader.load_checkpoint_file

    def spy(path, allow_pickle=False):  # type: ignore[no-untyped-def]
        calls.append(Path(path).name)
        return real(path, allow_pickle=allow_pickle)

    monkeypatch.setattr(reader, "load_checkpoint_file", spy)
    api.load(tmp_path / "run")
    api.open_checkpoint(tmp_path / "run" / "model.pt")
    api.export(tmp_path / "run", tmp_path / "e.pt")
    api.convert(tmp_path / "e.pt", tmp_path / "c.pt")
    reader.load_segmenter(tmp_path / "c.pt")
    assert calls == ["run", "model.pt", "run", "e.pt", "c.pt"]
    with pytest.raises(ValueError, match="is SRC"):
        api.convert(tmp_path / "c.pt", tmp_path / "c.pt")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="junk.pt"):
        api.open_checkpoint(tmp_path / "junk.pt")


def test_segmenters_share_param_groups_and_config() -> None:
    res = create_segmenter("deeplab_r50_2branch", 4, background_channel=True)
    vit = ViTSegmenter(ViTSpec.named("dinov2_vits14", depth=2), num_parts=3, finetune_blocks=1)
    assert (
        isinstance(res, PartSegmenter) and isinstance(vit, PartSegmenter) and not isinstance(vit, Segmenter)
    )
    for model in (res, vit):
        assert type(model).param_groups is PartSegmenter.param_groups
        assert type(model).config is PartSegmenter.config
        assert model.inference_defaults == InferenceDefaults()
    # the checkpoint contents are what they were: same keys, same order, same groups
    assert list(res.config()) == ["arch", "num_parts", "background_channel", "preprocess", "trunk_style"]
    assert list(vit.config()) == [
        "arch",
        "num_parts",
        "background_channel",
        "preprocess",
        "finetune_blocks",
        "backbone",
    ]
    assert res.config()["trunk_style"] == "caffe" and vit.config()["backbone"]["depth"] == 2
    groups = res.param_groups(1e-5, 1e-4)
    assert [(g["name"], len(g["params"]), g["lr"]) for g in groups] == [
        ("backbone", 61, 1e-5),
        ("head", 8, 1e-4),
    ]
    trained = [n for n, p in vit.backbone.named_parameters() if p.requires_grad]
    vit_groups = vit.param_groups(1.0, 2.0)
    assert len(vit_groups[0]["params"]) == len(trained) > 0
    assert len(vit_groups[1]["params"]) == len(list(vit.layer5.parameters()))
    with pytest.raises(ValueError, match="num_parts"):
        ViTSegmenter(ViTSpec.named("dinov2_vits14", depth=1), num_parts=0)
