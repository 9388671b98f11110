"""Typed run configuration: defaults -> preset YAML -> ``key=value`` overrides.

The reference presets (``cub``, ``deepfashion``, ``pascal_part``) set what a data set needs plus the
reference's fixed 100,000-step poly horizon, and refuse to start without pretrained backbone weights
(``model.init_from``) unless ``model.init_from=none`` is written explicitly. Overrides from the command line
are type-checked against the field they set, and every error names the key, the value and what was expected.

The rooms, bottom up:

- :mod:`.schema`: the named choices (:data:`CHOICES`, :data:`ARCHS`, ...), the limits, :class:`ConfigError`
  and the dataclasses of every section (:class:`RunConfig`, :class:`DataConfig`, ...).
- :mod:`.validate`: :func:`validate` (choices from the one table, ranges, cross-field rules).
- :mod:`.overrides`: ``key=value`` parsing (:func:`split_overrides`) and type coercion (:func:`merge_dict`).
- :mod:`.presets`: the shipped YAML files in ``config/presets/`` and :func:`load_config`.

Example:
    >>> cfg = load_config("synthetic", ["model.num_parts=5", "train.steps=10"])
    >>> cfg.model.num_parts, cfg.train.steps
    (5, 10)
"""

from partdisco.config.overrides import (
    Overrides,
    apply_overrides,
    coerce,
    config_from_dict,
    merge_dict,
    parse_overrides,
    split_overrides,
)
from partdisco.config.presets import (
    file_values_for_preset,
    load_config,
    preset_path,
    recipe_path,
    save_config,
)
from partdisco.config.schema import (
    ARCHS,
    CHOICES,
    DATASETS,
    FEATURE_SOURCES,
    FLOAT32_MAX,
    FOREGROUND_SOURCES,
    FULL_IMAGES,
    INIT_FORMATS,
    MASK_MODES,
    MAX_IMAGE_SIZE,
    MAX_PARTS,
    MAX_SEED,
    MIN_FG_REFINE_EPS,
    NORMALIZATION_CHOICES,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    PSEUDO_KEYS,
    RANDOM_INIT,
    RECIPES,
    REFERENCE_PRESETS,
    ConfigError,
    DataConfig,
    EvalConfig,
    LogConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
)
from partdisco.config.validate import (
    check_choices,
    validate,
    validate_data,
    validate_eval,
    validate_reference_init,
)

__all__ = [
    "ARCHS",
    "CHOICES",
    "DATASETS",
    "FEATURE_SOURCES",
    "FLOAT32_MAX",
    "FOREGROUND_SOURCES",
    "FULL_IMAGES",
    "INIT_FORMATS",
    "MASK_MODES",
    "MAX_IMAGE_SIZE",
    "MAX_PARTS",
    "MAX_SEED",
    "MIN_FG_REFINE_EPS",
    "NORMALIZATION_CHOICES",
    "OPTIMIZERS",
    "PRECISIONS",
    "PRESETS",
    "PSEUDO_KEYS",
    "RANDOM_INIT",
    "RECIPES",
    "REFERENCE_PRESETS",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LogConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "Overrides",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_choices",
    "coerce",
    "config_from_dict",
    "file_values_for_preset",
    "load_config",
    "merge_dict",
    "parse_overrides",
    "preset_path",
    "recipe_path",
    "save_config",
    "split_overrides",
    "validate",
    "validate_data",
    "validate_eval",
    "validate_reference_init",
]
