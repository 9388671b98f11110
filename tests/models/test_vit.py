"""DINO / DINOv2 ViTs from local files: keys, detection, official parity (golden), interpolation, layouts."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import partdisco
from partdisco.models import CheckpointError, CheckpointMismatchError
from partdisco.models.vit import (
    VIT_NAMES,
    VisionTransformer,
    ViTSpec,
    interpolate_pos_embed,
)
from partdisco.models.vit_backbone import load_backbone, random_state_dict, spec_from_state_dict
from partdisco.models.vit_files import (
    detect_vit_layout,
    read_safetensors,
    to_layout,
    to_official,
    write_safetensors,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# Official architectures (embed dim, depth, heads, patch, pos positions, registers, FFN hidden / w12 rows)
OFFICIAL = {
    "dino_vits16": (384, 12, 6, 16, 197, 0, 1536),
    "dino_vits8": (384, 12, 6, 8, 785, 0, 1536),
    "dino_vitb16": (768, 12, 12, 16, 197, 0, 3072),
    "dino_vitb8": (768, 12, 12, 8, 785, 0, 3072),
    "dinov2_vits14": (384, 12, 6, 14, 1370, 0, 1536),
    "dinov2_vitb14": (768, 12, 12, 14, 1370, 0, 3072),
    "dinov2_vitl14": (1024, 24, 16, 14, 1370, 0, 4096),
    "dinov2_vitg14": (1536, 40, 24, 14, 1370, 0, 8192),
    "dinov2_vits14_reg": (384, 12, 6, 14, 1370, 4, 1536),
    "dinov2_vitb14_reg": (768, 12, 12, 14, 1370, 4, 3072),
    "dinov2_vitl14_reg": (1024, 24, 16, 14, 1370, 4, 4096),
    "dinov2_vitg14_reg": (1536, 40, 24, 14, 1370, 4, 8192),
}


def meta_state(spec: ViTSpec) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in VisionTransformer(spec).state_dict().items()}


def output(vit: VisionTransformer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return vit(x, return_class_token=True)


def model_from(state: dict, spec: ViTSpec) -> VisionTransformer:
    vit = VisionTransformer(spec).eval()
    vit.load_state_dict(state, strict=True)
    return vit


class TestOfficialKeys:
    @pytest.mark.parametrize("name", sorted(OFFICIAL))
    def test_keys_and_shapes(self, name):
        C, depth, heads, p, positions, registers, hidden = OFFICIAL[name]
        spec = ViTSpec.named(name)
        assert (spec.embed_dim, spec.depth, spec.num_heads, spec.patch_size) == (C, depth, heads, p)
        shapes = meta_state(spec)
        top = {k for k in shapes if not k.startswith("blocks.")}
        expected_top = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
        expected_top |= {"norm.weight", "norm.bias"}
        if spec.family == "dinov2":
            expected_top.add("mask_token")
        if registers:
            expected_top.add("register_tokens")
        assert top == expected_top
        assert shapes["pos_embed"] == (1, positions, C)
        assert shapes["patch_embed.proj.weight"] == (C, 3, p, p)
        assert shapes[f"blocks.{depth - 1}.attn.qkv.weight"] == (3 * C, C)
        assert f"blocks.{depth}.norm1.weight" not in shapes
        if registers:
            assert shapes["register_tokens"] == (1, registers, C)
        block0 = {k[len("blocks.0.") :] for k in shapes if k.startswith("blocks.0.")}
        mlp = {"mlp.w12.weight", "mlp.w12.bias", "mlp.w3.weight", "mlp.w3.bias"} if "g14" in name else {
            "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"}  # fmt: skip
        common = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight"}
        common |= {"attn.proj.bias", "norm2.weight", "norm2.bias"}
        ls = {"ls1.gamma", "ls2.gamma"} if spec.family == "dinov2" else set()
        assert block0 == common | mlp | ls
        first_mlp = "blocks.0.mlp.w12.weight" if "g14" in name else "blocks.0.mlp.fc1.weight"
        assert shapes[first_mlp] == (hidden, C)

    def test_swiglu_width_is_dinov2s_rounding(self):
        # (int(4 * 1536 * 2 / 3) + 7) // 8 * 8 = 4096: w12 (8192, 1536), w3 (1536, 4096)
        shapes = meta_state(ViTSpec.named("dinov2_vitg14"))
        assert shapes["blocks.0.mlp.w3.weight"] == (1536, 4096)

    def test_names(self):
        assert sorted(VIT_NAMES) == sorted(OFFICIAL)
        assert ViTSpec.named("dinov2_vitl14_reg", depth=2).name == "dinov2_vitl14_reg_depth2"
        with pytest.raises(ValueError, match="unknown ViT 'dinov3_vits16'"):
            ViTSpec.named("dinov3_vits16")


class TestDetection:
    @pytest.mark.parametrize("name", sorted(OFFICIAL))
    def test_spec_from_state_dict(self, name):
        spec = ViTSpec.named(name)
        state = {k: torch.empty(s, device="meta") for k, s in meta_state(spec).items()}
        assert spec_from_state_dict(state) == spec


class TestGolden:
    """Outputs of the official code on seeded random weights (tests/fixtures/vit_golden.md has the recipe)."""

    golden = torch.load(FIXTURES / "vit_golden.pt", weights_only=True)

    @pytest.mark.parametrize("name", sorted(golden))
    def test_matches_official(self, name):
        entry = self.golden[name]
        spec = ViTSpec.named(name, depth=entry["depth"])
        vit = model_from(random_state_dict(spec, seed=entry["weight_seed"]), spec)
        H, W = entry["size"]
        x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(entry["input_seed"]))
        patch_map, cls = output(vit, x)
        assert (
            patch_map.shape
            == entry["patch_map"].shape
            == (1, spec.embed_dim, H // spec.patch_size, W // spec.patch_size)
        )
        torch.testing.assert_close(patch_map, entry["patch_map"], rtol=0, atol=2e-5)
        torch.testing.assert_close(cls, entry["class_token"], rtol=0, atol=2e-5)

    def test_golden_covers_the_cases(self):
        names = set(self.golden)
        assert {"dino_vits16", "dino_vits8", "dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitg14"} <= names
        assert all(e["size"][0] != e["size"][1] or e["size"][0] < 518 for e in self.golden.values())


class TestInterpolation:
    def table(self, M=37, C=8):
        return torch.randn(1, M * M + 1, C, generator=torch.Generator().manual_seed(0))

    def test_native_square_is_unchanged(self):
        pos = self.table()
        assert interpolate_pos_embed(pos, (37, 37), True, 0.1, False) is pos

    def test_same_count_non_square_image_still_interpolates(self):
        # the official condition: token count equal AND a square image; 37 x 37 patches of a 518 x 520 image
        pos = self.table()
        out = interpolate_pos_embed(pos, (37, 37), False, 0.1, False)
        assert out.shape == pos.shape and not torch.equal(out, pos)

    @pytest.mark.parametrize("grid", [(4, 5), (7, 3), (9, 9), (40, 23)])
    def test_offset_uses_scale_factor(self, grid):
        pos = self.table()
        out = interpolate_pos_embed(pos, grid, False, 0.1, False)
        h, w = grid
        patch = pos[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
        by_scale = F.interpolate(
            patch, scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), mode="bicubic", align_corners=False
        )
        by_size = F.interpolate(patch, size=grid, mode="bicubic", align_corners=False)
        flat = out[:, 1:].reshape(1, h, w, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(flat, by_scale, rtol=0, atol=0)
        assert not torch.allclose(flat, by_size, atol=1e-4)  # the +0.1 offset changes the numbers
        torch.testing.assert_close(out[:, 0], pos[:, 0], rtol=0, atol=0)  # class position untouched

    def test_reg_models_interpolate_differently(self):
        pos = self.table()
        plain = interpolate_pos_embed(pos, (5, 4), False, 0.1, False)
        reg = interpolate_pos_embed(pos, (5, 4), False, 0.0, True)
        patch = pos[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
        expected = F.interpolate(patch, size=(5, 4), mode="bicubic", antialias=True, align_corners=False)
        torch.testing.assert_close(
            reg[:, 1:].reshape(1, 5, 4, -1).permute(0, 3, 1, 2), expected, rtol=0, atol=0
        )
        assert (plain - reg).abs().max() > 1e-2

    def test_hub_settings(self):
        for name, spec in VIT_NAMES.items():
            reg = name.endswith("_reg")
            assert spec.interpolate_offset == (0.0 if reg else 0.1), name
            assert spec.interpolate_antialias == reg, name

    @pytest.mark.parametrize("size", [(14, 14), (42, 70), (126, 28)])
    def test_odd_sizes_give_the_patch_grid(self, size):
        vit = model_from(
            random_state_dict(ViTSpec.named("dinov2_vits14_reg", depth=1)),
            ViTSpec.named("dinov2_vits14_reg", depth=1),
        )
        fmap, cls = output(vit, torch.randn(2, 3, *size))
        assert fmap.shape == (2, 384, size[0] // 14, size[1] // 14) and cls.shape == (2, 384)
        assert torch.isfinite(fmap).all()

    def test_not_a_multiple_of_the_patch(self):
        vit = VisionTransformer(ViTSpec.named("dino_vits16", depth=1))
        with pytest.raises(ValueError, match="multiples of the patch size 16, got 40 x 48"):
            vit(torch.zeros(1, 3, 40, 48))


@pytest.fixture(scope="module")
def small_models():
    """Depth-1 random weights of real per-tensor shapes for a few architectures, with reference outputs."""
    out = {}
    for name in ("dino_vits8", "dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitg14_reg"):
        spec = ViTSpec.named(name, depth=1)
        state = random_state_dict(spec, seed=3)
        p = spec.patch_size
        x = torch.randn(1, 3, 3 * p, 5 * p, generator=torch.Generator().manual_seed(4))
        out[name] = (spec, state, x, output(model_from(state, spec), x))
    return out


class TestLayouts:
    @pytest.mark.parametrize(
        "name", ["dino_vits8", "dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitg14_reg"]
    )
    @pytest.mark.parametrize("layout", ["official", "timm", "hf"])
    @pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
    def test_load_every_layout(self, small_models, tmp_path, name, layout, suffix):
        if name == "dinov2_vitg14_reg" and suffix == ".pth":
            pytest.skip("ViT-g is checked through .safetensors only (time)")
        spec, state, x, (ref_map, ref_cls) = small_models[name]
        converted = to_layout(state, layout)
        path = tmp_path / f"w{suffix}"
        if suffix == ".pth":
            torch.save(converted, path)
        else:
            write_safetensors(converted, path)
        vit = load_backbone(path)
        assert vit.spec == spec
        expected_layout = "official" if (layout == "timm" and spec.family == "dino") else layout
        assert vit.source["layout"] == expected_layout
        assert len(vit.source["sha256"]) == 64
        assert not any(p.requires_grad for p in vit.parameters()) and not vit.training
        fmap, cls = output(vit, x)
        torch.testing.assert_close(fmap, ref_map, rtol=0, atol=1e-6)
        torch.testing.assert_close(cls, ref_cls, rtol=0, atol=1e-6)

    def test_hf_keys(self, small_models):
        _, state, _, _ = small_models["dinov2_vitg14_reg"]
        hf = to_layout(state, "hf")
        keys = ["embeddings.register_tokens", "embeddings.mask_token", "layernorm.weight"]
        keys += ["encoder.layer.0.mlp.weights_in.weight", "encoder.layer.0.layer_scale1.lambda1"]
        keys += [
            "encoder.layer.0.attention.attention.query.weight",
            "encoder.layer.0.attention.output.dense.bias",
        ]
        for key in keys:
            assert key in hf, key
        v1 = to_layout(small_models["dino_vits8"][1], "hf")
        for key in ("encoder.layer.0.layernorm_before.weight", "encoder.layer.0.intermediate.dense.weight",
                    "encoder.layer.0.output.dense.weight", "embeddings.position_embeddings"):  # fmt: skip
            assert key in v1, key

    def test_timm_keys(self, small_models):
        _, state, _, _ = small_models["dinov2_vitg14_reg"]
        timm = to_layout(state, "timm")
        assert "reg_token" in timm and "mask_token" not in timm and "register_tokens" not in timm
        assert timm["pos_embed"].shape == (1, 1369, 1536)
        assert timm["blocks.0.mlp.fc1.weight"].shape == (8192, 1536)
        torch.testing.assert_close(timm["cls_token"], state["cls_token"] + state["pos_embed"][:, :1])
        assert to_layout(small_models["dino_vits8"][1], "timm").keys() == small_models["dino_vits8"][1].keys()

    @pytest.mark.parametrize("name", ["dino_vits8", "dinov2_vits14", "dinov2_vitg14_reg"])
    def test_round_trip_official_timm_hf(self, small_models, name):
        _, state, _, _ = small_models[name]
        for layout in ("timm", "hf"):
            back, detected, heads = to_official(to_layout(state, layout), "x")
            assert heads == []
            if name.endswith("_reg") and layout == "timm":
                # timm keeps only cls + class position (same tokens): compare the sum and the patch positions
                torch.testing.assert_close(
                    back["cls_token"] + back["pos_embed"][:, :1],
                    state["cls_token"] + state["pos_embed"][:, :1],
                )
                torch.testing.assert_close(
                    back["pos_embed"][:, 1:], state["pos_embed"][:, 1:], rtol=0, atol=0
                )
                continue
            if layout == "timm" and name.startswith("dinov2"):
                assert torch.count_nonzero(back["mask_token"]) == 0  # timm drops it
                back["mask_token"] = state["mask_token"]
            assert back.keys() == state.keys(), layout
            for k in state:
                assert torch.equal(back[k], state[k]), (layout, k)
        # and hf -> timm -> official through our official form
        hf_then_timm = to_layout(to_official(to_layout(state, "hf"), "x")[0], "timm")
        assert hf_then_timm.keys() == to_layout(state, "timm").keys()

    def test_hf_prefix_and_heads(self, small_models, tmp_path):
        spec, state, x, (ref_map, _) = small_models["dinov2_vits14"]
        hf = {f"dinov2.{k}": v for k, v in to_layout(state, "hf").items()}
        hf["classifier.weight"] = torch.zeros(1000, 768)
        write_safetensors(hf, tmp_path / "cls.safetensors")
        torch.testing.assert_close(output(load_backbone(tmp_path / "cls.safetensors"), x)[0], ref_map)

    def test_training_checkpoints(self, small_models, tmp_path):
        spec, state, x, (ref_map, _) = small_models["dinov2_vits14"]
        # DINO-style full checkpoint: teacher with module.backbone. and a head; DINOv2 chunked blocks
        wrapped = {"teacher": {f"module.backbone.{k}": v for k, v in state.items()}, "epoch": 3}
        wrapped["teacher"]["module.head.last_layer.weight"] = torch.zeros(10, 4)
        torch.save(wrapped, tmp_path / "full.pth")
        torch.testing.assert_close(output(load_backbone(tmp_path / "full.pth"), x)[0], ref_map)
        dinov2_training = {"model": {f"teacher.backbone.{k}": v for k, v in state.items()}, "iteration": 9}
        dinov2_training["model"].update({f"student.backbone.{k}": v for k, v in state.items()})
        dinov2_training["model"]["teacher.dino_head.mlp.0.weight"] = torch.zeros(3, 384)
        torch.save(dinov2_training, tmp_path / "dinov2_training.pth")
        torch.testing.assert_close(output(load_backbone(tmp_path / "dinov2_training.pth"), x)[0], ref_map)
        chunked = {re.sub(r"^blocks\.(\d+)\.", r"blocks.0.\1.", k): v for k, v in state.items()}
        torch.save(chunked, tmp_path / "chunked.pth")
        torch.testing.assert_close(output(load_backbone(tmp_path / "chunked.pth"), x)[0], ref_map)


class TestErrors:
    @pytest.fixture
    def state(self):
        return random_state_dict(ViTSpec.named("dinov2_vits14", depth=1), seed=0)

    def test_unknown_key_is_listed(self, state, tmp_path):
        state["blocks.0.attn.q_norm.weight"] = torch.ones(384)
        torch.save(state, tmp_path / "w.pth")
        with pytest.raises(
            CheckpointMismatchError, match=r"unexpected \(1\): blocks\.0\.attn\.q_norm\.weight"
        ):
            load_backbone(tmp_path / "w.pth")

    def test_wrong_shape_and_missing_are_listed(self, state, tmp_path):
        state["blocks.0.norm2.bias"] = torch.zeros(5)
        del state["blocks.0.ls2.gamma"]
        torch.save(state, tmp_path / "w.pth")
        with pytest.raises(CheckpointMismatchError) as info:
            load_backbone(tmp_path / "w.pth")
        message = str(info.value)
        assert "missing (1): blocks.0.ls2.gamma" in message
        assert "blocks.0.norm2.bias (file (5,) vs model (384,))" in message
        assert "w.pth" in message

    def test_not_a_vit(self, tmp_path):
        torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "r.pth")
        with pytest.raises(CheckpointError, match="not a DINO / DINOv2 ViT.*conv1.weight"):
            load_backbone(tmp_path / "r.pth")

    def test_family_mismatch(self, state, tmp_path):
        torch.save(state, tmp_path / "w.pth")
        with pytest.raises(CheckpointError, match="hold a dinov2 model .*not dino$"):
            load_backbone(tmp_path / "w.pth", family="dino")

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nope.safetensors"):
            load_backbone(tmp_path / "nope.safetensors")


class TestSafetensors:
    def test_round_trip_dtypes(self, tmp_path):
        tensors = {
            "a": torch.randn(3, 4),
            "b": torch.randn(2).to(torch.bfloat16),
            "c": torch.arange(5, dtype=torch.int64),
            "d": torch.randn(2, 2).half(),
            "e": torch.zeros(0, 3),
        }
        write_safetensors(tensors, tmp_path / "t.safetensors")
        back = read_safetensors(tmp_path / "t.safetensors")
        assert list(back) == list(tensors)
        for k, v in tensors.items():
            assert back[k].dtype == v.dtype and torch.equal(back[k], v), k

    def test_format_bytes(self, tmp_path):
        # a file built by hand from the specification: u64 header size, JSON, little-endian data
        header = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        (tmp_path / "h.safetensors").write_bytes(
            struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.5, -2.0)
        )
        assert read_safetensors(tmp_path / "h.safetensors")["x"].tolist() == [1.5, -2.0]

    def test_corrupt(self, tmp_path):
        path = tmp_path / "bad.safetensors"
        write_safetensors({"x": torch.zeros(4)}, path)
        path.write_bytes(path.read_bytes()[:-4])
        with pytest.raises(CheckpointError, match=r"bad.safetensors.*tensor 'x'"):
            read_safetensors(path)
        path.write_bytes(b"\xff" * 16)
        with pytest.raises(CheckpointError, match="not a safetensors file"):
            read_safetensors(path)


def test_public_api(tmp_path):
    spec = ViTSpec.named("dino_vits16", depth=1)
    torch.save(random_state_dict(spec), tmp_path / "dino_deitsmall16_pretrain.pth")
    vit = partdisco.load_backbone(tmp_path / "dino_deitsmall16_pretrain.pth")
    assert vit.spec.family == "dino" and vit.spec.patch_size == 16
    assert detect_vit_layout(vit.state_dict()) == "official"
