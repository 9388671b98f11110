"""The paper path is the paper's (issue #11): pretrained start, schedule, warp fill, provenance of weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from partdisco.config import ConfigError, LossConfig, ModelConfig, OptimConfig, load_config
from partdisco.engine.train import (
    Learner,
    StepInputs,
    draw_step,
    make_optimizer,
    set_train_mode,
    step_generator,
    train_step,
)
from partdisco.engine.train.precision import make_scaler
from partdisco.engine.train.schedule import lr_factor
from partdisco.geometry.warps import WARP_ALIGN, warp_grid
from partdisco.losses import Objective
from partdisco.models import build_feature_extractor, create_segmenter
from partdisco.models.build import build_segmenter, resolve_model_config
from partdisco.models.reader import load_segmenter
from partdisco.models.segmenter import CAFFE_RGB_QUIRK, IMAGENET

# --------------------------------------------------------------------------------------------------
# 1. Reference presets refuse a random backbone unless asked for


@pytest.mark.parametrize("preset", ["cub", "deepfashion", "pascal_part"])
def test_reference_preset_without_init_from_is_refused(tmp_path, preset):
    with pytest.raises(ConfigError) as err:
        load_config(preset, [f"data.root={tmp_path}"])
    message = str(err.value)
    assert message.startswith("model.init_from and model.features_weights:"), message
    assert "model.init_from=none" in message and "\n" not in message
    vgg = tmp_path / "vgg19-dcbb9e9d.pth"
    vgg.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^model.init_from: dataset="):
        load_config(preset, [f"data.root={tmp_path}", f"model.features_weights={vgg}"])
    cfg = load_config(
        preset, [f"data.root={tmp_path}", f"model.features_weights={vgg}", "model.init_from=none"]
    )
    assert cfg.model.init_from == "none"


def test_explicit_random_init_survives_the_saved_config(tmp_path):
    cfg = load_config("cub", [f"data.root={tmp_path}", "model.features=texture", "model.init_from=none"])
    from partdisco.config import save_config

    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(None, [], config_file=tmp_path / "config.yaml")
    assert again.model.init_from == "none"
    seg = build_segmenter(again.model)  # "none" = random init, no file looked up
    assert seg.arch == "deeplab_r50_2branch"


def test_other_presets_still_start_without_weights():
    assert load_config("synthetic", []).model.init_from is None


# --------------------------------------------------------------------------------------------------
# 3. Poly horizon of the reference presets


@pytest.mark.parametrize("preset", ["cub", "deepfashion", "pascal_part"])
def test_reference_presets_use_the_fixed_100k_poly_horizon(tmp_path, preset):
    cfg = load_config(preset, [f"data.root={tmp_path}", "model.features=texture", "model.init_from=none"])
    assert cfg.optim.schedule_steps == 100000
    # ref: lr at the released CUB checkpoint's 60k steps is 0.438 x base, whatever train.steps is
    assert round(lr_factor(60000, cfg.optim, cfg.train.steps), 3) == 0.438
    assert round(lr_factor(1000, cfg.optim, 2000), 4) == round(0.99**0.9, 4)


# --------------------------------------------------------------------------------------------------
# 4. The warped view: pixels from outside the image are the normalisation mean (zero network input)


def _capture_inputs(model: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("arch, preprocess", [("resnet18", IMAGENET), ("resnet18", CAFFE_RGB_QUIRK)])
def test_warped_view_out_of_bounds_pixels_are_zero_input(arch, preprocess):
    B, S = 3, 32
    gen = torch.Generator().manual_seed(0)
    image = 0.2 + 0.6 * torch.rand(B, 3, S, S, generator=gen)
    mask = torch.ones(B, 1, S, S)
    cfg = LossConfig(jitter_prob=0.0, grayscale_prob=0.0, scale_low=0.5, scale_high=0.6)  # zoom out
    model = create_segmenter(arch, num_parts=3, preprocess=preprocess)
    set_train_mode(model, freeze_bn=False)
    inputs_seen = _capture_inputs(model)
    learner = Learner(
        model=model,
        features_net=build_feature_extractor("texture", None),
        objective=Objective(cfg),
        optimizer=make_optimizer(model, OptimConfig()),
        scaler=make_scaler(torch.device("cpu"), "fp32"),
    )
    train_step(learner, StepInputs(image=image, fg_mask=mask), draw_step(1234, 0, cfg, B))
    assert len(inputs_seen) == 2
    # replay the step's warp draw: jitter for 2B views comes first, then the B warps
    from partdisco.engine.train import sample_step_jitter, sample_step_warps

    replay = step_generator(1234, 0)
    sample_step_jitter(2 * B, replay, cfg)
    grid = warp_grid(sample_step_warps(B, replay, cfg), (S, S))  # (B, S, S, 2)
    assert WARP_ALIGN  # pixel p sits at normalised -1 + 2 p / (S - 1)
    pixels = (grid + 1) * (S - 1) / 2
    outside = ((pixels < -1) | (pixels > S)).any(-1)  # every bilinear neighbour is outside the image
    assert outside.float().mean() > 0.1
    warped_input = inputs_seen[1].permute(0, 2, 3, 1)[outside]  # (N, 3)
    assert warped_input.abs().max() == 0.0  # = preprocess(mean colour): the reference's zero input
    inside_pixels = ((pixels >= 0) & (pixels <= S - 1)).all(-1)
    assert inputs_seen[1].permute(0, 2, 3, 1)[inside_pixels].abs().max() > 0.1


# --------------------------------------------------------------------------------------------------
# 2. Provenance of ResNet-50 weights: torchvision's run torchvision's bottleneck and normalisation


def _resnet50_file(path: Path) -> Path:
    """A raw ResNet-50 state dict (torchvision and Caffe files have the same keys), plus torchvision's fc."""
    torch.manual_seed(5)
    state = create_segmenter("resnet50", num_parts=2).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("layer5.")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    torch.save(state, path)
    return path


def _strides(seg) -> tuple[tuple[int, int], tuple[int, int]]:
    block = seg.layer2[0]
    return block.conv1.stride, block.conv2.stride


def test_torchvision_resnet50_runs_the_torchvision_trunk(tmp_path):
    path = _resnet50_file(tmp_path / "resnet50-0676ba61.pth")
    cfg = ModelConfig(arch="deeplab_r50_2branch", init_from=str(path))
    resolved = resolve_model_config(cfg)
    assert (resolved.init_from_format, resolved.normalization) == ("torchvision", "imagenet")
    seg = build_segmenter(cfg)
    assert _strides(seg) == ((1, 1), (2, 2)) and seg.maxpool.ceil_mode is False
    assert seg.preprocess == IMAGENET and seg.config()["trunk_style"] == "torchvision"
    assert seg.output_size(64, 64) == (8, 8)
    # the same file declared as Caffe (or named so) runs the reference trunk with the Caffe-mean input
    for seg_caffe in (
        build_segmenter(ModelConfig(init_from=str(path), init_from_format="caffe")),
        build_segmenter(ModelConfig(init_from=str(_resnet50_file(tmp_path / "resnet50-caffe-22edcc82.pth")))),
    ):
        assert _strides(seg_caffe) == ((2, 2), (1, 1)) and seg_caffe.maxpool.ceil_mode is True
        assert seg_caffe.preprocess == CAFFE_RGB_QUIRK and seg_caffe.config()["trunk_style"] == "caffe"
    # an explicit normalisation is honoured
    forced = build_segmenter(ModelConfig(init_from=str(path), normalization="caffe"))
    assert forced.preprocess == CAFFE_RGB_QUIRK and _strides(forced) == ((1, 1), (2, 2))
    with pytest.raises(ConfigError, match="model.init_from_format"):
        load_config("synthetic", ["model.init_from_format=tf"])


def test_provenance_is_recorded_and_rebuilt_by_load(tmp_path, tiny_overrides):
    from partdisco.api import load, resolve_train_config, train

    path = _resnet50_file(tmp_path / "resnet50-0676ba61.pth")
    overrides = [o for o in tiny_overrides if not o.startswith("model.arch")]
    cfg = resolve_train_config(
        [*overrides, "model.arch=deeplab_r50_2branch", f"model.init_from={path}", "train.steps=1"]
        + ["data.synthetic_test=2", "eval.baseline=false"]
    )
    run = train(cfg)
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["config"]["model"]["init_from_format"] == "torchvision"
    assert saved["config"]["model"]["normalization"] == "imagenet"
    assert saved["model_config"]["trunk_style"] == "torchvision"
    assert "init_from_format: torchvision" in (run / "config.yaml").read_text()
    for model in (load(run / "model.pt"), load_segmenter(run / "model.pt")):
        assert _strides(model) == ((1, 1), (2, 2)) and model.preprocess == IMAGENET
    # a checkpoint that only has the run config (no model_config) is rebuilt the same way
    from partdisco.models.checkpoint import segmenter_from_checkpoint_dict

    bare = dict(saved)
    bare.pop("model_config")
    rebuilt = segmenter_from_checkpoint_dict(bare)
    assert _strides(rebuilt) == ((1, 1), (2, 2)) and rebuilt.preprocess == IMAGENET
    x = torch.rand(1, 3, 32, 32)
    reference = load(run / "model.pt")
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(rebuilt.preprocess(x)), reference(reference.preprocess(x)))
    json.dumps(saved["config"])  # plain types


def test_old_checkpoint_without_trunk_style_keeps_the_arch_trunk():
    seg = create_segmenter("deeplab_r50_2branch", num_parts=2)
    config = seg.config()
    config.pop("trunk_style")
    from partdisco.models.build import segmenter_from_config

    assert _strides(segmenter_from_config(config)) == ((2, 2), (1, 1))
    assert copy.deepcopy(seg.config())["trunk_style"] == "caffe"


# --------------------------------------------------------------------------------------------------
# 9. Evaluation settings come from the checkpoint; the command line changes only what it names


def test_eval_on_another_folder_keeps_the_checkpoint_settings(tmp_path, tiny_overrides, monkeypatch):
    import partdisco.data
    from data.tiny_datasets import make_tiny_folder
    from partdisco.api import evaluate_checkpoint, evaluation_config, resolve_train_config, train
    from partdisco.config import config_from_dict

    run = train(resolve_train_config([*tiny_overrides, "train.steps=1", "data.synthetic_test=2"]))
    folder = make_tiny_folder(tmp_path / "photos")
    seen = []
    real_build = partdisco.data.build_dataset

    def spy(cfg, split, train, *args, **kwargs):
        seen.append(cfg)
        return real_build(cfg, split, train, *args, **kwargs)

    monkeypatch.setattr(partdisco.data, "build_dataset", spy)
    metrics, _ = evaluate_checkpoint(
        run / "model.pt",
        ["dataset=folder", f"data.root={folder}", "eval.baseline=false"],
        device="cpu",
        out=tmp_path / "m.json",
        regression=False,
        progress=False,
    )
    assert metrics["dataset"] == "folder"
    assert seen and all(c.name == "folder" and c.image_size == 32 for c in seen)  # not the preset's 256
    # only named keys change; a new data set needs its folder
    trained = config_from_dict(torch.load(run / "model.pt", weights_only=True)["config"])
    cfg = evaluation_config(trained, "folder", [f"data.root={folder}", "data.image_size=48"])
    assert (cfg.data.image_size, cfg.eval.batch_size, cfg.model.arch) == (48, 4, "resnet18")
    assert trained.data.name == "synthetic"  # not modified
    with pytest.raises(ConfigError, match=r"^dataset=folder: .*data.root=DIR"):
        evaluation_config(trained, "folder", [])


# --------------------------------------------------------------------------------------------------
# 10. `data check` takes the same key=value overrides as train


def test_data_check_takes_overrides(tmp_path, capsys):
    from data.tiny_datasets import make_tiny_pascal
    from partdisco.cli import main

    root = make_tiny_pascal(tmp_path)
    assert main(["data", "check", str(root), "--dataset", "pascal_part", "data.pascal_class=horse"]) == 0
    assert "horse_train.txt" in capsys.readouterr().out
    main(["data", "check", str(root), "--dataset", "pascal_part", "data.pascal_class=car"])
    out = capsys.readouterr().out
    assert "car_train.txt" in out and "MISSING" not in out
    assert main(["data", "check", str(root), "--dataset", "pascal_part", "data.pascal_class=cat"]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and "cat_train.txt" in out and "horse_train.txt" not in out
    assert main(["data", "check", str(root), "--dataset", "pascal_part", "data.pascal_clas=cat"]) == 2
    assert "data.pascal_clas" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# 5. CUB Full protocol with the supervised masks: the reference's labels for every mask encoding


def _reference_full_labels(logits: torch.Tensor, raw_mask: torch.Tensor) -> torch.Tensor:
    """CUB eval.ipynb: ``cat([1 - fg, fg * softmax])`` on the raw (To_tensor, not /255) mask, argmax."""
    return torch.cat([1 - raw_mask, raw_mask * torch.softmax(logits, 1)], 1).argmax(1)


@pytest.mark.parametrize("encoding", ["0/1", "0/255", "soft"])
def test_cub_sup_masks_give_the_reference_full_labels(tmp_path, encoding):
    import numpy as np
    from PIL import Image

    from data.tiny_datasets import CUB_IMAGES, make_tiny_cub
    from partdisco.config import DataConfig
    from partdisco.data import cub
    from partdisco.metrics.keypoints import logits_to_labels

    root = make_tiny_cub(tmp_path)
    image_id, rel_path, _, (height, width), _, _ = CUB_IMAGES[1]  # a test image, 48 x 64: no resize, no crop
    ys, xs = np.mgrid[0:height, 0:width]
    inside = (np.abs(ys - 24) < 14) & (np.abs(xs - 30) < 20)
    if encoding == "0/1":
        raw = inside.astype(np.uint8)
    elif encoding == "0/255":
        raw = inside.astype(np.uint8) * 255
    else:  # soft levels, including the faint 1 and 2 that the reference still calls foreground
        raw = np.where(inside, 255, (xs * 4) % 7).astype(np.uint8)
    Image.fromarray(raw).save(root.parent / "supervisedlabels" / Path(rel_path).with_suffix(".png"))
    data = cub.build(
        DataConfig(name="cub", root=str(root), image_size=48, cub_mask="sup", cub_variant="full"),
        "test",
        train=False,
    )
    index = next(i for i, r in enumerate(data.records) if r.rel_path == rel_path)
    sample = data[index]
    assert tuple(sample["fg_mask"].shape) == (1, height, width)
    logits = torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(image_id))
    ours = logits_to_labels(
        logits, (height, width), align_corners=False, fg_mask=sample["fg_mask"][None], background="mask"
    )
    raw_t = torch.from_numpy(raw.astype(np.float32))[None, None]
    assert torch.equal(ours, _reference_full_labels(logits, raw_t))
    assert (ours[0][torch.from_numpy(raw > 0)] > 0).all() and (ours[0][torch.from_numpy(raw == 0)] == 0).all()


# --------------------------------------------------------------------------------------------------
# 6. DeepFashion Full protocol (ref get_full_nmi_ari) and 7. Full metrics named for what they are


class _FixedLogits(torch.nn.Module):
    """A 'segmenter' whose logits depend only on pixel position (deterministic, any image size)."""

    num_parts = 3
    background_channel = False

    def preprocess(self, image01: torch.Tensor) -> torch.Tensor:
        return image01

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        ys, xs = torch.meshgrid(torch.linspace(0, 1, H // 4), torch.linspace(0, 1, W // 4), indexing="ij")
        logits = torch.stack([3 * xs, 3 * ys, 3 * (1 - xs) * (1 - ys)])  # (3, h, w)
        return logits.expand(B, -1, -1, -1) + 0 * x.mean()


@pytest.mark.parametrize("encoding", ["0/1", "0/255", "soft"])
def test_deepfashion_full_protocol_labels(tmp_path, encoding):
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from data.tiny_datasets import DF_IMAGES, df_labels, make_tiny_deepfashion
    from partdisco.config import DataConfig, EvalConfig
    from partdisco.data import deepfashion
    from partdisco.engine.evaluate import evaluate

    root = make_tiny_deepfashion(tmp_path)
    test_images = [(f, hw) for split, f, hw, _ in DF_IMAGES if split in ("query", "gallery")]
    raws = []
    for file_name, (height, width) in test_images:
        inside = df_labels(height, width) > 0
        ys, xs = np.mgrid[0:height, 0:width]
        raw = {
            "0/1": inside.astype(np.uint8),
            "0/255": inside.astype(np.uint8) * 255,
            "soft": np.where(inside, 255, (3 * xs + ys) % 5 * 60).astype(np.uint8),
        }[encoding]
        path = root.parent.parent / "supervisedlabels" / f"{file_name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw).save(path)
        raws.append(raw)
    # shorter side = 30 and 40: the query image (60 x 40) is resized, the gallery image (44 x 30) is not
    cfg = DataConfig(name="deepfashion", root=str(root), image_size=30, deepfashion_variant="full")
    data = deepfashion.build(cfg, "test", train=False)
    gallery = data[1]
    assert tuple(gallery["image"].shape) == (3, 44, 30)  # no padding to a square
    assert torch.equal(gallery["mask_levels"][0], torch.from_numpy(raws[1].astype(np.float32)))
    assert torch.equal(gallery["parts"], torch.from_numpy(df_labels(44, 30)))
    assert tuple(data[0]["image"].shape) == (3, 45, 30)  # 60 x 40 -> shorter side 30

    model = _FixedLogits()
    metrics = evaluate(model, data, EvalConfig(batch_size=1, baseline=False), torch.device("cpu"))
    # hand-computed reference labels: fg_mask (raw levels) * (argmax of align_corners=False logits + 1)
    gts, preds = [], []
    for i in range(len(data)):
        sample = data[i]
        H, W = sample["image"].shape[-2:]
        logits = model(sample["image"][None])
        logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        preds.append((sample["mask_levels"][0] * (logits.argmax(1)[0] + 1)).flatten().long().numpy())
        gts.append(sample["parts"].flatten().numpy())
    gt, pred = np.concatenate(gts), np.concatenate(preds)
    assert metrics["px_nmi"] == pytest.approx(100 * normalized_mutual_info_score(gt, pred), abs=1e-6)
    assert metrics["px_ari"] == pytest.approx(100 * adjusted_rand_score(gt, pred), abs=1e-6)
    assert "px_fg_nmi" not in metrics and "full_pixels" in metrics
    assert "published DeepFashion Full protocol" in metrics["protocol"]["full"]
    if encoding == "0/255":  # the reference's quirk: labels are 255 * (k + 1), not 1..K (unresized image)
        assert set(np.unique(preds[1]).tolist()) <= {0, 255, 510, 765}
        assert len(set(np.unique(preds[0]).tolist()) - {0, 255, 510, 765}) > 0  # resized: blended levels


def test_deepfashion_padded_full_is_named_for_what_it_is(tmp_path):
    from data.tiny_datasets import make_tiny_deepfashion
    from partdisco.config import DataConfig, EvalConfig
    from partdisco.data import deepfashion
    from partdisco.engine.evaluate import evaluate

    root = make_tiny_deepfashion(tmp_path)
    data = deepfashion.build(DataConfig(name="deepfashion", root=str(root), image_size=32), "test", False)
    metrics = evaluate(_FixedLogits(), data, EvalConfig(batch_size=1, baseline=False), torch.device("cpu"))
    assert "px_fg_nmi" in metrics and "px_nmi_padded_gtmask" in metrics and "px_nmi" not in metrics


@pytest.mark.parametrize(
    "variant, mask, key", [("fg", "gt", "kp_nmi_bbox_gtmask"), ("full", "sup", "kp_nmi")]
)
def test_cub_full_metrics_are_named_for_their_protocol(tmp_path, variant, mask, key):
    from data.tiny_datasets import make_tiny_cub
    from partdisco.config import DataConfig, EvalConfig
    from partdisco.data import cub
    from partdisco.engine.evaluate import evaluate

    root = make_tiny_cub(tmp_path)
    cfg = DataConfig(name="cub", root=str(root), image_size=32, cub_variant=variant, cub_mask=mask)
    metrics = evaluate(
        _FixedLogits(), cub.build(cfg, "test", False), EvalConfig(batch_size=1, baseline=False), "cpu"
    )
    full_keys = {k for k in metrics if k.startswith(("kp_nmi", "kp_ari"))}
    assert full_keys == {key, key.replace("nmi", "ari")}
    assert "kp_fg_nmi" in metrics
    assert ("not the published" in metrics["protocol"]["full"]) == (key != "kp_nmi")


def test_data_check_lists_the_deepfashion_full_protocol_masks(tmp_path, capsys):
    from data.tiny_datasets import make_tiny_deepfashion
    from partdisco.cli import main

    root = make_tiny_deepfashion(tmp_path)
    assert main(["data", "check", str(root), "--dataset", "deepfashion"]) == 0
    assert "supervisedlabels" in capsys.readouterr().out  # optional by default
    code = main(["data", "check", str(root), "--dataset", "deepfashion", "data.deepfashion_variant=full"])
    assert code == 1 and "MISSING" in capsys.readouterr().out
