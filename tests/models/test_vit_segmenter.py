"""model.arch=vit and model.features=dino|dinov2: the ViT as segmenter trunk and as phi, end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import partdisco
from partdisco.api import evaluate_checkpoint, resolve_train_config
from partdisco.config import ModelConfig
from partdisco.engine.inference import segment_images
from partdisco.engine.train import fit
from partdisco.models import (
    IMAGENET,
    CheckpointError,
    ViTFeatures,
    ViTSegmenter,
    build_feature_extractor,
    build_segmenter,
    export_checkpoint,
    load_segmenter,
)
from partdisco.models.vit import ViTSpec
from partdisco.models.vit_backbone import file_sha256, load_backbone, random_state_dict
from partdisco.models.vit_files import to_layout, write_safetensors

SPEC = ViTSpec.named("dinov2_vits14_reg", depth=2)


@pytest.fixture(scope="module")
def vit_file(tmp_path_factory):
    """A DINOv2 ViT-S/14-reg (2 blocks, real per-tensor shapes) in the Hugging Face layout, .safetensors."""
    path = tmp_path_factory.mktemp("w") / "dinov2-small-reg.safetensors"
    write_safetensors(to_layout(random_state_dict(SPEC, seed=5), "hf"), path)
    return path


class TestViTSegmenter:
    def test_shapes_and_stride(self, vit_file):
        seg = ViTSegmenter(load_backbone(vit_file), num_parts=4, background_channel=True)
        assert seg.out_channels == 5 and seg.preprocess == IMAGENET
        x = seg.preprocess(torch.rand(2, 3, 56, 84))
        assert seg(x).shape == (2, 5, 4, 6)
        assert seg.output_size(56, 84) == (4, 6)
        # not multiples of 14: resized to the nearest multiples (96 -> 98, 50 -> 56)
        assert (
            seg(seg.preprocess(torch.rand(1, 3, 96, 50))).shape
            == (1, 5, 7, 4)
            == (1, 5, *seg.output_size(96, 50))
        )

    def test_frozen_by_default(self, vit_file):
        seg = ViTSegmenter(load_backbone(vit_file), num_parts=3)
        assert not any(p.requires_grad for p in seg.backbone.parameters())
        features = seg.forward_features(seg.preprocess(torch.rand(2, 3, 28, 28)))
        assert not features.requires_grad  # the whole ViT ran under no_grad
        seg(seg.preprocess(torch.rand(2, 3, 28, 28))).sum().backward()
        assert all(p.grad is not None for p in seg.layer5.parameters())
        groups = seg.param_groups(1e-3, 1e-2)
        assert [len(g["params"]) for g in groups] == [0, 8]

    def test_finetune_last_blocks(self, vit_file):
        seg = ViTSegmenter(load_backbone(vit_file), num_parts=3, finetune_blocks=1).train()
        trained = {n for n, p in seg.backbone.named_parameters() if p.requires_grad}
        assert trained and all(n.startswith(("blocks.1.", "norm.")) for n in trained)
        assert "norm.weight" in trained and "blocks.1.attn.qkv.weight" in trained
        seg(seg.preprocess(torch.rand(2, 3, 28, 42))).square().mean().backward()
        for name, p in seg.backbone.named_parameters():
            assert (p.grad is not None) == (name in trained), name
        assert not seg.backbone.training  # no dropout anywhere: the ViT stays in eval mode

    def test_finetune_equals_full_forward(self, vit_file):
        vit = load_backbone(vit_file)
        seg = ViTSegmenter(vit, num_parts=3, finetune_blocks=1).eval()
        x = IMAGENET(torch.rand(1, 3, 42, 28))
        torch.testing.assert_close(seg.forward_features(x), load_backbone(vit_file)(x), rtol=0, atol=0)

    def test_bad_finetune_blocks(self, vit_file):
        with pytest.raises(ValueError, match="finetune_blocks must be between 0 and the ViT's 2 blocks"):
            ViTSegmenter(load_backbone(vit_file), num_parts=3, finetune_blocks=3)
        cfg = ModelConfig(arch="vit", init_from=str(vit_file), finetune_blocks=5)
        with pytest.raises(
            ValueError, match="model.finetune_blocks=5 but dinov2_vits14_reg_depth2 has 2 blocks"
        ):
            build_segmenter(cfg)
        with pytest.raises(ValueError, match="model.vit: unknown ViT 'vit_huge'"):
            build_segmenter(ModelConfig(arch="vit", vit="vit_huge"))

    def test_build_from_config_loads_the_file(self, vit_file):
        seg = build_segmenter(
            ModelConfig(arch="vit", num_parts=4, init_from=str(vit_file), finetune_blocks=1)
        )
        assert isinstance(seg, ViTSegmenter) and seg.finetune_blocks == 1
        reference = load_backbone(vit_file).state_dict()
        for k, v in seg.backbone.state_dict().items():
            assert torch.equal(v, reference[k]), k

    def test_random_init_by_name(self):
        torch.manual_seed(0)
        seg = build_segmenter(ModelConfig(arch="vit", vit="dino_vits16", num_parts=2))
        assert seg.spec.name == "dino_vits16" and seg.backbone.source == {}
        assert 0.01 < seg.backbone.pos_embed.std() < 0.03  # trunc_normal(0.02), not zeros

    def test_checkpoint_is_self_contained(self, vit_file, tmp_path):
        copy = tmp_path / "vit.safetensors"
        copy.write_bytes(vit_file.read_bytes())
        seg = ViTSegmenter(
            load_backbone(copy), num_parts=4, background_channel=True, finetune_blocks=1
        ).eval()
        path = export_checkpoint(seg, tmp_path / "seg.pt")
        copy.unlink()  # the checkpoint must not need the ViT file
        back = load_segmenter(path)
        assert isinstance(back, ViTSegmenter) and back.finetune_blocks == 1 and back.background_channel
        backbone = back.config()["backbone"]
        assert backbone["name"] == "dinov2_vits14_reg_depth2" and backbone["family"] == "dinov2"
        assert backbone["embed_dim"] == 384 and backbone["num_registers"] == 4
        assert backbone["sha256"] == file_sha256(vit_file) and backbone["layout"] == "hf"
        x = seg.preprocess(torch.rand(2, 3, 42, 56))
        with torch.no_grad():
            torch.testing.assert_close(back(x), seg(x), rtol=0, atol=0)
        vit_back = load_backbone(path)  # our checkpoint gives back its ViT (the part head is dropped)
        assert vit_back.source["layout"] == "official"
        with torch.no_grad():
            torch.testing.assert_close(vit_back(x), seg.backbone(x), rtol=0, atol=0)
        loaded = partdisco.load(path)
        assert isinstance(loaded, ViTSegmenter) and not loaded.training

    def test_segment_images(self, vit_file):
        seg = ViTSegmenter(load_backbone(vit_file), num_parts=3, background_channel=True).eval()
        images = [torch.randint(0, 255, (40, 30, 3), dtype=torch.uint8).numpy() for _ in range(2)]
        maps = segment_images(seg, images, size=56, batch_size=2, with_probs=False)
        assert len(maps) == 2 and maps[0].labels.shape == (40, 30) and maps[0].labels.max() <= 3
        assert maps[0].background == "model"


def test_a_vit_file_is_not_a_segmenter(tmp_path):
    torch.save(random_state_dict(ViTSpec.named("dino_vits16", depth=1)), tmp_path / "dino.pth")
    with pytest.raises(CheckpointError, match="dino.pth.*holds a ViT backbone.*model.arch=vit"):
        load_segmenter(tmp_path / "dino.pth")


class TestViTFeatures:
    def test_features_equal_the_upsampled_tokens(self, vit_file):
        phi = build_feature_extractor("dinov2", vit_file)
        assert isinstance(phi, ViTFeatures) and phi.out_channels == 384
        image = torch.rand(2, 3, 50, 64)
        out = phi(image)
        assert out.shape == (2, 384, 50, 64) and not out.requires_grad
        tokens = load_backbone(vit_file)(
            F.interpolate(IMAGENET(image), size=(56, 70), mode="bilinear", align_corners=False)
        )
        expected = F.interpolate(tokens, size=(50, 64), mode="bilinear", align_corners=True)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
        phi.train()
        assert not phi.training and not any(p.requires_grad for p in phi.parameters())

    def test_family_is_checked(self, vit_file):
        with pytest.raises(CheckpointError, match="hold a dinov2 model .*not dino"):
            build_feature_extractor("dino", vit_file)


@pytest.mark.slow
def test_train_eval_segment_end_to_end(vit_file, tiny_overrides, tmp_path):
    cfg = resolve_train_config(
        [
            *tiny_overrides,
            "data.image_size=28",
            "model.arch=vit",
            f"model.init_from={vit_file}",
            "model.finetune_blocks=1",
            "model.background_channel=true",
            "model.features=dinov2",
            f"model.features_weights={vit_file}",
            "train.steps=2",
        ]
    )
    run = fit(cfg)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["px_fg_nmi"] <= 100.0
    ckpt = torch.load(run / "model.pt", weights_only=True)
    assert ckpt["model_config"]["backbone"]["sha256"] == file_sha256(vit_file)
    assert any(k.startswith("backbone.blocks.1.") for k in ckpt["model"])
    model = partdisco.load(run / "model.pt")
    assert isinstance(model, ViTSegmenter) and model.out_channels == 5
    again, path = evaluate_checkpoint(run / "model.pt", progress=False, regression=False)
    assert again["px_fg_nmi"] == pytest.approx(metrics["px_fg_nmi"], abs=1e-6)
    from partdisco.cli import main

    out = tmp_path / "parts"
    assert main(["segment", str(run / "model.pt"), str(run / "parts.png"), "--out", str(out), "--quiet"]) == 0
    assert (out / "labels" / "parts.png").is_file()
