"""``key=value`` overrides and nested dicts merged into a :class:`RunConfig`, every value type-checked.

- :func:`parse_overrides` / :func:`split_overrides` (:class:`Overrides`): the one parser of ``key=value``
  words, pseudo-keys (``dataset=``, ``recipe=``, ``resume=``, ``split=``) taken out.
- :func:`apply_overrides`, :func:`merge_dict`, :func:`config_from_dict`: set dotted keys on a config; each
  value is coerced to its field's type (:func:`coerce`) or refused with a message naming the key, the value
  and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from partdisco.config.schema import FLOAT32_MAX, PSEUDO_KEYS, RANDOM_INIT, ConfigError, ModelConfig, RunConfig

_NULL_WORDS = ("none", "null", "~")
_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def short_repr(value: Any) -> str:
    """A bounded repr for messages: a YAML bomb or a huge value must not make the message itself huge."""
    limited = reprlib.Repr()
    limited.maxlevel, limited.maxlist, limited.maxdict, limited.maxstring, limited.maxother = 3, 6, 6, 80, 80
    limited.maxlong = 40
    return limited.repr(value)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to type ``tp`` or raise ConfigError naming ``key``.

    Example:
        >>> coerce("3", int, "k"), coerce("a,b", list[str], "k"), coerce("null", int | None, "k")
        (3, ['a', 'b'], None)
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _to_optional(value, typing.get_args(tp), key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return _to_list(value, inner, key)
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")


def _to_optional(value: Any, args: tuple[Any, ...], key: str) -> Any:
    """``X | None``: a null word (or None) is None where the type allows it, else the first inner type."""
    if value is None or (isinstance(value, str) and value.lower() in _NULL_WORDS):
        if type(None) in args:
            return None
    inner = [a for a in args if a is not type(None)]
    return coerce(value, inner[0], key)


def _to_list(value: Any, inner: Any, key: str) -> list[Any]:
    """A list from a list, a YAML ``[...]`` string or a comma-separated string; each item coerced."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = yaml.safe_load(text)
        elif text == "":
            value = []
        else:
            value = [v for v in text.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {short_repr(value)}")
    return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE_WORDS:
        return True
    if isinstance(value, str) and value.lower() in _FALSE_WORDS:
        return False
    raise ConfigError(f"{key}: expected true/false, got {short_repr(value)}")


def _to_int(value: Any, key: str) -> int:
    """An int, a whole float, or a string of either (``"1e3"`` -> 1000); never a bool."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            as_float = _float_or_none(value)
            if as_float is not None and as_float.is_integer():
                return int(as_float)
    raise ConfigError(f"{key}: expected an integer, got {short_repr(value)}")


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _to_float(value: Any, key: str) -> float:
    """A finite float32-range number from a number or a string; never a bool."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {short_repr(value)}")
    number: float | int | None = None
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str):
        number = _float_or_none(value)
    if number is None:
        raise ConfigError(f"{key}: expected a number, got {short_repr(value)}")
    try:
        number = float(number)
    except OverflowError:
        number = float("inf")
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise ConfigError(f"{key}: {short_repr(value)} is not a finite float32 number (|x| <= 3.4e38)")
    return number


def _to_str(value: Any, key: str) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"{key}: expected a string, got {short_repr(value)}")


_SCALARS: dict[type, Callable[[Any, str], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
}


def _set(obj: Any, dotted: str, value: Any, full_key: str | None = None) -> None:
    full_key = full_key or dotted
    head, _, rest = dotted.partition(".")
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        where = type(obj).__name__
        raise ConfigError(f"unknown config key {full_key!r} ({where} has: {', '.join(sorted(names))})")
    tp = _field_types(type(obj))[head]
    current = getattr(obj, head)
    if dataclasses.is_dataclass(current):
        if not rest:
            if not isinstance(value, dict):
                raise ConfigError(f"{full_key}: is a section; set one of its keys, e.g. {full_key}.KEY=VALUE")
            for k, v in value.items():
                _set(current, k, v, f"{full_key}.{k}")
            return
        _set(current, rest, value, full_key)
        return
    if rest:
        raise ConfigError(f"unknown config key {full_key!r} ({head!r} is not a section)")
    if (
        isinstance(obj, ModelConfig)
        and head == "init_from"
        and isinstance(value, str)
        and value.strip().lower() in ("none", "null", "random")
    ):
        setattr(obj, head, RANDOM_INIT)  # explicit random init, kept distinct from "not given" (None)
        return
    setattr(obj, head, coerce(value, tp, full_key))


def merge_dict(cfg: RunConfig, values: dict[str, Any], source: str = "config") -> RunConfig:
    """Merge a nested dict (e.g. from YAML) into ``cfg`` in place, type-checking every value."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"{source}: expected a mapping (key: value lines) at the top level, got {type(values).__name__}"
        )
    for key, value in values.items():
        try:
            _set(cfg, str(key), value)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return cfg


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    """Split ``key=value`` strings; raise ConfigError for an item without ``=``."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad override {item!r}: expected key=value, e.g. train.steps=2000")
        pairs.append((key.strip(), value))
    return pairs


@dataclass(frozen=True)
class Overrides:
    """``key=value`` words split into the pseudo-keys (:data:`PSEUDO_KEYS`) and the config keys.

    A pseudo-key that was not asked for (or not given) is None; ``rest`` keeps every other word as it was
    written, in order, for :func:`apply_overrides` / :func:`load_config`.
    """

    dataset: str | None = None
    recipe: str | None = None
    resume: str | None = None
    split: str | None = None
    rest: tuple[str, ...] = ()


def split_overrides(
    items: typing.Sequence[str], keys: typing.Iterable[str] = tuple(PSEUDO_KEYS)
) -> Overrides:
    """Take the pseudo-keys ``keys`` out of ``key=value`` words (the one parser of them).

    ``dataset=``, ``recipe=``, ``resume=`` and ``split=`` are read here and nowhere else: by the config
    loader, the API and the CLI.

    Keys are stripped (`` dataset =cub`` is ``dataset``), values are kept as written. A pseudo-key given twice
    with different values is an error; the same value twice is accepted. Words whose key is not in ``keys``
    stay in ``rest`` (so ``split=`` given to ``train``, which does not take it, reaches the config and is
    refused there as an unknown key).

    Args:
        items: the ``key=value`` words.
        keys: which pseudo-keys to take out (a subset of :data:`PSEUDO_KEYS`).

    Returns:
        The :class:`Overrides`.

    Raises:
        ConfigError: a word without ``=``, an unknown name in ``keys``, or a pseudo-key given twice with
            different values.

    Example:
        >>> ov = split_overrides(["dataset=cub", "model.num_parts=5", "split=test"], keys=("dataset",))
        >>> ov.dataset, ov.split, ov.rest
        ('cub', None, ('model.num_parts=5', 'split=test'))
    """
    keys = tuple(keys)
    unknown = sorted(set(keys) - set(PSEUDO_KEYS))
    if unknown:
        raise ConfigError(f"not pseudo-keys: {unknown}; the pseudo-keys are {list(PSEUDO_KEYS)}")
    found: dict[str, str] = {}
    rest: list[str] = []
    for item, (key, value) in zip(items, parse_overrides(list(items)), strict=True):
        if key not in keys:
            rest.append(item)
        elif key in found and found[key] != value:
            raise ConfigError(f"{key}= is given twice ({found[key]!r} and {value!r}); give it once")
        else:
            found[key] = value
    return Overrides(**found, rest=tuple(rest))


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``key=value`` strings to an existing config in place (type-checked)."""
    for key, value in parse_overrides(overrides):
        _set(cfg, key, value)
    return cfg


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from :meth:`RunConfig.to_dict` output (e.g. stored in a checkpoint)."""
    cfg = RunConfig()
    merge_dict(cfg, values, source="checkpoint config")
    return cfg
