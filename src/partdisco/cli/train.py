"""``partdisco train [key=value ...]``: train a part segmenter."""

from __future__ import annotations

import argparse

from partdisco.cli._options import add_command, config_keys_help


def add_parser(sub: argparse._SubParsersAction, preset: str | None = None) -> None:
    """Attach the ``train`` subcommand; its help lists the values of ``preset`` (default synthetic)."""
    p = add_command(
        sub,
        "train",
        help="train a part segmenter (default: built-in synthetic data, CPU-friendly)",
        description=(
            "Train a part segmenter. Arguments are key=value overrides of the run config, applied on top of "
            "the preset chosen with dataset=NAME. Examples:\n"
            "  partdisco train\n"
            "  partdisco train dataset=folder data.root=DIR model.num_parts=4 train.steps=2000 out=runs/x\n"
            "  partdisco train dataset=folder data.root=DIR recipe=cpu\n"
            "      (real photos on a CPU: the pip-installed ImageNet EfficientNet-Lite0 as trunk and phi,\n"
            "      the foreground discovered from what recurs across the photos, 400 steps at 128 px)\n"
            "  partdisco train data.masks=ignore          (learn the foreground without masks)\n"
            "  partdisco train resume=runs/x            (continue a killed run)"
        ),
        epilog=config_keys_help(preset),
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (see the list below)")
    p.add_argument(
        "--config",
        metavar="YAML",
        help="a YAML file of values (e.g. a run's config.yaml); key=value arguments win over it, and a "
        "dataset= that differs from the file's applies that preset under the file's other values",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and exit (no checks of folders and files: data.root may be unset)",
    )


def run(args: argparse.Namespace) -> int:
    """Resolve the config and train."""
    import yaml

    from partdisco.api import resolve_train_config, train
    from partdisco.config import load_config, split_overrides

    if args.print_config:
        if split_overrides(args.overrides, keys=("resume",)).resume is not None:
            cfg = resolve_train_config(args.overrides, config_file=args.config)
        else:
            cfg = load_config(None, args.overrides, config_file=args.config, check=False)
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    cfg = resolve_train_config(args.overrides, config_file=args.config)
    run_dir = train(cfg)
    print(run_dir)
    return 0
