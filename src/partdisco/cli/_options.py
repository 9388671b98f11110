"""Shared CLI helpers: arguments several commands take, and every config key for ``--help`` with its values.

:func:`add_command`, :func:`add_checkpoint_argument`, :func:`add_src_dst`, :func:`add_device_option`,
:func:`add_choice_option`
spell a subcommand or an argument once for ``train``, ``eval``, ``segment``, ``export`` and ``data``;
:func:`config_keys_help` lists the config keys with the chosen preset's values.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing

from partdisco.config import CHOICES, PRESETS, ConfigError, RunConfig, load_config, split_overrides

_COMMENT = re.compile(r"^    (\w+):[^=]*=.*?#\s*(.+)$")

# Meanings of the keys whose line in config/schema.py carries no comment (its comments win otherwise).
_MEANING = {
    "data.synthetic_train": "number of synthetic training images",
    "data.synthetic_test": "number of synthetic held-out (test) images",
    "data.synthetic_seed": "seed of the synthetic data set (an image is a function of seed, split, index)",
    "loss.jitter_prob": "probability of colour jitter per view (ref: lit_dataset.py)",
    "loss.brightness": "colour jitter: brightness range (ref: lit_dataset.py)",
    "loss.contrast": "colour jitter: contrast range (ref: lit_dataset.py)",
    "loss.saturation": "colour jitter: saturation range (ref: lit_dataset.py)",
    "loss.hue": "colour jitter: hue range (ref: lit_dataset.py)",
    "loss.grayscale_prob": "probability of turning a view grey (ref: lit_dataset.py)",
    "optim.warmup_steps": "linear learning-rate warm-up steps (0 = none, as the reference)",
    "train.channels_last": "channels-last memory format (faster with bf16 on CPU and GPU)",
    "train.compile": "torch.compile the model",
    "train.log_every": "log losses every N steps",
    "train.keep_checkpoints": "how many periodic checkpoints to keep in checkpoints/",
    "eval.split": "data set split to evaluate on",
    "eval.batch_size": "images per evaluation batch",
    "eval.max_images": "evaluate at most this many images (None = all)",
    "log.tensorboard": "write TensorBoard logs to RUN/tensorboard",
    "log.wandb": "also log to Weights & Biases (needs pip install 'partdisco[wandb]')",
    "log.wandb_project": "Weights & Biases project name",
    "loss.fg_area_max": "mask-free training: largest foreground fraction of an image (see loss.fg_area_min)",
}

# Allowed values of the keys that take a name: config.CHOICES, the list the validation reads.
_CHOICES = CHOICES


def _type_name(tp: object) -> str:
    text = str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None")


_FIELD = re.compile(r"^    (\w+):")


def _comments_above(source: str) -> dict[str, str]:
    """Field name -> the comment block on the lines just above it, joined into one line."""
    found: dict[str, str] = {}
    block: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        m = _FIELD.match(line)
        if m and block:
            found[m.group(1)] = " ".join(block)
        block = []
    return found


def key_meanings() -> dict[str, str]:
    """One line of meaning per config key: its comment in config/schema.py, else :data:`_MEANING`."""
    meanings: dict[str, str] = {}

    def walk(cls: type, prefix: str) -> None:
        comments = {m.group(1): m.group(2).strip() for line in inspect.getsource(cls).splitlines()
                    if (m := _COMMENT.match(line))}  # fmt: skip
        above = _comments_above(inspect.getsource(cls))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], key + ".")
            else:
                meanings[key] = comments.get(f.name) or _MEANING.get(key) or above.get(f.name, "")

    walk(RunConfig, "")
    return meanings


def preset_from_argv(argv: list[str]) -> str | None:
    """The ``dataset=NAME`` among command-line arguments when NAME is a preset, else None."""
    words = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        name = split_overrides(words, keys=("dataset",)).dataset
    except ConfigError:  # a malformed word: the parser proper reports it; --help shows the default
        return None
    return name if name in PRESETS else None


def config_keys_help(preset: str | None = None) -> str:
    """Every ``key=value`` override with the value ``preset`` resolves to, its type, meaning and choices."""
    preset = preset or "synthetic"
    cfg = load_config(preset, check=False)
    meanings = key_meanings()
    lines = [
        f"presets (dataset=NAME): {', '.join(PRESETS)} (default synthetic)",
        "",
        f"config keys, with the values dataset={preset} resolves to "
        f"(`partdisco train dataset=NAME --help` shows another preset's):",
    ]

    def walk(obj: object, prefix: str) -> None:
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
                continue
            choices = f" [{' | '.join(_CHOICES[key])}]" if key in _CHOICES else ""
            meaning = f"  {meanings[key]}" if meanings.get(key) else ""
            lines.append(f"  {key}={value!r}  ({_type_name(hints[f.name])}){choices}{meaning}")

    walk(cfg, "")
    return "\n".join(lines)


def add_command(
    sub: argparse._SubParsersAction, name: str, help: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand whose description and epilog keep their line breaks (they hold examples)."""
    return sub.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """The ``checkpoint`` positional of ``eval`` and ``segment``: what may be given as a model."""
    parser.add_argument(
        "checkpoint",
        help="a run folder (its model.pt), our checkpoint, a released unsup-parts .pth or a SCOPS state dict",
    )


def add_src_dst(parser: argparse.ArgumentParser, src: str, dst: str) -> None:
    """The ``SRC DST`` positionals of ``convert`` and ``export``, with their helps."""
    parser.add_argument("src", help=src)
    parser.add_argument("dst", help=dst)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default ``auto``), with the accepted values in its help."""
    parser.add_argument("--device", default="auto", help=f"{' | '.join(CHOICES['device'])} (default auto)")


def add_choice_option(
    parser: argparse.ArgumentParser, flag: str, choices: tuple[str, ...], default: str, help: str
) -> None:
    """An option that takes one of ``choices`` (``help`` says which is the default)."""
    parser.add_argument(flag, choices=choices, default=default, help=help)
