"""Mask-free training end to end: a background channel is added and scored against held-out masks."""

import json

import pytest
import yaml

from partdisco.api import resolve_train_config
from partdisco.engine.train import fit
from partdisco.models import load_segmenter

pytestmark = pytest.mark.slow


def test_masks_ignore_trains_background_channel(tiny_overrides, tmp_path):
    cfg = resolve_train_config([*tiny_overrides, "train.steps=2", "data.masks=ignore"])
    run = fit(cfg)
    model = load_segmenter(run / "model.pt")
    assert model.background_channel and model.num_parts == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["background_channel"] is True
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("fg_iou", "px_nmi_predbg", "kp_nmi_predbg", "px_fg_nmi", "px_nmi"):
        assert key in metrics, key
    assert 0.0 <= metrics["fg_iou"] <= 100.0
    log = (run / "train.log").read_text()
    assert "mask-free training" in log


@pytest.mark.parametrize("masks, shows_mask", [("ignore", False), ("auto", True)])
def test_pictures_show_the_background_the_run_learns_from(
    tiny_overrides, tmp_path, monkeypatch, masks, shows_mask
):
    """parts.png: a mask-free run draws its own predicted background; a run with masks draws the mask."""
    from partdisco.engine.train import finish as train_mod  # where the pictures are made

    seen = []
    real = train_mod.predict_labels

    def spy(model, image, fg_mask=None):
        seen.append(fg_mask)
        return real(model, image, fg_mask)

    monkeypatch.setattr(train_mod, "predict_labels", spy)
    fit(resolve_train_config([*tiny_overrides, "train.steps=1", f"data.masks={masks}"]))
    assert seen and all((m is not None) == shows_mask for m in seen)
