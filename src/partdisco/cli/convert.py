"""``partdisco convert SRC DST``: turn a released checkpoint into a partdisco checkpoint."""

from __future__ import annotations

import argparse

from partdisco.cli._options import add_src_dst


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Attach the ``convert`` subcommand."""
    p = sub.add_parser(
        "convert",
        help="convert a released unsup-parts / SCOPS checkpoint to the partdisco format",
        description=(
            "Read SRC (an unsup-parts training checkpoint {'iter','model_state_dict',...}, a raw SCOPS state "
            "dict, or one of ours), check every tensor, and write DST in the partdisco format with its "
            "config "
            "(K, architecture, normalisation, background channel), so eval/segment/train take it."
        ),
    )
    add_src_dst(p, "released checkpoint file", "output .pt file")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow full unpickling of SRC (only for files you trust; needed by some old checkpoints)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert and report what was found."""
    from partdisco.api import convert

    seg, path = convert(args.src, args.dst, allow_pickle=args.allow_pickle)
    bg = "with" if seg.background_channel else "without"
    print(f"{args.src} -> {path}: {seg.arch}, {seg.num_parts} parts {bg} background channel")
    return 0
