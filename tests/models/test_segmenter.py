import math

import pytest
import torch
from torch import nn

from partdisco.config import ModelConfig
from partdisco.models import (
    CAFFE_RGB_QUIRK,
    IMAGENET,
    Preprocess,
    Segmenter,
    build_segmenter,
    create_segmenter,
    get_arch,
    list_archs,
    preprocess_for,
    register_arch,
    segmenter_from_config,
)
from partdisco.models.resnet import TrunkSpec, output_size
from partdisco.models.resnet_segmenter import ResNetArch

ARCHS = ["resnet18", "resnet50", "deeplab_r50_2branch"]


@pytest.fixture(scope="module")
def segmenters() -> dict[str, Segmenter]:
    torch.manual_seed(0)
    return {arch: create_segmenter(arch, num_parts=4) for arch in ARCHS}


class TestPreprocess:
    def test_caffe_quirk_values(self):
        x = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
        out = CAFFE_RGB_QUIRK(x).flatten()
        # BGR means subtracted from RGB channels, 0-255, no std (method §1.7)
        expected = torch.tensor([255.0 - 104.008, 127.5 - 116.669, 0.0 - 122.679])
        assert torch.allclose(out, expected, atol=1e-4)

    def test_imagenet_values(self):
        x = torch.full((2, 3, 4, 5), 0.5)
        out = IMAGENET(x)
        assert out.shape == (2, 3, 4, 5)
        assert math.isclose(out[0, 0, 0, 0].item(), (0.5 - 0.485) / 0.229, rel_tol=1e-5)
        assert math.isclose(out[1, 2, 3, 4].item(), (0.5 - 0.406) / 0.225, rel_tol=1e-5)

    def test_follows_dtype_and_unbatched(self):
        x = torch.rand(3, 4, 4, dtype=torch.float64)
        out = IMAGENET(x)
        assert out.dtype == torch.float64 and out.shape == (3, 4, 4)

    @pytest.mark.parametrize("pre", [CAFFE_RGB_QUIRK, IMAGENET])
    def test_invert_round_trip(self, pre):
        x = torch.rand(2, 3, 5, 5)
        assert torch.allclose(pre.invert(pre(x)), x, atol=1e-5)

    def test_dict_round_trip(self):
        d = CAFFE_RGB_QUIRK.to_dict()
        assert d == {"mean": [104.008, 116.669, 122.679], "std": [1.0, 1.0, 1.0], "scale": 255.0}
        assert Preprocess.from_dict(d) == CAFFE_RGB_QUIRK
        with pytest.raises(ValueError, match="missing"):
            Preprocess.from_dict({"mean": [0, 0, 0]})

    def test_frozen_and_validated(self):
        with pytest.raises(AttributeError):
            IMAGENET.scale = 2.0  # type: ignore[misc]
        with pytest.raises(ValueError, match="std"):
            Preprocess((0, 0, 0), (1, 0, 1), 1.0)
        with pytest.raises(ValueError, match="3 means"):
            Preprocess((0, 0), (1, 1), 1.0)  # type: ignore[arg-type]

    def test_bad_inputs(self):
        with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
            IMAGENET(torch.rand(2, 4, 5, 5))
        with pytest.raises(TypeError, match="floating"):
            IMAGENET(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))

    def test_preprocess_for(self):
        assert preprocess_for("caffe") is CAFFE_RGB_QUIRK
        assert preprocess_for("imagenet") is IMAGENET
        with pytest.raises(ValueError, match="unknown normalization"):
            preprocess_for("bgr")


class TestOutputSize:
    @pytest.mark.parametrize(
        "size, style, expected",
        [(256, "caffe", 33), (224, "caffe", 29), (320, "caffe", 41), (64, "caffe", 9), (65, "caffe", 9)]
        + [
            (256, "torchvision", 32),
            (224, "torchvision", 28),
            (64, "torchvision", 8),
            (65, "torchvision", 9),
        ],
    )
    def test_values(self, size, style, expected):
        assert output_size(size, style) == expected

    def test_bad_style(self):
        with pytest.raises(ValueError, match="style"):
            output_size(64, "keras")


class TestRegistry:
    def test_list(self):
        assert list_archs() == sorted([*ARCHS, "efficientnet_lite0"])  # ResNet trunks + EfficientNet

    def test_unknown(self):
        with pytest.raises(ValueError, match="choose from"):
            create_segmenter("vit_b16", 4)

    def test_duplicate(self):
        with pytest.raises(ValueError, match="already registered"):
            register_arch(ResNetArch(get_arch("resnet18")))

    def test_bad_spec(self):
        with pytest.raises(ValueError, match="caffe trunk style"):
            TrunkSpec("basic", (2, 2, 2, 2), "caffe")

    def test_default_preprocess(self, segmenters):
        assert segmenters["resnet18"].preprocess == IMAGENET
        assert segmenters["resnet50"].preprocess == IMAGENET
        assert segmenters["deeplab_r50_2branch"].preprocess == CAFFE_RGB_QUIRK

    def test_num_parts_validated(self):
        with pytest.raises(ValueError, match="num_parts"):
            create_segmenter("resnet18", 0)


class TestForwardShapes:
    @pytest.mark.parametrize("arch", ARCHS)
    @pytest.mark.parametrize("size", [(64, 64), (65, 48)])
    def test_shapes(self, segmenters, arch, size):
        seg = segmenters[arch].eval()
        H, W = size
        with torch.no_grad():
            logits = seg(torch.randn(2, 3, H, W))
        style = "caffe" if arch == "deeplab_r50_2branch" else "torchvision"
        assert logits.shape == (2, 4, output_size(H, style), output_size(W, style))
        assert seg.output_size(H, W) == tuple(logits.shape[-2:])
        assert torch.isfinite(logits).all()

    def test_two_branch_256_gives_33(self, segmenters):
        seg = segmenters["deeplab_r50_2branch"].eval()
        with torch.no_grad():
            assert seg(torch.randn(1, 3, 256, 256)).shape == (1, 4, 33, 33)

    def test_background_channel(self):
        seg = create_segmenter("resnet18", 3, background_channel=True)
        assert seg.out_channels == 4 and seg.num_parts == 3
        assert seg.layer5.conv2d_list[0].weight.shape == (4, 512, 3, 3)
        with torch.no_grad():
            assert seg.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 4, 8, 8)

    def test_bad_input(self, segmenters):
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            segmenters["resnet18"](torch.randn(3, 64, 64))

    def test_two_branch_head_reads_second_half(self, segmenters):
        seg = segmenters["deeplab_r50_2branch"].eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            features = seg.forward_features(x)
            assert features.shape == (2, 2048, 9, 9)
            assert torch.allclose(seg(x), seg.layer5(features[:, 1024:]), atol=1e-6)

    def test_head_is_sum_of_four_dilated_convs(self, segmenters):
        head = segmenters["resnet18"].layer5
        x = torch.randn(1, 512, 8, 8)
        expected = sum(
            nn.functional.conv2d(x, c.weight, c.bias, padding=r, dilation=r)
            for c, r in zip(head.conv2d_list, (6, 12, 18, 24))
        )
        with torch.no_grad():
            assert torch.allclose(head(x), expected, atol=1e-6)


class TestBackward:
    @pytest.mark.parametrize("arch", ARCHS)
    def test_every_trainable_param_gets_a_grad(self, arch):
        torch.manual_seed(1)
        seg = create_segmenter(arch, 4).train()
        x = seg.preprocess(torch.rand(2, 3, 64, 64))
        running_mean = seg.bn1.running_mean.clone()
        logits = seg(x)
        assert not torch.equal(running_mean, seg.bn1.running_mean)  # batch statistics in train mode
        assert torch.isfinite(logits).all()
        (logits.log_softmax(1)[:, 0].mean() + logits.square().mean()).backward()
        trainable = [(n, p) for n, p in seg.named_parameters() if p.requires_grad]
        assert trainable
        no_grad = [n for n, p in trainable if p.grad is None]
        assert no_grad == []
        assert all(torch.isfinite(p.grad).all() for _, p in trainable)
        frozen = [p for p in seg.parameters() if not p.requires_grad]
        assert all(p.grad is None for p in frozen)


class TestTwoBranchLayout:
    def test_state_dict_matches_release(self, segmenters):
        sd = segmenters["deeplab_r50_2branch"].state_dict()
        assert len(sd) == 326  # method §3.5
        keys = list(sd)
        assert keys[:6] == [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked",
        ]
        assert keys[-8:] == [f"layer5.conv2d_list.{i}.{t}" for i in range(4) for t in ("weight", "bias")]
        shapes = {
            "conv1.weight": (64, 3, 7, 7),
            "bn1.num_batches_tracked": (),
            "layer1.0.conv1.weight": (64, 64, 1, 1),
            "layer1.0.downsample.0.weight": (256, 64, 1, 1),
            "layer2.0.conv1.weight": (128, 256, 1, 1),
            "layer2.0.conv2.weight": (128, 128, 3, 3),
            "layer3.5.conv3.weight": (1024, 256, 1, 1),
            "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
            "layer4.0.downsample.1.running_var": (2048,),
            "layer4.2.bn3.weight": (2048,),
            "layer5.conv2d_list.0.weight": (4, 1024, 3, 3),
            "layer5.conv2d_list.3.bias": (4,),
        }
        for key, shape in shapes.items():
            assert tuple(sd[key].shape) == shape, key
        assert not any(k.startswith("fc.") for k in sd)
        n_params = sum(p.numel() for p in segmenters["deeplab_r50_2branch"].parameters())
        assert n_params == 23_655_504  # "23.66 M parameters" (§3.5)

    def test_caffe_strides_and_dilations(self, segmenters):
        seg = segmenters["deeplab_r50_2branch"]
        assert seg.maxpool.ceil_mode is True
        assert seg.layer2[0].conv1.stride == (2, 2) and seg.layer2[0].conv2.stride == (1, 1)
        assert seg.layer2[0].downsample[0].stride == (2, 2)
        for block in seg.layer3:
            assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
        for block in seg.layer4:
            assert block.conv2.dilation == (4, 4) and block.conv2.padding == (4, 4)
        assert seg.layer3[0].downsample[0].stride == (1, 1)
        assert [c.dilation[0] for c in seg.layer5.conv2d_list] == [6, 12, 18, 24]
        assert [c.padding[0] for c in seg.layer5.conv2d_list] == [6, 12, 18, 24]

    def test_frozen_bn_affines(self, segmenters):
        seg = segmenters["deeplab_r50_2branch"]
        params = dict(seg.named_parameters())
        assert not params["bn1.weight"].requires_grad
        assert not params["layer1.0.bn2.bias"].requires_grad
        assert not params["layer4.2.bn3.weight"].requires_grad
        for layer in range(1, 5):
            assert params[f"layer{layer}.0.downsample.1.weight"].requires_grad
            assert params[f"layer{layer}.0.downsample.1.bias"].requires_grad
        bn_frozen = [n for n, p in params.items() if ".bn" in n or n.startswith("bn1")]
        assert all(not params[n].requires_grad for n in bn_frozen)

    def test_init(self, segmenters):
        seg = segmenters["deeplab_r50_2branch"]
        assert abs(seg.layer2[0].conv2.weight.std().item() - 0.01) < 1e-3  # ref: N(0, 0.01) convs
        assert torch.all(seg.layer1[0].bn1.weight == 1) and torch.all(seg.layer1[0].bn1.bias == 0)
        for seg_ in segmenters.values():
            assert abs(seg_.layer5.conv2d_list[1].weight.std().item() - 0.01) < 1e-3


class TestTorchvisionLayout:
    def test_torchvision_dilation_scheme(self, segmenters):
        seg = segmenters["resnet50"]
        assert seg.maxpool.ceil_mode is False
        assert seg.layer2[0].conv2.stride == (2, 2) and seg.layer2[0].conv1.stride == (1, 1)
        # replace_stride_with_dilation: the first block keeps the previous dilation
        assert seg.layer3[0].conv2.dilation == (1, 1) and seg.layer3[1].conv2.dilation == (2, 2)
        assert seg.layer4[0].conv2.dilation == (2, 2) and seg.layer4[2].conv2.dilation == (4, 4)
        r18 = segmenters["resnet18"]
        assert r18.layer4[0].conv1.dilation == (2, 2) and r18.layer4[1].conv2.padding == (4, 4)
        assert r18.layer3[0].downsample[0].stride == (1, 1)

    def test_all_trainable(self, segmenters):
        assert all(p.requires_grad for p in segmenters["resnet50"].parameters())

    @pytest.mark.parametrize("arch, n_keys", [("resnet18", 128), ("resnet50", 326)])
    def test_key_count(self, segmenters, arch, n_keys):
        # torchvision state dict (122 / 320 keys) minus fc (2) plus the head (8)
        assert len(segmenters[arch].state_dict()) == n_keys


class TestParamGroups:
    @pytest.mark.parametrize(
        "arch, n_backbone", [("deeplab_r50_2branch", 61), ("resnet18", 60), ("resnet50", 159)]
    )
    def test_split(self, segmenters, arch, n_backbone):
        seg = segmenters[arch]
        groups = seg.param_groups(1e-5, 1e-4)
        assert [g["name"] for g in groups] == ["backbone", "head"]
        assert [g["lr"] for g in groups] == [1e-5, 1e-4]
        assert len(groups[0]["params"]) == n_backbone and len(groups[1]["params"]) == 8
        ids = [id(p) for g in groups for p in g["params"]]
        trainable = [id(p) for p in seg.parameters() if p.requires_grad]
        assert sorted(ids) == sorted(trainable)
        head_ids = {id(p) for p in seg.layer5.parameters()}
        assert {id(p) for p in groups[1]["params"]} == head_ids

    def test_usable_by_sgd(self, segmenters):
        opt = torch.optim.SGD(segmenters["resnet18"].param_groups(0.1, 1.0), momentum=0.9)
        assert [g["lr"] for g in opt.param_groups] == [0.1, 1.0]


class TestConfig:
    def test_round_trip(self):
        seg = create_segmenter("resnet18", 5, background_channel=True, preprocess=CAFFE_RGB_QUIRK).eval()
        cfg = seg.config()
        assert cfg == {
            "arch": "resnet18",
            "num_parts": 5,
            "background_channel": True,
            "preprocess": CAFFE_RGB_QUIRK.to_dict(),
            "trunk_style": "torchvision",
        }
        clone = segmenter_from_config(cfg).eval()
        clone.load_state_dict(seg.state_dict())
        assert clone.config() == cfg
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(clone(x), seg(x))

    def test_missing_key(self):
        with pytest.raises(ValueError, match="num_parts"):
            segmenter_from_config({"arch": "resnet18"})

    def test_build_segmenter(self):
        seg = build_segmenter(ModelConfig(arch="resnet18", num_parts=3, normalization="imagenet"))
        assert (seg.arch, seg.num_parts, seg.background_channel, seg.preprocess) == (
            "resnet18",
            3,
            False,
            IMAGENET,
        )
        seg = build_segmenter(ModelConfig())  # the reference defaults
        assert (seg.arch, seg.num_parts, seg.preprocess) == ("deeplab_r50_2branch", 4, CAFFE_RGB_QUIRK)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
class TestCuda:
    @pytest.mark.parametrize("arch", ARCHS)
    def test_matches_cpu(self, segmenters, arch):
        seg = segmenters[arch].eval()
        x = torch.rand(2, 3, 64, 64)
        with torch.no_grad():
            cpu = seg(seg.preprocess(x))
            gpu = seg.cuda()(seg.preprocess(x.cuda()))
        seg.cpu()
        assert gpu.device.type == "cuda"
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)
