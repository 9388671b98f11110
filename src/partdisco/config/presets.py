"""The shipped presets and recipes (``config/presets/*.yaml``) and building a run config from them.

:func:`load_config` is the one way a run config is made: defaults -> preset (``dataset=``) -> recipe
(``recipe=``) -> an optional YAML file -> ``key=value`` overrides, then :func:`~.validate.validate`.
The YAML files ship as package data (pyproject ``[tool.setuptools.package-data]``); the recipes are
whatever ``presets/recipe-NAME.yaml`` files there are (:data:`~.schema.RECIPES`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from partdisco.config.overrides import apply_overrides, merge_dict, short_repr, split_overrides
from partdisco.config.schema import PRESET_FOLDER, PRESETS, RECIPES, ConfigError, RunConfig
from partdisco.config.validate import validate
from partdisco.fileio import write_text


def _shipped(name: str) -> Path:
    """Path of a file in the shipped presets folder."""
    return Path(str(resources.files("partdisco.config") / PRESET_FOLDER / name))


def preset_path(name: str) -> Path:
    """Path of a shipped preset YAML."""
    if name not in PRESETS:
        raise ConfigError(f"dataset: unknown preset {name!r}; choose from {PRESETS}")
    return _shipped(f"{name}.yaml")


def recipe_path(name: str) -> Path:
    """Path of a shipped recipe YAML (``recipe=cpu`` -> ``config/presets/recipe-cpu.yaml``)."""
    if name not in RECIPES:
        raise ConfigError(f"recipe: unknown recipe {name!r}; choose from {RECIPES}")
    return _shipped(f"recipe-{name}.yaml")


def _read_config_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; ConfigError naming the file when it cannot be one."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {str(path)!r} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}); save it as UTF-8 YAML"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"config file {str(path)!r} nests too deep or is too large to read") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {str(path)!r}: expected a mapping (key: value lines) at the top level, "
            f"got a {type(values).__name__}"
        )
    return values


def load_config(
    preset: str | None = None,
    overrides: list[str] | None = None,
    config_file: str | Path | None = None,
    check: bool = True,
) -> RunConfig:
    """Build a RunConfig: defaults -> preset -> optional YAML file -> ``key=value`` overrides.

    Args:
        preset: preset name (``synthetic``, ``cub``, ...). ``None`` takes ``dataset=`` from the overrides
            or the file, else ``synthetic``.
        overrides: ``key=value`` strings, dotted keys (``model.num_parts=4``).
        config_file: a YAML file with the same nested keys (e.g. a run's saved ``config.yaml``).
        check: run :func:`validate` (file existence, ranges).

    Returns:
        The resolved, validated config.

    Raises:
        ConfigError: an unknown key, a wrong type or an invalid value; the message names it.
    """
    given = split_overrides(overrides or [], keys=("dataset", "recipe"))
    file_values: dict[str, Any] = {}
    if config_file is not None:
        file_values = _read_config_file(Path(config_file))
    if preset is None:
        file_data = file_values.get("data") if isinstance(file_values.get("data"), dict) else {}
        preset = (
            given.dataset
            or file_values.get("dataset")
            or file_data.get("name")  # a hand-written file may name its data set only there
            or "synthetic"
        )
    if not isinstance(preset, str):
        raise ConfigError(f"dataset: expected a preset name from {PRESETS}, got {short_repr(preset)}")
    cfg = RunConfig()
    preset_file = preset_path(str(preset))
    merge_dict(cfg, yaml.safe_load(preset_file.read_text()) or {}, source=str(preset_file))
    cfg.dataset = str(preset)
    if given.dataset is not None and given.dataset != preset:
        raise ConfigError(f"dataset={given.dataset!r} conflicts with preset {preset!r}")
    recipe = given.recipe or file_values.get("recipe")
    if recipe is not None and str(recipe).lower() not in ("none", "null", ""):
        recipe_file = recipe_path(str(recipe))
        merge_dict(cfg, yaml.safe_load(recipe_file.read_text()) or {}, source=str(recipe_file))
        cfg.recipe = str(recipe)
    if file_values:
        # resume= is a command-line word only: a run's config.yaml records the resume that made it, and
        # reusing that file as --config with out=NEW must start NEW, not continue the old run
        file_values = {k: v for k, v in file_values.items() if k not in ("recipe", "resume")}
        merge_dict(cfg, file_values_for_preset(file_values, str(preset)), source=str(config_file))
    apply_overrides(cfg, list(given.rest))
    return validate(cfg) if check else cfg


def file_values_for_preset(values: Any, preset: str) -> Any:
    """A config file's values to merge over ``preset`` (the command line's ``dataset=`` wins).

    A file written for another data set (e.g. a synthetic run's ``config.yaml`` reused with
    ``dataset=folder``) keeps all its other values, but not its ``dataset`` and ``data.name``: the preset of
    the command line is applied first and the file's other keys on top of it, so the data set the user
    asked for is the one trained on.

    Example:
        >>> file_values_for_preset({"dataset": "synthetic", "data": {"name": "synthetic", "image_size": 96}},
        ...                        "folder")
        {'data': {'image_size': 96}}
    """
    if not isinstance(values, dict):
        return values
    data = values.get("data") if isinstance(values.get("data"), dict) else {}
    if (values.get("dataset") or data.get("name") or preset) == preset:
        return values
    kept = {k: v for k, v in values.items() if k != "dataset"}
    if isinstance(kept.get("data"), dict):
        kept["data"] = {k: v for k, v in kept["data"].items() if k != "name"}
    return kept


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
