"""``partdisco data {synth,check}``: write the synthetic data set, validate a data set folder."""

from __future__ import annotations

import argparse
import sys

from partdisco.cli._options import add_choice_option, add_command
from partdisco.config import DATASETS


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Attach the ``data`` subcommand group."""
    p = sub.add_parser("data", help="data set tools: write the synthetic set, check a data set folder")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    _add_synth(data_sub)
    _add_check(data_sub)


def _add_synth(data_sub: argparse._SubParsersAction) -> None:
    """``partdisco data synth OUT``: write the synthetic data set."""
    synth = data_sub.add_parser(
        "synth",
        help="write the built-in synthetic data set in the generic folder layout",
        description="Write N synthetic images with masks, part maps, keypoints and train/test lists to a new "
        "folder OUT. By default they are held-out test images (--split test): never seen by "
        "`partdisco train` on the built-in data set with the same seed, so they can be segmented and "
        "scored honestly. OUT must be new or empty: an existing data set is never written into.",
    )
    synth.add_argument("out", help="output folder (created; must not exist or be empty)")
    add_choice_option(
        synth,
        "--split",
        ("test", "train", "both"),
        "test",
        "test: held-out images (default); train: the training images of the built-in data set; both: "
        "train and test images, --test-fraction of them test (with train.txt / test.txt)",
    )
    synth.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="with --split both: share of images in test.txt (default 0.1)",
    )
    synth.add_argument(
        "--stress",
        action="append",
        default=[],
        metavar="VARIANT",
        help="a stress variant (repeat or comma-separate to combine): small (the creature's box 25-70 %% "
        "of the side instead of 60-95 %%: it covers about 5-40 %% of the frame), salient (1-4 saturated "
        "disks and rectangles of any hue behind it), clutter (a fine full-frame texture and 15-30 extra "
        "patterned shapes), all. The same seed gives the same creatures as the default set; the variant "
        "is recorded in OUT/synthetic.json",
    )
    synth.add_argument(
        "--object-scale",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="the creature box's longer side as a fraction of the image side, drawn in [LO, HI] "
        "(default 0.6 0.95; --stress small uses 0.25 0.7)",
    )


def _add_check(data_sub: argparse._SubParsersAction) -> None:
    """``partdisco data check ROOT [--dataset NAME] [key=value ...]``: validate a data set folder."""
    check = add_command(
        data_sub,
        "check",
        help="validate a data set folder and report what is present and missing",
        description="Scan a data set folder; print present/missing files (with where they come from), counts "
        "per split and unreadable files. Changes nothing. Exit code 1 when something is wrong. Takes the "
        "same key=value overrides as train, e.g.\n"
        "  partdisco data check VOCdevkit --dataset pascal_part data.pascal_class=cat\n"
        "  partdisco data check CUB_200_2011 --dataset cub data.cub_mask=sup",
    )
    check.add_argument("root", help="data set folder")
    check.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides as for train (data.pascal_class=cat, data.cub_mask=sup, ...)",
    )

    # ROOT --dataset NAME key=value: positionals on both sides of an option need intermixed parsing, which
    # the parent parser's subcommand dispatch does not do; it calls parse_known_args, so route that (the
    # intermixed parser calls the class's own parse_known_args inside, hence the temporary removal)
    def parse_intermixed(args=None, namespace=None):  # type: ignore[no-untyped-def]
        del check.parse_known_args
        try:
            return check.parse_known_intermixed_args(args, namespace)
        finally:
            check.parse_known_args = parse_intermixed  # type: ignore[method-assign]

    check.parse_known_args = parse_intermixed  # type: ignore[method-assign]
    check.add_argument(
        "--dataset",
        default=None,
        choices=DATASETS,
        help="which layout to expect (default: guessed from the files in ROOT, and printed)",
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch ``data`` subcommands."""
    from partdisco.api import check_dataset, guess_dataset, write_synthetic

    if args.data_command == "synth":
        fraction = {"test": 1.0, "train": 0.0}.get(args.split, args.test_fraction)
        stress = [name.strip() for item in args.stress for name in item.split(",") if name.strip()]
        counts = write_synthetic(
            args.out,
            args.n,
            image_size=args.size,
            seed=args.seed,
            test_fraction=fraction,
            stress=stress,
            object_scale=args.object_scale,
        )
        print(f"wrote {counts} to {args.out}")
        return 0
    preset = args.dataset
    if preset is None:
        preset = guess_dataset(args.root)
        if preset is None:
            raise ValueError(
                f"{args.root}: no known data set layout found (no images/, image files, images.txt, "
                "DeepFashion split jsons or VOC2010/); say which with --dataset NAME"
            )
        print(f"guessed --dataset {preset} from the layout of {args.root}")
    return check_dataset(args.root, preset, args.overrides, out=sys.stdout)
