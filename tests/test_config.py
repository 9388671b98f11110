from pathlib import Path

import pytest
import yaml

from partdisco.config import (
    PRESETS,
    ConfigError,
    RunConfig,
    config_from_dict,
    load_config,
    preset_path,
    save_config,
)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_parses(preset):
    cfg = load_config(preset, check=False)
    assert cfg.dataset == preset and cfg.data.name == preset


def test_defaults_are_reference_values():
    cfg = RunConfig()
    assert (
        cfg.loss.lambda_eqv,
        cfg.loss.lambda_feat,
        cfg.loss.lambda_color,
        cfg.loss.lambda_contrastive,
    ) == (
        5700.0,
        5.0,
        30.0,
        2300.0,
    )
    assert cfg.loss.temperature == 0.19 and cfg.train.batch_size == 6 and cfg.optim.clip_grad == 5.0
    assert cfg.optim.lr == 1e-5 and cfg.optim.head_lr_mult == 10.0 and cfg.model.num_parts == 4


def test_overrides_are_typed():
    cfg = load_config(
        "synthetic",
        ["model.num_parts=6", "optim.lr=0.5", "log.wandb=false", "data.cub_classes=1,2,3", "out=x"],
    )
    assert cfg.model.num_parts == 6 and cfg.optim.lr == 0.5 and cfg.log.wandb is False
    assert cfg.data.cub_classes == [1, 2, 3] and cfg.out == "x"
    # "none" on model.init_from is kept as the string: random init on purpose, distinct from "not given"
    assert load_config("synthetic", ["model.init_from=none"]).model.init_from == "none"
    assert load_config("synthetic", ["model.features_weights=none"]).model.features_weights is None


@pytest.mark.parametrize(
    "override, match",
    [
        ("model.num_part=4", "unknown config key 'model.num_part'"),
        ("nonsense=1", "unknown config key 'nonsense'"),
        ("model.num_parts=four", "model.num_parts: expected an integer"),
        ("model.num_parts=1", "model.num_parts: must be >= 2"),
        ("train.batch_size=1", "train.batch_size: must be >= 2"),
        ("log.wandb=maybe", "log.wandb: expected true/false"),
        ("train.precision=fp8", "train.precision"),
        ("model.arch=swin", "model.arch"),
        ("model.finetune_blocks=-1", "model.finetune_blocks: must be >= 0"),
        ("model.features=dinov2", "model.features_weights: features=dinov2 needs"),
        ("train.steps", "expected key=value"),
        ("model=3", "is a section"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("synthetic", [override])


def test_missing_data_root_and_folder(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        load_config("folder", ["model.features=texture"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("folder", [f"data.root={tmp_path / 'nope'}", "model.features=texture"])


def test_vgg_needs_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="model.features_weights"):
        load_config("cub", [f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(
            "cub",
            [
                f"data.root={tmp_path}",
                "model.init_from=none",
                f"model.features_weights={tmp_path / 'vgg.pth'}",
            ],
        )


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config("synthetic", ["model.num_parts=5", "data.cub_classes=[1, 2]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(None, [], config_file=tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict(cfg.to_dict()) == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"]["num_parts"] == 5


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, [], config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  num_partz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model.num_partz"):
        load_config(None, [], config_file=bad)


def test_preset_conflict_and_unknown():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_path("imagenet")
    with pytest.raises(ConfigError, match="conflicts"):
        load_config("synthetic", ["dataset=cub"])
    assert Path(preset_path("cub")).is_file()


def test_recipe_cpu_is_download_free_and_overridable() -> None:
    import tempfile

    from partdisco.config import ConfigError, load_config

    root = tempfile.mkdtemp()
    with pytest.raises(ConfigError, match="recipe=cpu"):
        load_config("folder", [f"data.root={root}"])
    cfg = load_config("folder", [f"data.root={root}", "recipe=cpu", "train.steps=7"])
    assert cfg.recipe == "cpu" and cfg.model.features == "efficientnet"
    assert cfg.model.arch == "efficientnet_lite0"
    assert cfg.data.foreground == "discover" and cfg.model.normalization == "lite"
    assert cfg.data.image_size == 128 and cfg.train.steps == 7 and cfg.data.name == "folder"
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_config("folder", [f"data.root={root}", "recipe=gpu"])


def test_data_masks_mode_checked() -> None:
    from partdisco.config import ConfigError, load_config

    assert load_config("synthetic", ["data.masks=ignore"]).data.masks == "ignore"
    with pytest.raises(ConfigError, match="data.masks"):
        load_config("synthetic", ["data.masks=maybe"])


def test_validate_eval_is_the_one_check_of_eval_full_images() -> None:
    from partdisco.config import EvalConfig, validate_eval

    for mode in ("off", "mask", "predicted"):
        assert validate_eval(EvalConfig(full_images=mode), data_name="folder").full_images == mode
    with pytest.raises(ConfigError, match="eval.full_images: must be off, mask or predicted, got 'all'"):
        validate_eval(EvalConfig(full_images="all"))
    with pytest.raises(ConfigError, match="folder data sets only"):
        validate_eval(EvalConfig(full_images="mask"), data_name="synthetic")
    validate_eval(EvalConfig(full_images="mask"))  # training never scores whole images: no data set rule
    with pytest.raises(ConfigError, match="eval.full_images"):
        load_config("synthetic", ["model.features=texture", "eval.full_images=all"])


def test_synthetic_preset_trains_mask_free_reference_presets_keep_masks():
    # the synthetic preset is our demo and the built-in check of mask-free training (issue #13)
    assert load_config("synthetic").data.masks == "ignore"
    assert load_config("synthetic", ["data.masks=auto"]).data.masks == "auto"
    for preset in ("cub", "deepfashion", "pascal_part", "folder"):
        assert load_config(preset, check=False).data.masks == "auto", preset
    assert load_config("folder", ["recipe=cpu"], check=False).data.masks == "auto"
