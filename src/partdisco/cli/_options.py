"""Shared CLI helpers: the list of every config key for ``--help``."""

from __future__ import annotations

import dataclasses
import typing

from partdisco.config import PRESETS, RunConfig


def _type_name(tp: object) -> str:
    text = str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


def config_keys_help() -> str:
    """Every ``key=value`` override with its type and default, one per line."""
    lines = [f"presets (dataset=NAME): {', '.join(PRESETS)} (default synthetic)", "", "config keys:"]

    def walk(obj: object, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            else:
                lines.append(f"  {key}={value!r}  ({_type_name(hints[f.name])})")

    walk(RunConfig(), "")
    return "\n".join(lines)
