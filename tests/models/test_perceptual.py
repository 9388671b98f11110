import pytest
import torch
import torch.nn.functional as F

from partdisco.imaging.color import LAB_CIE, rgb_to_lab
from partdisco.models import (
    IMAGENET,
    CheckpointError,
    CheckpointMismatchError,
    TextureFeatures,
    VGG19Features,
    build_feature_extractor,
)
from partdisco.models.perceptual import VGG19_LAYERS, VGG19_SHAPES


def pink_noise_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Colour images with a 1/f amplitude spectrum (natural-image-like statistics), (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.fftfreq(size).view(1, -1)
    f = (fx**2 + fy**2).sqrt()
    f[0, 0] = 1.0
    spectrum = torch.complex(
        torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)
    )
    x = torch.fft.ifft2(spectrum / f).real
    x = (x - x.mean((-2, -1), keepdim=True)) / x.std((-2, -1), keepdim=True)
    mix = torch.tensor([[1.0, 0.3, 0.1], [1.0, 0.0, -0.1], [1.0, -0.3, 0.1]])  # luminance-dominated colour
    rgb = torch.einsum("ij,bjhw->bihw", mix, x) * 0.18 + torch.rand(n, 3, 1, 1, generator=g) * 0.4 + 0.3
    return rgb.clamp(0, 1)


@pytest.fixture(scope="module")
def vgg_random() -> VGG19Features:
    return build_feature_extractor("vgg19_random", None)


@pytest.fixture(scope="module")
def texture() -> TextureFeatures:
    return build_feature_extractor("texture", None)


class TestVGG19Layout:
    def test_layer_index(self):
        assert VGG19_LAYERS["relu3_2"] == 13
        assert VGG19_LAYERS["relu5_4"] == 35
        assert VGG19_LAYERS["pool5"] == 36
        assert len(VGG19_SHAPES) == 32
        assert VGG19_SHAPES["features.34.weight"] == (512, 512, 3, 3)
        assert VGG19_SHAPES["features.10.weight"] == (256, 128, 3, 3)

    def test_truncated_to_last_tap(self, vgg_random):
        assert len(vgg_random.features) == 36
        assert len(VGG19Features((("relu3_2", 1.0),)).features) == 14
        assert [n for n, _ in vgg_random.named_parameters()][:2] == ["features.0.weight", "features.0.bias"]

    def test_unknown_tap(self):
        with pytest.raises(ValueError, match="unknown VGG19 layers"):
            VGG19Features((("relu6_1", 1.0),))


class TestVGG19Random:
    def test_shape_and_channels(self, vgg_random):
        assert vgg_random.out_channels == 768
        out = vgg_random(torch.rand(2, 3, 32, 32))
        assert out.shape == (2, 768, 32, 32) and out.dtype == torch.float32
        assert torch.isfinite(out).all() and out.abs().sum() > 0

    def test_deterministic_without_global_rng(self, vgg_random):
        state = torch.get_rng_state()
        other = build_feature_extractor("vgg19_random", None)
        assert torch.equal(torch.get_rng_state(), state)
        for (n, a), (_, b) in zip(vgg_random.named_parameters(), other.named_parameters()):
            assert torch.equal(a, b), n

    def test_taps_match_manual_computation(self, vgg_random):
        x = torch.rand(1, 3, 32, 32)
        out = vgg_random(x)
        with torch.no_grad():
            h = IMAGENET(x)
            for layer in list(vgg_random.features)[:14]:
                h = layer(h)
            low = F.interpolate(h, size=(32, 32), mode="bilinear", align_corners=True) * 0.33
        assert torch.allclose(out[:, :256], low, atol=1e-5)

    def test_weights_scale_taps(self):
        a = build_feature_extractor("vgg19_random", None, weight_low=1.0, weight_high=2.0)
        b = build_feature_extractor("vgg19_random", None, weight_low=0.5, weight_high=1.0)
        x = torch.rand(1, 3, 32, 32)
        assert torch.allclose(a(x), 2 * b(x), atol=1e-5)


class TestFrozen:
    @pytest.mark.parametrize("name", ["vgg_random", "texture"])
    def test_frozen(self, request, name):
        phi = request.getfixturevalue(name)
        assert all(not p.requires_grad for p in phi.parameters())
        phi.train()
        assert not phi.training and not any(m.training for m in phi.modules())
        x = torch.rand(1, 3, 32, 32, requires_grad=True)
        out = phi(x)
        assert not out.requires_grad

    def test_no_state_for_texture(self, texture):
        assert texture.state_dict() == {}

    def test_bad_input(self, texture, vgg_random):
        for phi in (texture, vgg_random):
            with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
                phi(torch.rand(3, 32, 32))


class TestVGG19Weights:
    def make_file(self, path, shapes=VGG19_SHAPES, drop=None):
        g = torch.Generator().manual_seed(0)
        sd = {k: torch.randn(s, generator=g) * 0.01 for k, s in shapes.items() if k != drop}
        # torchvision's classifier keys (ignored; kept tiny here, the real ones are 4096 x 25088)
        sd.update({"classifier.0.weight": torch.zeros(4, 8), "classifier.0.bias": torch.zeros(4)})
        sd.update({"classifier.6.weight": torch.zeros(2, 4), "classifier.6.bias": torch.zeros(2)})
        torch.save(sd, path)
        return sd

    def test_loads_torchvision_names(self, tmp_path):
        sd = self.make_file(tmp_path / "vgg19-dcbb9e9d.pth")
        phi = build_feature_extractor("vgg19", tmp_path / "vgg19-dcbb9e9d.pth")
        assert phi.out_channels == 768
        params = dict(phi.named_parameters())
        for key in ("features.0.weight", "features.16.bias", "features.34.weight"):
            assert torch.equal(params[key], sd[key]), key
        assert all(not p.requires_grad for p in phi.parameters())
        assert phi(torch.rand(1, 3, 32, 32)).shape == (1, 768, 32, 32)

    def test_missing_tensor_named(self, tmp_path):
        self.make_file(tmp_path / "vgg.pth", drop="features.12.bias")
        with pytest.raises(CheckpointMismatchError, match=r"features\.12\.bias"):
            build_feature_extractor("vgg19", tmp_path / "vgg.pth")

    def test_wrong_shape_named(self, tmp_path):
        shapes = dict(VGG19_SHAPES)
        shapes["features.21.weight"] = (512, 512, 1, 1)
        self.make_file(tmp_path / "vgg.pth", shapes=shapes)
        with pytest.raises(CheckpointMismatchError, match=r"features\.21\.weight"):
            build_feature_extractor("vgg19", tmp_path / "vgg.pth")

    def test_not_vgg(self, tmp_path):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "x.pth")
        with pytest.raises(CheckpointError, match="unknown weight layout"):
            build_feature_extractor("vgg19", tmp_path / "x.pth")

    def test_builder_errors(self, tmp_path):
        with pytest.raises(ValueError, match="needs a local torchvision VGG19 file"):
            build_feature_extractor("vgg19", None)
        with pytest.raises(ValueError, match="take no weight file"):
            build_feature_extractor("texture", tmp_path / "w.pth")
        with pytest.raises(ValueError, match="unknown feature source"):
            build_feature_extractor("clip", None)
        with pytest.raises(ValueError, match="needs a local dino ViT weight file"):
            build_feature_extractor("dino", None)


class TestRgbToLab:
    def test_known_colours(self):
        rgb = torch.tensor(
            [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]
        )
        lab = rgb_to_lab(rgb.view(5, 3, 1, 1), LAB_CIE).view(5, 3)
        expected = torch.tensor(
            [
                [100.0, 0.0, 0.0],
                [0.0, 0.0, 0.0],
                [53.24, 80.09, 67.20],
                [32.30, 79.19, -107.86],
                [53.39, 0.0, 0.0],
            ]
        )
        assert torch.allclose(lab, expected, atol=0.05)


class TestTextureFeatures:
    def test_channels(self, texture):
        assert texture.out_channels == 36 == len(texture.channel_names)
        assert texture.channel_names[0] == "lab_s1_L" and texture.channel_names[-1] == "contrast_s8"
        out = texture(torch.rand(2, 3, 40, 48))
        assert out.shape == (2, 36, 40, 48) and out.dtype == torch.float32
        assert torch.isfinite(out).all()

    def test_tiny_images(self, texture):
        assert torch.isfinite(texture(torch.rand(1, 3, 8, 8))).all()

    def test_flat_image_has_no_texture(self, texture):
        raw = texture.raw(torch.full((1, 3, 32, 32), 0.4))
        names = texture.channel_names
        texture_idx = [i for i, n in enumerate(names) if n.startswith(("gabor", "contrast"))]
        assert raw[:, texture_idx].abs().max() < 1e-3
        lab = raw[:, :3, 16, 16].flatten()
        assert torch.allclose(lab, rgb_to_lab(torch.full((1, 3, 1, 1), 0.4), LAB_CIE).flatten(), atol=1e-3)

    def test_striped_vs_flat(self, texture):
        # left half: vertical stripes (period 8 px), right half: flat grey of the same mean
        x = torch.arange(64.0)
        stripes = 0.5 + 0.3 * torch.sign(torch.sin(2 * torch.pi * x / 8))
        image = stripes.view(1, 1, 1, 64).expand(1, 3, 64, 64).clone()
        image[..., 32:] = 0.5
        feats = texture(image)
        names = texture.channel_names
        # orientation 0 = intensity varying along x (vertical stripes); level 1 = 8 px wavelength
        o0 = names.index("gabor_local_l1_o0")
        o2 = names.index("gabor_local_l1_o2")
        striped, flat = feats[0, :, 24:40, 8:16].mean((1, 2)), feats[0, :, 24:40, 48:56].mean((1, 2))
        assert striped[o0] > flat[o0] + 3.0  # about 3 standard deviations of the calibration
        assert striped[o0] > striped[o2] + 3.0  # orientation selective
        contrast = names.index("contrast_s2")
        assert striped[contrast] > flat[contrast] + 1.0
        # same mean colour: the coarse colour channels barely differ
        lab9 = names.index("lab_s9_L")
        assert abs(striped[lab9] - flat[lab9]) < 1.0

    def test_colour_distinguishes(self, texture):
        red = torch.tensor([0.8, 0.1, 0.1]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
        blue = torch.tensor([0.1, 0.1, 0.8]).view(1, 3, 1, 1).expand(1, 3, 16, 16)
        a, b = texture(red)[0, :, 8, 8], texture(blue)[0, :, 8, 8]
        names = texture.channel_names
        assert a[names.index("lab_s1_a")] > 2 and a[names.index("lab_s1_b")] > b[names.index("lab_s1_b")] + 4

    def test_calibration(self, texture):
        # the fixed constants give roughly standardised channels on natural-like (1/f) images
        out = texture(pink_noise_images(8, 64))
        mean, std = out.mean((0, 2, 3)), out.std((0, 2, 3))
        assert mean.abs().max() < 1.5
        assert std.min() > 0.2 and std.max() < 2.0

    def test_autocast_stays_float32(self, texture):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = texture(torch.rand(1, 3, 16, 16))
        assert out.dtype == torch.float32

    def test_translation_equivariant_inside(self, texture):
        image = pink_noise_images(1, 64, seed=3)
        shifted = torch.roll(image, shifts=4, dims=-1)
        a, b = texture(image), texture(shifted)
        # away from the borders, the full-resolution channels move with the image
        names = texture.channel_names
        idx = [i for i, n in enumerate(names) if n.startswith(("lab_s1_", "lab_s3_", "gabor_local_l0"))]
        assert len(idx) == 10
        assert torch.allclose(a[:, idx, 24:40, 20:36], b[:, idx, 24:40, 24:40], atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
class TestCuda:
    def test_texture_matches_cpu(self, texture):
        x = torch.rand(2, 3, 32, 32)
        gpu = texture.cuda()(x.cuda())
        cpu = texture.cpu()(x)
        assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-3)

    def test_vgg_matches_cpu(self, vgg_random):
        x = torch.rand(1, 3, 32, 32)
        gpu = vgg_random.cuda()(x.cuda())
        cpu = vgg_random.cpu()(x)
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)


def test_loss_features_stand_for_forward(vgg_random, texture):
    """Tapped networks give the loss their small maps; upsampled they are forward's output, bit for bit."""
    from partdisco.geometry.upsampled import Upsampled

    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    lazy = vgg_random.loss_features(x)
    assert isinstance(lazy, Upsampled) and lazy.shape == (2, 768, 40, 56)
    assert [tuple(m.shape[-2:]) for m in lazy.maps] == [(10, 14), (2, 3)]  # stride 4 and 16 (floor)
    assert torch.equal(lazy.dense(), vgg_random(x))
    dense = texture.loss_features(x)  # no taps: the full-size bank
    assert isinstance(dense, torch.Tensor) and torch.equal(dense, texture(x))
    cl = vgg_random.loss_features(x.contiguous(memory_format=torch.channels_last))  # train.channels_last
    torch.testing.assert_close(cl.dense(), lazy.dense(), rtol=1e-5, atol=1e-5)


def test_blur_as_matrix_products_is_the_convolution(monkeypatch):
    """The texture bank's blurs run as banded matrix products up to BLUR_MATMUL_MAX_SIDE (issue #24)."""
    from partdisco.models import perceptual

    x = torch.rand(2, 3, 37, 64, generator=torch.Generator().manual_seed(0))
    fast = {s: perceptual._blur(x, s) for s in (1.0, 3.0, 9.0, 30.0)}  # 30: the kernel outgrows the image
    ones = perceptual._blur(torch.ones(1, 1, 9, 9), 3.0)  # normalised at the borders: a constant stays
    torch.testing.assert_close(ones, torch.ones(1, 1, 9, 9))
    monkeypatch.setattr(perceptual, "BLUR_MATMUL_MAX_SIDE", 0)  # the convolutions
    for sigma, got in fast.items():
        torch.testing.assert_close(got, perceptual._blur(x, sigma), rtol=1e-5, atol=1e-6)
