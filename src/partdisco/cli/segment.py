"""``partdisco segment CHECKPOINT INPUT... --out DIR``: part maps for your own images."""

from __future__ import annotations

import argparse
import sys

from partdisco.cli._options import add_checkpoint_argument, add_choice_option, add_command, add_device_option

_BACKGROUND_HELP = (
    "auto: masks, else the foreground discovery learnt over the training photos (models trained with "
    "data.foreground=discover), else the model's background channel, else none; model: masks, else the "
    "model's background channel; border: the part covering most of the image border is background "
    "(default auto)"
)
_CROP_HELP = (
    "auto/object: crop around the object (the mask, else the model's predicted foreground: two passes) "
    "with the training padding, segment at the training size, paste back; none: the whole image "
    "(default auto)"
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Attach the ``segment`` subcommand."""
    p = add_command(
        sub,
        "segment",
        help="segment your own images into parts (label maps, colour maps, overlays, parts.json, index.html)",
        description=(
            "Run a checkpoint on image files, folders (recursively) or glob patterns. Per image NAME it\n"
            "writes DIR/labels/NAME.png (uint8, 0 = background, 1..K = parts), DIR/color/NAME.png and\n"
            "DIR/overlay/NAME.jpg (with --save-probs also DIR/probs/NAME.npz), plus DIR/parts.json and\n"
            "DIR/index.html. A rerun skips images whose outputs exist. Examples:\n"
            "  partdisco segment runs/x/model.pt photos/ --out parts\n"
            "  partdisco segment model.pt 'shots/**/*.jpg' --out parts --masks masks/ --device cuda\n"
            "Background (label 0): from --masks when given, else from the model's background channel when\n"
            "it has one, else none (every pixel is a part); --background border guesses it from the image\n"
            "border. See docs/SEGMENT.md."
        ),
    )
    add_checkpoint_argument(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (created, or reused: never wiped); default: FOLDER_parts next to the folder of "
        "the first input (printed)",
    )
    p.add_argument("--masks", help="folder of foreground masks named like the images (NAME.png)")
    _add_inference_options(p)
    p.add_argument("--alpha", type=float, default=0.5, help="part opacity in the overlays (default 0.5)")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")



def _add_inference_options(p: argparse.ArgumentParser) -> None:
    """How the images are segmented: network input size, batch, device, background, crop, refinement."""
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="shorter image side fed to the network (default: the image size the checkpoint was trained at, "
        "else 256)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    add_device_option(p)
    p.add_argument(
        "--save-probs", action="store_true", help="also write float16 probabilities to probs/NAME.npz"
    )
    add_choice_option(p, "--background", ("auto", "model", "none", "border"), "auto", _BACKGROUND_HELP)
    p.add_argument(
        "--no-background", action="store_true", help="no background label, even from a background channel"
    )
    add_choice_option(p, "--crop", ("auto", "object", "none"), "auto", _CROP_HELP)
    p.add_argument(
        "--padding",
        type=float,
        default=None,
        help="object crop padding per side (default: the checkpoint's data.padding_frac, else 0.05)",
    )
    p.add_argument(
        "--fg-refine",
        type=float,
        default=None,
        metavar="RADIUS",
        help="models with a background channel: refine the predicted foreground along the image's colour "
        "edges (guided filter) with this window radius, a fraction of the network input's side; 0 = off "
        "(default: the checkpoint's eval.fg_refine_radius, else 0.0625)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint, segment, print a summary.

    Returns:
        0, also when some files were unreadable (they are listed); 1 when no image could be read.
    """
    from partdisco.api import default_out_dir, open_checkpoint, process_rank, segment_files

    if args.no_background and args.background != "auto":
        raise ValueError("--no-background and --background cannot be combined; use one")
    background = "none" if args.no_background else args.background
    if args.masks is not None and background != "auto":
        raise ValueError("--masks define the background; drop --no-background / --background")
    if not 0.0 <= args.alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1], got {args.alpha}")
    loaded = open_checkpoint(args.checkpoint, device=args.device)
    out_dir = args.out
    if out_dir is None:
        out_dir = default_out_dir(args.inputs)
        if process_rank() == 0:
            print(f"writing to {out_dir} (no --out given: next to the inputs)")
    summary = segment_files(
        loaded.segmenter,
        args.inputs,
        out_dir,
        masks_dir=args.masks,
        size=args.size,  # None: the checkpoint's training size (engine.inference.inference_size)
        batch_size=args.batch_size,
        background=background,
        save_probs=args.save_probs,
        overwrite=args.overwrite,
        alpha=args.alpha,
        checkpoint=str(loaded.path.resolve()),
        progress=not args.quiet,
        crop=args.crop,
        padding=args.padding,  # None: the checkpoint's data.padding_frac (engine.inference.inference_padding)
        fg_refine=args.fg_refine,  # None: the checkpoint's eval.fg_refine_radius (inference_fg_refine)
    )
    total = len(summary.written) + len(summary.skipped) + len(summary.failed)
    if process_rank() != 0:  # torchrun: the summary holds every rank's images; rank 0 reports them
        return 1 if summary.failed and not (summary.written or summary.skipped) else 0
    print(
        f"{total} images: {len(summary.written)} segmented, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} unreadable"
    )
    if summary.failed:
        print(f"skipped {len(summary.failed)} unreadable file(s):", file=sys.stderr)
        for path, reason in summary.failed.items():
            print(f"  {reason}" if path in reason else f"  {path}: {reason}", file=sys.stderr)
    if summary.notes:
        print(f"{len(summary.notes)} image(s) without background: {next(iter(summary.notes.values()))}")
        for name in summary.notes:
            print(f"  {name}")
    if summary.no_foreground:
        print(f"{len(summary.no_foreground)} image(s) where no foreground was found (all background):")
        for name in summary.no_foreground[:10]:
            print(f"  {name}")
    print(f"wrote {summary.out_dir}; open {summary.index_html} in a browser")
    return 1 if summary.failed and not (summary.written or summary.skipped) else 0
