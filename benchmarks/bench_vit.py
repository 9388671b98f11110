"""Benchmark the DINO / DINOv2 ViTs on the CPU: seconds per image of the backbone, and training steps.

Issue #14. Random weights of the real shapes (``random_state_dict``; the cost does not depend on the
values), in one process, one row at a time:

- ``backbone``: :class:`partdisco.models.vit.VisionTransformer` forward (eval, no grad, final-norm patch
  tokens) on random ImageNet-normalised images, for ViT-S/14 and ViT-B/14 (DINOv2, what
  ``model.features=dinov2`` and ``model.arch=vit`` run) at 224 x 224 and 448 x 448, batch 1 and 4;
  seconds per image = time of a batch / batch size;
- ``--train``: :func:`partdisco.engine.train.train_step` of a ``model.arch=vit`` segmenter (DINOv2
  ViT-S/14, K = 4, texture features phi) at 224 x 224, batch 2, frozen (``finetune_blocks=0``) and with
  the last 2 blocks trained, to show what the no-grad frozen part saves.

Each row: one warm-up call, then ``--repeats`` timed calls; best and median are reported (the best is the
least disturbed by other processes on a shared machine). The load average before and after is recorded.

    python benchmarks/bench_vit.py --threads 1 --write BENCHMARKS.md
    python benchmarks/bench_vit.py --sizes 224 --models dinov2_vits14 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

from partdisco.config import LossConfig, OptimConfig
from partdisco.data.synthetic import SyntheticParts
from partdisco.engine.train import Learner, StepInputs, draw_step, make_optimizer, set_train_mode, train_step
from partdisco.engine.train.precision import make_scaler
from partdisco.losses import Objective
from partdisco.models import build_feature_extractor
from partdisco.models.vit import VisionTransformer, ViTSpec
from partdisco.models.vit_backbone import random_state_dict
from partdisco.models.vit_segmenter import ViTSegmenter


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def vit(name: str) -> VisionTransformer:
    spec = ViTSpec.named(name)
    model = VisionTransformer(spec)
    model.load_state_dict(random_state_dict(spec, seed=0))
    return model.freeze_()


def backbone_rows(args: argparse.Namespace) -> list[str]:
    rows = []
    for name in args.models:
        model = vit(name)
        for size in args.sizes:
            for batch in args.batches:
                x = torch.randn(batch, 3, size, size)

                def forward(model=model, x=x) -> None:
                    with torch.no_grad():
                        model(x)

                best, median = timed(forward, args.repeats)
                tokens = (size // 14) ** 2
                rows.append(
                    f"| {name} | {size} x {size} | {tokens} | {batch} | "
                    f"{best / batch:.3f} | {median / batch:.3f} |"
                )
                print(rows[-1], flush=True)
    return rows


def train_rows(args: argparse.Namespace) -> list[str]:
    rows = []
    source = SyntheticParts(n=args.train_batch, image_size=args.train_size, seed=0)
    samples = [source[i] for i in range(args.train_batch)]
    inputs = StepInputs(
        image=torch.stack([s["image"] for s in samples]), fg_mask=torch.stack([s["fg_mask"] for s in samples])
    )
    phi = build_feature_extractor("texture", None)
    for blocks in (0, 2):
        torch.manual_seed(0)
        model = ViTSegmenter(vit("dinov2_vits14"), num_parts=4, finetune_blocks=blocks)
        set_train_mode(model, freeze_bn=False)
        loss_cfg = LossConfig()
        optimizer = make_optimizer(model, OptimConfig(name="adamw", lr=1e-4))
        scaler = make_scaler(torch.device("cpu"), "fp32")
        objective = Objective(loss_cfg, background_channel=False)
        learner = Learner(
            model=model, features_net=phi, objective=objective, optimizer=optimizer, scaler=scaler
        )
        steps = iter(range(10_000))

        def step(learner=learner, loss_cfg=loss_cfg, steps=steps) -> None:
            train_step(learner, inputs, draw_step(0, next(steps), loss_cfg, inputs.image.shape[0]))

        best, median = timed(step, args.repeats)
        rows.append(
            f"| dinov2_vits14, finetune_blocks={blocks} | {args.train_size} x {args.train_size} | "
            f"{args.train_batch} | {best:.2f} | {median:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["dinov2_vits14", "dinov2_vitb14"])
    p.add_argument("--sizes", nargs="+", type=int, default=[224, 448])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--train", action="store_true", help="also time training steps of model.arch=vit")
    p.add_argument("--train-size", type=int, default=224)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--write", type=Path, default=None, help="append a dated section to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    rows = backbone_rows(args)
    train = train_rows(args) if args.train else []
    load_after = os.getloadavg()[0]
    lines = [
        "",
        "## DINO / DINOv2 ViT on cpu (benchmarks/bench_vit.py)",
        "",
        f"{datetime.date.today().isoformat()}, {cpu_model()}, {os.cpu_count()} CPU cores, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"Python {platform.python_version()}, "
        f"load average {load_before:.1f} before / {load_after:.1f} after"
        + (" (other jobs shared the cores)" if max(load_before, load_after) > 1.0 else "")
        + ". Random weights of the real shapes; final-norm patch tokens, eval mode, no grad; "
        f"{args.repeats} timed calls after one warm-up. Command: `python benchmarks/bench_vit.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        "| model | input | patch tokens | batch | s/image (best) | s/image (median) |",
        "|---|---|---:|---:|---:|---:|",
        *rows,
    ]
    if train:
        lines += [
            "",
            "Training step of `model.arch=vit` (AdamW, texture phi, K = 4; frozen part under no_grad):",
            "",
            "| segmenter | input | batch | s/step (best) | s/step (median) |",
            "|---|---|---:|---:|---:|",
            *train,
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write is not None:
        with open(args.write, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
