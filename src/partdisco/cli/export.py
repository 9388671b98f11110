"""``partdisco export SRC DST [--fp16 | --opset N]``: a weights-only copy of a checkpoint, or ONNX."""

from __future__ import annotations

import argparse

from partdisco.cli._options import add_command, add_src_dst


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Attach the ``export`` subcommand."""
    p = add_command(
        sub,
        "export",
        help="write a weights-only (optionally float16) copy of a checkpoint, or the model as ONNX",
        description=(
            "Copy the model weights of SRC (a run folder, any of our checkpoints, or a released unsup-parts "
            "/ SCOPS file) to DST without optimizer state, keeping the model description, the training image "
            "size and the run config, so segment/eval take DST like SRC. A DST ending in .onnx gets the\n"
            "network as ONNX (dynamic batch and image size, the settings segment needs in its metadata;\n"
            "pip install 'partdisco[onnx]'), which `partdisco segment DST photos/` runs with onnxruntime.\n"
            "Examples:\n"
            "  partdisco export runs/x parts-model.pt\n"
            "  partdisco export runs/x/checkpoints/step_0004000.pt small.pt --fp16\n"
            "  partdisco export runs/x model.onnx"
        ),
    )
    add_src_dst(p, "a run folder (its model.pt) or a checkpoint file", "output .pt file, or .onnx for ONNX")
    p.add_argument("--fp16", action="store_true", help="store the weights as float16 (half the size; .pt)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; .onnx only)")


def run(args: argparse.Namespace) -> int:
    """Export and say what was written."""
    from partdisco.api import export

    path = export(args.src, args.dst, fp16=args.fp16, opset=args.opset)
    size_mb = path.stat().st_size / 1e6
    if path.suffix.lower() == ".onnx":
        print(f"wrote {path} ({size_mb:.1f} MB, ONNX, dynamic batch and image size)")
    else:
        print(f"wrote {path} ({size_mb:.1f} MB, weights only{', float16' if args.fp16 else ''})")
    return 0
