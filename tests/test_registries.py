"""One registry per choice (issue #12, 5): every named choice is listed once, in config.py, and everything
else (implementations, validation, --help, argparse choices, messages) agrees with that list."""

from __future__ import annotations

import argparse
from importlib import resources

import pytest

from partdisco import config
from partdisco.config import (
    ARCHS,
    CHOICES,
    DATASETS,
    FEATURE_SOURCES,
    PRESETS,
    PSEUDO_KEYS,
    RECIPES,
    ConfigError,
    load_config,
    split_overrides,
)


def test_every_data_set_has_its_module_and_preset() -> None:
    from partdisco.data import dataset_module, list_datasets

    assert list_datasets() == sorted(DATASETS)
    for name in DATASETS:
        assert callable(dataset_module(name).build)
    folder = resources.files("partdisco.config") / "presets"
    shipped = {e.name for e in folder.iterdir() if e.name.endswith(".yaml")}
    presets = {n[: -len(".yaml")] for n in shipped if not n.startswith("recipe-")}
    assert presets == set(PRESETS) == set(DATASETS)
    assert {f"recipe-{r}.yaml" for r in RECIPES} == shipped - {f"{p}.yaml" for p in PRESETS}
    assert RECIPES == ("cpu",)


def test_every_arch_is_built_and_nothing_else_registers() -> None:
    from partdisco.config import ModelConfig
    from partdisco.models import list_archs
    from partdisco.models.build import build_segmenter, register_arch
    from partdisco.models.resnet import TrunkSpec
    from partdisco.models.resnet_segmenter import ResNetArch
    from partdisco.models.segmenter import ArchSpec
    from partdisco.models.vit_segmenter import VIT_ARCH

    assert set(list_archs()) | {VIT_ARCH} == set(ARCHS)

    for arch in ARCHS:
        if arch == VIT_ARCH:
            continue
        assert build_segmenter(ModelConfig(arch=arch, num_parts=3, init_from="none")).arch == arch
    spec = ArchSpec(
        "resnet7", TrunkSpec("basic", (1, 1, 1, 1), "torchvision"), (0, 512), "imagenet", False, "x"
    )
    with pytest.raises(ValueError, match="config.ARCHS"):
        register_arch(ResNetArch(spec))


def test_every_feature_source_is_built() -> None:
    from partdisco.models import perceptual

    assert perceptual.FEATURE_SOURCES is FEATURE_SOURCES
    with pytest.raises(ValueError, match="choose from"):
        perceptual.build_feature_extractor("vgg16", None)


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("data.name", "imagenet"),
        ("data.cub_mask", "maybe"),
        ("data.cub_variant", "half"),
        ("data.deepfashion_variant", "half"),
        ("data.masks", "sometimes"),
        ("model.arch", "resnet7"),
        ("model.features", "vgg16"),
        ("model.normalization", "zscore"),
        ("model.init_from_format", "onnx"),
        ("optim.name", "lbfgs"),
        ("train.precision", "fp8"),
        ("eval.full_images", "whole"),
    ],
)
def test_validation_refuses_what_choices_do_not_list(key: str, bad: str) -> None:
    assert bad not in CHOICES[key]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        load_config("synthetic", ["model.features=texture", f"{key}={bad}"])
    for choice in CHOICES[key]:
        assert choice in str(err.value)  # the message lists the registry's names


@pytest.mark.parametrize(("key", "values"), [(k, v) for k, v in CHOICES.items() if "." in k])
def test_every_listed_choice_validates(key: str, values: tuple[str, ...]) -> None:
    if key in ("eval.split",):  # checked by the data sets, not by config
        return
    for value in values:
        extra = ["data.root=."] if key == "data.name" and value != "synthetic" else []
        if key == "model.features" and value in ("vgg19", "dino", "dinov2"):
            extra = [f"model.features_weights={__file__}"]
        load_config("synthetic", ["model.features=texture", f"{key}={value}", *extra])


def test_help_and_cli_choices_come_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from partdisco.cli import build_parser
    from partdisco.cli._options import _CHOICES, config_keys_help

    assert _CHOICES is CHOICES
    text = config_keys_help()
    assert "[" + " | ".join(ARCHS) + "]" in text and "[" + " | ".join(FEATURE_SOURCES) + "]" in text
    assert f"presets (dataset=NAME): {', '.join(PRESETS)}" in text
    parser = build_parser([])
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "check", "root", "--dataset", "imagenet"])
    err = capsys.readouterr().err
    assert all(repr(name) in err for name in DATASETS)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices  # every subcommand module imports


def test_no_other_module_spells_a_choice_list() -> None:
    """The tuples live in config/schema.py only (a grep-style guard against a second list creeping back)."""
    from pathlib import Path

    src = Path(config.__file__).parents[1]  # the partdisco package
    needles = [
        '"deeplab_r50_2branch", "vit"',
        '"vgg19_random", "texture"',
        '"deepfashion", "pascal_part", "folder"',
    ]
    for path in src.rglob("*.py"):
        if path == src / "config" / "schema.py":
            continue
        text = path.read_text()
        for needle in needles:
            assert needle not in text, f"{path} repeats a choice list ({needle})"


# ----------------------------------------------------------------------------------- pseudo-keys


class TestSplitOverrides:
    def test_takes_out_only_the_asked_keys_and_keeps_the_rest_as_written(self) -> None:
        ov = split_overrides(
            ["dataset=cub", " model.num_parts =5", "split=test", "resume=runs/x", "recipe=cpu"],
            keys=("dataset", "split"),
        )
        assert (ov.dataset, ov.split, ov.resume, ov.recipe) == ("cub", "test", None, None)
        assert ov.rest == (" model.num_parts =5", "resume=runs/x", "recipe=cpu")

    def test_all_pseudo_keys_by_default(self) -> None:
        ov = split_overrides(["resume=a", "recipe=cpu", "dataset=folder", "split=train", "seed=3"])
        assert (ov.resume, ov.recipe, ov.dataset, ov.split, ov.rest) == (
            "a",
            "cpu",
            "folder",
            "train",
            ("seed=3",),
        )
        assert set(PSEUDO_KEYS) == {"dataset", "recipe", "resume", "split"}

    def test_edge_cases(self) -> None:
        assert split_overrides([]) == config.Overrides()
        assert split_overrides([" dataset = cub"]).dataset == " cub"  # key stripped, value as written
        assert split_overrides(["dataset="]).dataset == ""
        assert split_overrides(["resume=a=b"]).resume == "a=b"  # the first = splits
        assert split_overrides(["dataset=cub", "dataset=cub"]).dataset == "cub"
        with pytest.raises(ConfigError, match="given twice"):
            split_overrides(["dataset=cub", "dataset=folder"])
        with pytest.raises(ConfigError, match="expected key=value"):
            split_overrides(["dataset"])
        with pytest.raises(ConfigError, match="expected key=value"):
            split_overrides(["=cub"])
        with pytest.raises(ConfigError, match="not pseudo-keys"):
            split_overrides(["a=b"], keys=("out",))
        assert split_overrides(["datasets=cub"]).rest == ("datasets=cub",)  # not a prefix match

    def test_every_caller_uses_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """load_config, the API (train, eval, data check) and the CLI parse pseudo-keys through it."""
        seen: list[tuple[str, ...]] = []
        real = config.split_overrides

        def spy(items, keys=tuple(PSEUDO_KEYS)):  # type: ignore[no-untyped-def]
            seen.append(tuple(keys))
            return real(items, keys)

        import partdisco.api as api
        import partdisco.cli._options as options
        from partdisco.config import presets

        for module in (presets, api, options):
            monkeypatch.setattr(module, "split_overrides", spy)
        load_config(None, ["dataset=synthetic", "model.features=texture"])
        api.resolve_train_config(["model.features=texture"])
        options.preset_from_argv(["train", "dataset=cub", "--help"])
        assert ("dataset", "recipe") in seen and ("resume", "dataset") in seen and ("dataset",) in seen

    def test_loader_semantics_are_unchanged(self) -> None:
        cfg = load_config(None, ["dataset=folder", "recipe=cpu", "data.root=."], check=False)
        assert (cfg.dataset, cfg.data.name, cfg.recipe) == ("folder", "folder", "cpu")
        with pytest.raises(ConfigError, match="conflicts with preset"):
            load_config("cub", ["dataset=folder"], check=False)
        with pytest.raises(ConfigError, match="unknown config key 'split'"):
            load_config(None, ["split=test"], check=False)  # train does not take split=
        assert load_config(None, ["resume=runs/x"], check=False).resume == "runs/x"  # a plain field there
        assert load_config(None, ["recipe="], check=False).recipe is None
