"""``partdisco eval CHECKPOINT [key=value ...]``: score a checkpoint on a data set split."""

from __future__ import annotations

import argparse

from partdisco.cli._options import add_checkpoint_argument, add_command, add_device_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Attach the ``eval`` subcommand."""
    p = add_command(
        sub,
        "eval",
        help="evaluate a checkpoint (NMI/ARI, keypoint regression, mIoU) on a data set split",
        description=(
            "Evaluate a checkpoint on a data set's split and write metrics.json. Every setting (image size, "
            "masks, batch size, ...) comes from the checkpoint's own config; the command line changes only "
            "the keys it names, and dataset=NAME changes only the data source (with data.root=DIR). A "
            "foreign checkpoint (unsup-parts, SCOPS) has no config: it takes dataset=NAME's preset. "
            "Examples:\n"
            "  partdisco eval runs/x/model.pt\n"
            "  partdisco eval model_60000.pth dataset=cub data.root=CUB_200_2011 split=test\n"
            "  partdisco eval runs/x/model.pt dataset=folder data.root=photos\n"
            "  partdisco eval runs/x/model.pt eval.full_images=predicted  (whole images, as segment)\n"
            "Keys: dataset=, split= (= eval.split), and any data.* / eval.* config key."
        ),
    )
    add_checkpoint_argument(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="data set / evaluation overrides")
    p.add_argument("--out", help="metrics JSON path (default: next to the checkpoint)")
    add_device_option(p)
    p.add_argument(
        "--no-regression", action="store_true", help="skip keypoint regression (needs the train split)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the table."""
    from partdisco.api import evaluate_checkpoint, format_metrics, process_rank

    metrics, out = evaluate_checkpoint(
        args.checkpoint,
        args.overrides,
        device=args.device,
        out=args.out,
        regression=not args.no_regression,
        progress=not args.quiet,
    )
    if process_rank() == 0:  # torchrun: every rank holds the summed metrics; rank 0 reports them
        print(format_metrics(metrics))
        print(f"wrote {out}")
    return 0
