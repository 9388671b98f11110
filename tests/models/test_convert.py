import logging
import os
from collections import OrderedDict

import pytest
import torch

from partdisco.config import ModelConfig, RunConfig
from partdisco.models import (
    CAFFE_RGB_QUIRK,
    FORMAT_VERSION,
    IMAGENET,
    CheckpointError,
    CheckpointMismatchError,
    build_segmenter,
    clean_state_dict,
    create_segmenter,
    detect_layout,
    export_checkpoint,
    load_backbone_weights,
    load_file,
    load_segmenter,
    load_state_dict_strict,
    segmenter_from_checkpoint_dict,
    segmenter_from_foreign,
)


def torchvision_resnet_shapes(depth: int) -> "OrderedDict[str, tuple[int, ...]]":
    """Key -> shape of torchvision's resnet18/50 state dict, written out from torchvision's definition."""
    bottleneck = depth == 50
    blocks = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
    expansion = 4 if bottleneck else 1
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for i in range(n):
            p = f"layer{layer}.{i}"
            cin = inplanes if i == 0 else planes * expansion
            if bottleneck:
                shapes[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                bn(f"{p}.bn3", planes * 4)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            if i == 0 and (layer > 1 or bottleneck):
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
        inplanes = planes * expansion
    shapes["fc.weight"] = (1000, 512 * expansion)
    shapes["fc.bias"] = (1000,)
    return shapes


def torchvision_state_dict(
    depth: int, seed: int = 0, counters: bool = True
) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in torchvision_resnet_shapes(depth).items():
        if key.endswith("num_batches_tracked"):
            if counters:
                sd[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.05
    return sd


def randomise_bn_stats(seg: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial running stats so eval-mode outputs depend on them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in seg.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)


@pytest.fixture(scope="module")
def two_branch_k4() -> torch.nn.Module:
    torch.manual_seed(0)
    seg = create_segmenter("deeplab_r50_2branch", 4)
    randomise_bn_stats(seg)
    return seg.eval()


@pytest.fixture(scope="module")
def unsup_parts_file(tmp_path_factory, two_branch_k4):
    """A fake released unsup-parts checkpoint: {'iter', 'model_state_dict', 'optimizer_state_dict'}."""
    seg = two_branch_k4
    opt = torch.optim.SGD(seg.param_groups(1e-5, 1e-4), lr=1e-5, momentum=0.9, weight_decay=5e-4)
    for group in opt.param_groups:  # the reference's groups carry only the standard keys
        group.pop("name")
    for p in seg.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()  # momentum buffers, like the released files
    for p in seg.parameters():
        p.grad = None
    path = tmp_path_factory.mktemp("released") / "model_60000.pth"
    torch.save(
        {"iter": 59999, "model_state_dict": seg.state_dict(), "optimizer_state_dict": opt.state_dict()}, path
    )
    return path


@pytest.fixture(scope="module")
def r50_files(tmp_path_factory) -> dict[str, object]:
    """A torchvision-named ResNet-50 state dict under a torchvision name and the Caffe release name."""
    folder = tmp_path_factory.mktemp("r50")
    sd = torchvision_state_dict(50, counters=False)  # the Caffe conversion has no num_batches_tracked
    torch.save(sd, folder / "resnet50.pth")
    os.link(folder / "resnet50.pth", folder / "resnet50-caffe-22edcc82.pth")
    return {"sd": sd, "torchvision": folder / "resnet50.pth", "caffe": folder / "resnet50-caffe-22edcc82.pth"}


class TestCleanStateDict:
    def test_prefixes(self):
        sd = {"module.conv1.weight": 1, "_orig_mod.module.bn1.bias": 2, "layer1.0.conv1.weight": 3}
        assert clean_state_dict(sd) == {"conv1.weight": 1, "bn1.bias": 2, "layer1.0.conv1.weight": 3}

    def test_collision(self):
        with pytest.raises(CheckpointError, match="conv1.weight"):
            clean_state_dict({"module.conv1.weight": 1, "conv1.weight": 2})


class TestDetectLayout:
    def test_layouts(self):
        head = {"layer5.conv2d_list.0.weight": torch.zeros(5, 1024, 3, 3)}
        assert detect_layout({"format_version": 1, "model": {}, "config": {}}) == "partdisco"
        assert (
            detect_layout({"iter": 1, "model_state_dict": head, "optimizer_state_dict": {}}) == "unsup_parts"
        )
        assert detect_layout({f"module.{k}": v for k, v in head.items()}) == "scops"
        tv = torchvision_state_dict(18)
        assert detect_layout(tv) == "torchvision_resnet"
        r50 = torchvision_state_dict(50, counters=False)
        assert detect_layout(r50) == "torchvision_resnet"
        assert detect_layout(r50, hint="resnet50-caffe-22edcc82.pth") == "caffe_resnet50"
        assert detect_layout(tv, hint="resnet18-caffe.pth") == "torchvision_resnet"  # no Caffe ResNet-18
        vgg = {f"features.{i}.weight": torch.zeros(1) for i in (0, 34)} | {
            "classifier.0.weight": torch.zeros(1)
        }
        assert detect_layout(vgg) == "torchvision_vgg19"

    def test_unknown(self):
        with pytest.raises(CheckpointError, match=r"unknown weight layout.*encoder\.weight"):
            detect_layout({"encoder.weight": torch.zeros(1)})
        with pytest.raises(CheckpointError, match="expected a dict"):
            detect_layout([1, 2])
        with pytest.raises(CheckpointError, match="not VGG19"):
            detect_layout({"features.0.weight": torch.zeros(1), "features.28.weight": torch.zeros(1)})


class TestLoadStateDictStrict:
    def test_lists_every_problem(self):
        seg = create_segmenter("resnet18", 4)
        sd = dict(seg.state_dict())
        sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)  # mis-shaped
        del sd["layer3.1.bn2.running_var"]  # missing
        sd["layer9.weight"] = torch.zeros(1)  # unexpected
        before = seg.conv1.weight.clone()
        sd["conv1.weight"] = torch.ones_like(before)
        with pytest.raises(CheckpointMismatchError) as err:
            load_state_dict_strict(seg, sd, "test weights")
        message = str(err.value)
        assert "layer2.0.conv1.weight (file (128, 64, 1, 1) vs model (128, 64, 3, 3))" in message
        assert "missing (1): layer3.1.bn2.running_var" in message
        assert "unexpected (1): layer9.weight" in message
        assert message.startswith("test weights")
        assert torch.equal(seg.conv1.weight, before)  # nothing loaded on error

    def test_not_a_tensor(self):
        seg = create_segmenter("resnet18", 4)
        sd = dict(seg.state_dict())
        sd["bn1.weight"] = [1.0] * 64
        with pytest.raises(CheckpointMismatchError, match=r"not a tensor \(1\): bn1.weight"):
            load_state_dict_strict(seg, sd, "x")

    def test_missing_counters_tolerated(self):
        seg = create_segmenter("resnet18", 4)
        sd = {k: v.clone() + 1 for k, v in seg.state_dict().items() if not k.endswith("num_batches_tracked")}
        load_state_dict_strict(seg, sd, "old file")
        assert torch.equal(seg.conv1.weight, sd["conv1.weight"])

    def test_exclude(self):
        seg = create_segmenter("resnet18", 4)
        head = seg.layer5.conv2d_list[0].weight.clone()
        sd = {k: v + 1 for k, v in seg.state_dict().items() if not k.startswith("layer5.")}
        load_state_dict_strict(seg, sd, "backbone", exclude=("layer5.",))
        assert torch.equal(seg.layer5.conv2d_list[0].weight, head)
        with pytest.raises(CheckpointMismatchError, match="missing"):
            load_state_dict_strict(seg, sd, "whole")


class TestTorchvisionBackbone:
    @pytest.mark.parametrize("depth, arch, n_keys", [(18, "resnet18", 122), (50, "resnet50", 320)])
    def test_loads(self, tmp_path, depth, arch, n_keys):
        sd = torchvision_state_dict(depth)
        assert len(sd) == n_keys  # torchvision's resnet18 / resnet50 state dict sizes
        path = tmp_path / f"resnet{depth}-f37072fd.pth"
        torch.save(sd, path)
        seg = create_segmenter(arch, 4)
        head = seg.layer5.conv2d_list[2].weight.clone()
        assert load_backbone_weights(seg, path) == "torchvision_resnet"
        mine = seg.state_dict()
        for key, value in sd.items():
            if not key.startswith("fc."):
                assert torch.equal(mine[key], value), key
        assert torch.equal(seg.layer5.conv2d_list[2].weight, head)

    def test_old_file_without_counters_and_module_prefix(self, tmp_path):
        sd = {f"module.{k}": v for k, v in torchvision_state_dict(18, counters=False).items()}
        torch.save(sd, tmp_path / "r18.pth")
        seg = create_segmenter("resnet18", 4)
        load_backbone_weights(seg, tmp_path / "r18.pth")
        assert torch.equal(seg.conv1.weight, sd["module.conv1.weight"])

    def test_wrong_depth_lists_keys(self, tmp_path):
        torch.save(torchvision_state_dict(18), tmp_path / "r18.pth")
        seg = create_segmenter("resnet50", 4)
        with pytest.raises(CheckpointMismatchError, match=r"missing \(\d+\): .*layer1\.0\.conv3\.weight"):
            load_backbone_weights(seg, tmp_path / "r18.pth")

    def test_mis_shaped_and_missing(self, tmp_path):
        sd = torchvision_state_dict(18)
        sd["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
        del sd["layer2.0.downsample.0.weight"]
        torch.save(sd, tmp_path / "r18.pth")
        with pytest.raises(CheckpointMismatchError) as err:
            load_backbone_weights(create_segmenter("resnet18", 4), tmp_path / "r18.pth")
        assert "layer4.1.conv2.weight" in str(err.value) and "layer2.0.downsample.0.weight" in str(err.value)
        assert "r18.pth" in str(err.value)

    def test_caffe_r50_into_two_branch(self, r50_files, caplog):
        sd = r50_files["sd"]
        seg = create_segmenter("deeplab_r50_2branch", 4)
        with caplog.at_level(logging.WARNING, logger="partdisco.models.foreign"):
            assert load_backbone_weights(seg, r50_files["caffe"]) == "caffe_resnet50"
        assert caplog.records == []  # caffe weights, caffe trunk, caffe normalisation: nothing to warn about
        assert torch.equal(seg.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
        # frozen BN affines stay frozen after loading
        assert not seg.bn1.weight.requires_grad and seg.layer1[0].downsample[1].weight.requires_grad
        # the same file, named without "caffe", reads as torchvision weights: a warning, still loaded
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="partdisco.models.foreign"):
            assert load_backbone_weights(seg, r50_files["torchvision"]) == "torchvision_resnet"
        assert "torchvision-style trunk" in caplog.text and "normalisation" in caplog.text
        # the caller can say which
        layout = load_backbone_weights(seg, r50_files["torchvision"], source="caffe_resnet50")
        assert layout == "caffe_resnet50"
        with pytest.raises(ValueError, match="source must be"):
            load_backbone_weights(seg, r50_files["torchvision"], source="timm")

    def test_vgg_file_rejected(self, tmp_path):
        torch.save({f"features.{i}.weight": torch.zeros(1) for i in (0, 34)}, tmp_path / "vgg19.pth")
        with pytest.raises(CheckpointError, match="features_weights"):
            load_backbone_weights(create_segmenter("resnet18", 4), tmp_path / "vgg19.pth")

    def test_build_segmenter_init_from(self, tmp_path):
        sd = torchvision_state_dict(18)
        torch.save(sd, tmp_path / "resnet18.pth")
        cfg = ModelConfig(
            arch="resnet18", num_parts=3, normalization="imagenet", init_from=str(tmp_path / "resnet18.pth")
        )
        seg = build_segmenter(cfg)
        assert torch.equal(seg.layer3[1].conv1.weight, sd["layer3.1.conv1.weight"])
        assert seg.preprocess == IMAGENET and seg.out_channels == 3


class TestForeign:
    def test_unsup_parts_release(self, tmp_path, unsup_parts_file, two_branch_k4):
        assert detect_layout(torch.load(unsup_parts_file, weights_only=True)) == "unsup_parts"
        seg = load_segmenter(unsup_parts_file)
        assert not seg.training
        assert (seg.arch, seg.num_parts, seg.background_channel) == ("deeplab_r50_2branch", 4, False)
        assert seg.preprocess == CAFFE_RGB_QUIRK
        image = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            expected = two_branch_k4(CAFFE_RGB_QUIRK(image))
            assert torch.allclose(seg(seg.preprocess(image)), expected, atol=1e-5)
        # convert to our format, reload, same logits
        out = export_checkpoint(
            seg, tmp_path / "sub" / "cub.pt", extra={"converted_from": str(unsup_parts_file)}
        )
        assert out == tmp_path / "sub" / "cub.pt"
        assert sorted(os.listdir(tmp_path / "sub")) == ["cub.pt"]  # no temporary file left
        ckpt = torch.load(out, map_location="cpu", weights_only=True)
        assert ckpt["format_version"] == FORMAT_VERSION and ckpt["converted_from"] == str(unsup_parts_file)
        assert detect_layout(ckpt) == "partdisco"
        again = load_segmenter(out)
        assert again.config() == seg.config()
        with torch.no_grad():
            assert torch.allclose(again(again.preprocess(image)), expected, atol=1e-5)

    def test_scops_raw_state_dict(self, tmp_path):
        torch.manual_seed(2)
        scops = create_segmenter("deeplab_r50_2branch", 4, background_channel=True)
        randomise_bn_stats(scops, seed=1)
        scops.eval()
        state = scops.state_dict()
        assert state["layer5.conv2d_list.0.weight"].shape == (5, 1024, 3, 3)
        torch.save(state, tmp_path / "model_60000.pth")
        seg = load_segmenter(tmp_path / "model_60000.pth")
        assert (seg.num_parts, seg.background_channel, seg.out_channels) == (4, True, 5)
        x = CAFFE_RGB_QUIRK(torch.rand(2, 3, 64, 64))
        with torch.no_grad():
            assert torch.allclose(seg(x), scops(x), atol=1e-5)
        export_checkpoint(seg, tmp_path / "scops.pt")
        again = load_segmenter(tmp_path / "scops.pt")
        assert again.background_channel and again.num_parts == 4
        with torch.no_grad():
            assert torch.allclose(again(x), scops(x), atol=1e-5)

    def test_num_parts_checks(self, two_branch_k4):
        wrapped = {"iter": 1, "model_state_dict": two_branch_k4.state_dict(), "optimizer_state_dict": {}}
        with pytest.raises(CheckpointError, match="num_parts=3"):
            segmenter_from_foreign(wrapped, num_parts=3)
        raw = two_branch_k4.state_dict()
        assert segmenter_from_foreign(raw).num_parts == 3  # read as SCOPS: 4 channels = 3 parts + background
        bare = segmenter_from_foreign(raw, num_parts=4)  # a bare unsup-parts model state
        assert (bare.num_parts, bare.background_channel) == (4, False)
        with pytest.raises(CheckpointError, match="expected an unsup-parts or SCOPS"):
            segmenter_from_foreign(torchvision_state_dict(18))

    def test_one_branch_head_rejected(self):
        with pytest.raises(CheckpointError, match="2-branch"):
            segmenter_from_foreign({"layer5.conv2d_list.0.weight": torch.zeros(5, 2048, 3, 3)})

    def test_mismatch_names_the_file(self, tmp_path, two_branch_k4):
        sd = dict(two_branch_k4.state_dict())
        del sd["layer3.4.bn1.running_mean"]
        torch.save({"iter": 1, "model_state_dict": sd, "optimizer_state_dict": {}}, tmp_path / "bad.pth")
        with pytest.raises(CheckpointMismatchError, match=r"bad\.pth.*\n.*layer3\.4\.bn1\.running_mean"):
            load_segmenter(tmp_path / "bad.pth")

    def test_backbone_from_release(self, unsup_parts_file, two_branch_k4):
        seg = create_segmenter("deeplab_r50_2branch", 6)
        head = seg.layer5.conv2d_list[0].weight.clone()
        assert load_backbone_weights(seg, unsup_parts_file) == "unsup_parts"
        assert torch.equal(seg.layer2[0].conv1.weight, two_branch_k4.layer2[0].conv1.weight)
        assert torch.equal(seg.layer5.conv2d_list[0].weight, head)


class TestOurFormat:
    def test_from_run_config(self):
        seg = create_segmenter("resnet18", 4, preprocess=IMAGENET)
        run = RunConfig()
        run.model.arch, run.model.normalization = "resnet18", "imagenet"
        ckpt = {"format_version": 1, "model": seg.state_dict(), "config": run.to_dict(), "step": 3}
        again = segmenter_from_checkpoint_dict(ckpt)
        assert again.config() == seg.config()
        assert torch.equal(again.conv1.weight, seg.conv1.weight)

    def test_ddp_prefixed_model(self):
        seg = create_segmenter("resnet18", 2)
        ckpt = {
            "format_version": 1,
            "model": {f"module.{k}": v for k, v in seg.state_dict().items()},
            "model_config": seg.config(),
        }
        assert torch.equal(
            segmenter_from_checkpoint_dict(ckpt).layer1[0].conv1.weight, seg.layer1[0].conv1.weight
        )

    def test_newer_version(self):
        with pytest.raises(CheckpointError, match="newer"):
            segmenter_from_checkpoint_dict(
                {"format_version": FORMAT_VERSION + 1, "model": {}, "model_config": {}}
            )
        with pytest.raises(CheckpointError, match="model_config"):
            segmenter_from_checkpoint_dict({"format_version": 1, "model": {}})

    def test_backbone_from_ours(self, tmp_path, caplog):
        src = create_segmenter("resnet18", 4)
        export_checkpoint(src, tmp_path / "ours.pt")
        dst = create_segmenter("resnet18", 7)
        assert load_backbone_weights(dst, tmp_path / "ours.pt") == "partdisco"
        assert torch.equal(dst.layer4[1].conv2.weight, src.layer4[1].conv2.weight)

    def test_export_validation(self, tmp_path):
        seg = create_segmenter("resnet18", 2)
        with pytest.raises(ValueError, match="reserved"):
            export_checkpoint(seg, tmp_path / "a.pt", extra={"model": 1})
        with pytest.raises(TypeError, match=r"extra\.bad"):
            export_checkpoint(seg, tmp_path / "a.pt", extra={"bad": object()})
        assert not (tmp_path / "a.pt").exists()

    def test_backbone_file_is_not_a_segmenter(self, tmp_path):
        torch.save(torchvision_state_dict(18), tmp_path / "resnet18.pth")
        with pytest.raises(CheckpointError, match=r"resnet18\.pth.*init_from"):
            load_segmenter(tmp_path / "resnet18.pth")


class _Custom:
    pass


class TestLoadFile:
    def test_missing(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.pth"):
            load_file(tmp_path / "nope.pth")

    def test_not_torch(self, tmp_path):
        (tmp_path / "x.pth").write_text("hello")
        with pytest.raises(CheckpointError, match=r"x\.pth"):
            load_file(tmp_path / "x.pth")

    def test_pickled_object_needs_opt_in(self, tmp_path):
        path = tmp_path / "legacy.pth"
        torch.save({"iter": 1, "args": _Custom()}, path)
        with pytest.raises(CheckpointError, match="allow_pickle=True"):
            load_file(path)
        assert isinstance(load_file(path, allow_pickle=True)["args"], _Custom)
