"""Command-line interface: ``partdisco {train,eval,segment,convert,data,export}``.

Each subcommand module defines ``add_parser(subparsers)`` and ``run(args) -> int``; ``main`` maps the
name to the module. Errors that are the user's (a bad key, a missing file) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import errno
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


MAX_MESSAGE = 2000  # characters of an error message printed; the rest is cut
_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "no permission: write elsewhere",
    errno.EPERM: "no permission: write elsewhere",
}


def _is_ours(err: BaseException) -> bool:
    from partdisco.api import is_training_divergence

    return is_training_divergence(err)


def one_line(err: BaseException) -> str:
    """An exception as one bounded line: OS errors name the file and the way out, newlines are joined."""
    if isinstance(err, OSError) and err.errno in _OS_HINTS and not isinstance(err, FileNotFoundError):
        where = f" ({err.filename})" if err.filename else ""
        text = f"{err.strerror or err}{where}; {_OS_HINTS[err.errno]}"
    else:
        text = str(err)
    text = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + f"... ({len(text)} characters)"


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
    args, extra = parser.parse_known_args(argv)
    # key=value after an option (``eval CKPT --quiet split=test``): argparse stops filling a positional
    # list at the first option, so the rest lands here; it belongs to the overrides.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.parse_args(argv)  # the usual "unrecognized arguments" error and exit code 2
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except (ConfigError, OSError, ValueError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not _is_ours(err):
            raise  # a bug or a torch failure: keep the traceback
        logging.getLogger("partdisco").debug("error", exc_info=True)
        print(f"partdisco {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"partdisco {args.command}: interrupted", file=sys.stderr)
        return 130
