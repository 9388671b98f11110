"""Command-line interface: ``partdisco {train,eval,segment,convert,data,export}``.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``; ``main`` maps the
name to the module. Errors that are the user's (a bad key, a missing file) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from partdisco import __version__
from partdisco.cli._options import preset_from_argv
from partdisco.config import ConfigError

COMMANDS = {
    "train": "partdisco.cli.train",
    "eval": "partdisco.cli.eval",
    "segment": "partdisco.cli.segment",
    "convert": "partdisco.cli.convert",
    "data": "partdisco.cli.data",
    "export": "partdisco.cli.export",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser with every subcommand attached.

    ``argv`` lets ``partdisco train dataset=NAME --help`` list the values of that preset.
    """
    parser = argparse.ArgumentParser(
        prog="partdisco",
        description="Unsupervised object part discovery: train, evaluate and run part segmenters.",
    )
    parser.add_argument("--version", action="version", version=f"partdisco {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    preset = preset_from_argv(list(argv or []))
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        if name == "train":
            module.add_parser(sub, preset=preset)
        else:
            module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        logging.getLogger("partdisco").debug("error", exc_info=True)
        print(f"partdisco {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"partdisco {args.command}: interrupted", file=sys.stderr)
        return 130
