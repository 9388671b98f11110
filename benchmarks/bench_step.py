"""Benchmark the training step against a straightforward reference step; inference and evaluation speed.

Issue #7. On one machine, in one run, side by side:

- training steps/s, ms/step and peak memory of
  ``naive`` (:mod:`naive_reference`: per-image L_f loop, per-anchor contrastive loop, per-sample TPS
  solve and grid, per-image colour jitter, fp32), ``ours_fp32`` (:func:`partdisco.engine.train.train_step`,
  fp32) and ``ours_fast`` (``train_step`` with bf16 autocast and channels-last, plus ``torch.compile`` with
  ``--compile``); all three use the same segmenter and feature network, the same synthetic batch and the
  same random draws per step;
- ``--inference``: images/s of the segmenter's forward pass (eval mode, no grad) at batch 1 and 16, fp32
  and fast settings;
- ``--eval``: images/s of :func:`partdisco.engine.evaluate.evaluate` on synthetic images held in memory
  (network, upsampling, labels, contingency tables, keypoint metrics; no baseline).

Every measurement runs in a fresh Python process (``--no-isolate`` to turn that off) so that peak memory
is per configuration: on CUDA ``torch.cuda.max_memory_allocated`` over the timed steps; on the CPU the
process's peak resident set size (``resource.getrusage`` maxrss, which includes Python, torch and the
models), and its growth over the set-up. Clocks are read with ``time.perf_counter`` after
``torch.cuda.synchronize``. The table is printed; ``--write BENCHMARKS.md`` appends a dated section with
the machine, versions and the command line.

    python benchmarks/bench_step.py                                   # CPU, reference configuration
    python benchmarks/bench_step.py --device cuda --compile --inference --eval --write BENCHMARKS.md
    python benchmarks/bench_step.py --size 64 --batch 2 --arch resnet18 --steps 1   # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402
from naive_reference import draw_step_randomness, naive_reference_step  # noqa: E402

from partdisco.config import EvalConfig, LossConfig, OptimConfig  # noqa: E402
from partdisco.data import PartsDataset, collate  # noqa: E402
from partdisco.data.synthetic import SyntheticParts  # noqa: E402
from partdisco.engine.evaluate import evaluate  # noqa: E402
from partdisco.engine.train import (  # noqa: E402
    Learner,
    StepInputs,
    draw_step,
    make_optimizer,
    set_train_mode,
    step_generator,
    train_step,
)
from partdisco.engine.train.precision import autocast_ctx, make_scaler  # noqa: E402
from partdisco.losses import Objective  # noqa: E402
from partdisco.models import build_feature_extractor, create_segmenter  # noqa: E402

CONFIGS = {
    "naive": "reference structure: per-image / per-anchor / per-sample loops, fp32",
    "ours_fp32": "train_step, fp32",
    "ours_fast": "train_step, bf16 autocast, channels-last",
    "floor_fp32": "floor: the segmenter's two forward+backward passes alone, fp32",
    "floor_fast": "floor: the segmenter's two forward+backward passes alone, bf16, channels-last",
}
FLOOR_OF = {"ours_fp32": "floor_fp32", "ours_fast": "floor_fast"}  # issue #24: step vs its floor
TARGETS = {"ours_fp32": 2.0, "ours_fast": 4.0}  # issue #7: speed-up over naive
SEED = 1234
RESULT_TAG = "BENCH_STEP_RESULT "
HEADER = "# Benchmarks\n\nTimings recorded by the scripts in `benchmarks/`; newest sections last.\n"
INFERENCE_BATCHES = (1, 16)


# ------------------------------------------------------------------------------------------------------------
# Measuring


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def time_calls(fn: Callable[[int], Any], warmup: int, steps: int, device: torch.device) -> dict[str, Any]:
    """Run ``fn(i)`` for warm-up then timed iterations; per-iteration seconds and peak memory."""
    for i in range(warmup):
        fn(i)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for i in range(warmup, warmup + steps):
        sync(device)
        start = time.perf_counter()
        fn(i)
        sync(device)
        seconds.append(time.perf_counter() - start)
    out: dict[str, Any] = {"seconds": seconds}
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def synthetic_batch(batch: int, size: int, device: torch.device) -> StepInputs:
    """The first ``batch`` built-in synthetic training images (binary foreground masks)."""
    samples = collate([SyntheticParts(batch, size, split="train")[i] for i in range(batch)])
    return StepInputs(image=samples.image.to(device), fg_mask=samples.fg_mask.to(device))


class InMemory(PartsDataset):
    """Pre-rendered samples, so that evaluation timing does not include rendering synthetic scenes."""

    def __init__(self, source: PartsDataset, n: int) -> None:
        super().__init__()
        self.samples = [source[i] for i in range(n)]
        self.keypoint_names = source.keypoint_names
        self.part_names = source.part_names
        self.has_masks = source.has_masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


def measure_floor(config: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The step's floor (issue #24): the segmenter's own two forward+backward passes, nothing else.

    A training step runs the segmenter on the batch and on its warped copy and back-propagates through
    both; everything else (feature network, warps, losses, jitter, optimiser) is overhead on top. Here the
    two passes run on the batch and a flipped copy with a plain sum as the loss, gradients zeroed each time.
    """
    torch.manual_seed(0)
    model = create_segmenter(args.arch, num_parts=args.parts).to(device)
    fast = config == "floor_fast"
    if fast:
        model = model.to(memory_format=torch.channels_last)
    set_train_mode(model, freeze_bn=False)
    inputs = synthetic_batch(args.batch, args.size, device)
    images = [model.preprocess(inputs.image), model.preprocess(inputs.image.flip(-1))]
    if fast:
        images = [x.contiguous(memory_format=torch.channels_last) for x in images]
    precision = "bf16" if fast else "fp32"

    def step(i: int) -> None:
        model.zero_grad(set_to_none=True)
        with autocast_ctx(device, precision):
            loss = sum(model(x).float().sum() for x in images)
        loss.backward()

    setup_rss = peak_rss_mib()
    result = time_calls(step, args.warmup, args.steps, device)
    result["setup_rss_mib"] = setup_rss
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def measure_train(config: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Time training steps of one configuration (fresh model, same initial weights for every config)."""
    if config.startswith("floor"):
        return measure_floor(config, args, device)
    torch.manual_seed(0)
    model = create_segmenter(args.arch, num_parts=args.parts).to(device)
    features_net = build_feature_extractor(args.features, args.features_weights).to(device)
    if config == "ours_fast":
        features_net = features_net.to(memory_format=torch.channels_last)  # as train.channels_last does
    inputs = synthetic_batch(args.batch, args.size, device)
    loss_cfg, optim_cfg = LossConfig(), OptimConfig()
    fast = config == "ours_fast"
    precision = "bf16" if fast else "fp32"
    if fast:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, optim_cfg)
    scaler = make_scaler(device, precision)
    objective = Objective(loss_cfg, background_channel=model.background_channel)
    learner = Learner(
        model=model,
        features_net=features_net,
        objective=objective,
        optimizer=optimizer,
        scaler=scaler,
        net=torch.compile(model) if fast and args.compile else model,
        precision=precision,
        clip_grad=optim_cfg.clip_grad,
        channels_last=fast,
    )
    set_train_mode(model, freeze_bn=False)
    totals: list[torch.Tensor] = []

    def step(i: int) -> None:
        if config == "naive":
            draws = draw_step_randomness(args.batch, args.parts, step_generator(SEED, i), loss_cfg)
            terms = naive_reference_step(
                model, features_net, inputs, optimizer, draws, loss_cfg, clip_grad=optim_cfg.clip_grad
            )
        else:
            terms = train_step(learner, inputs, draw_step(SEED, i, loss_cfg, args.batch))
        totals.append(terms["total"])

    setup_rss = peak_rss_mib()
    result = time_calls(step, args.warmup, args.steps, device)
    result["setup_rss_mib"] = setup_rss
    result["peak_rss_mib"] = peak_rss_mib()
    result["last_total"] = float(totals[-1])
    return result


def measure_inference(fast: bool, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Images/s of the segmenter forward pass at batch 1 and 16."""
    torch.manual_seed(0)
    model = create_segmenter(args.arch, num_parts=args.parts).to(device).eval()
    if fast:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if fast and args.compile else model
    precision = "bf16" if fast else "fp32"
    rows = {}
    for batch in INFERENCE_BATCHES:
        image = torch.rand(batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
        image = image.to(device)

        @torch.inference_mode()
        def forward(i: int, image: torch.Tensor = image) -> None:
            x = model.preprocess(image)
            if fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_ctx(device, precision):
                net(x)

        rows[str(batch)] = time_calls(forward, max(args.warmup, 1), args.steps, device)
    return {"batches": rows, "peak_rss_mib": peak_rss_mib()}


def measure_eval(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Images/s of ``evaluate`` on pre-rendered synthetic test images."""
    torch.manual_seed(0)
    model = create_segmenter(args.arch, num_parts=args.parts).to(device)
    data = InMemory(SyntheticParts(args.eval_images, args.size, split="test"), args.eval_images)
    cfg = EvalConfig(batch_size=args.eval_batch, baseline=False)
    warm = EvalConfig(batch_size=args.eval_batch, baseline=False, max_images=args.eval_batch)
    evaluate(model, data, warm, device)
    sync(device)
    start = time.perf_counter()
    metrics = evaluate(model, data, cfg, device)
    sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": int(metrics["images"]), "peak_rss_mib": peak_rss_mib()}


def run_child(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process: ``train:CONFIG``, ``inference:fp32|fast`` or ``eval``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if kind.startswith("train:"):
        return measure_train(kind.split(":", 1)[1], args, device)
    if kind.startswith("inference:"):
        return measure_inference(kind.split(":", 1)[1] == "fast", args, device)
    if kind == "eval":
        return measure_eval(args, device)
    raise ValueError(f"unknown measurement {kind!r}")


def child_argv(kind: str, args: argparse.Namespace) -> list[str]:
    """Command line that runs one measurement in a fresh interpreter."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind]
    argv += ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += ["--size", str(args.size), "--batch", str(args.batch), "--parts", str(args.parts)]
    argv += ["--arch", args.arch, "--features", args.features]
    argv += ["--eval-images", str(args.eval_images), "--eval-batch", str(args.eval_batch)]
    if args.features_weights:
        argv += ["--features-weights", args.features_weights]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if args.compile:
        argv.append("--compile")
    return argv


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one measurement, in a subprocess unless ``--no-isolate``; failures are returned, not raised."""
    print(f"measuring {kind} ...", flush=True)
    if args.no_isolate:
        try:
            return run_child(kind, args)
        except Exception as exc:  # a failed row (e.g. out of memory) must not lose the others
            return {"error": f"{type(exc).__name__}: {exc}".replace("|", "/").replace("\n", " ")}
    proc = subprocess.run(child_argv(kind, args), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    last = lines[-1].replace("|", "/") if lines else "no output"
    return {"error": f"exit code {proc.returncode}: {last}"}


# ------------------------------------------------------------------------------------------------------------
# Reporting


def machine_lines(args: argparse.Namespace, load: tuple[float, float]) -> list[str]:
    """Machine, versions, date and command, one fact per line."""
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none used"
    threads = args.threads or torch.get_num_threads()
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='minutes')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores, {threads} torch threads",
        f"- GPU: {gpu}",
        f"- torch {torch.__version__}, Python {platform.python_version()}, {platform.system()}",
        f"- load average {load[0]:.2f} before / {load[1]:.2f} after (other processes share the machine "
        "when this is above 0)",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
    ]


def memory_text(result: dict[str, Any], device: torch.device) -> str:
    """Peak memory cell."""
    if device.type == "cuda":
        return f"{result['peak_mib']:.0f} MiB allocated"
    grown = result["peak_rss_mib"] - result["setup_rss_mib"]
    return f"{result['peak_rss_mib']:.0f} MiB RSS (+{grown:.0f} over set-up)"


def train_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Markdown rows of the training-step table and the speed-up lines."""
    device = torch.device(args.device)
    if device.type == "cuda":
        memory = "Peak memory: torch.cuda.max_memory_allocated over the timed steps."
    elif args.no_isolate:
        memory = "Peak memory: peak resident set size of this one process so far (--no-isolate: cumulative)."
    else:
        memory = "Peak memory: peak resident set size of the process that measured the row."
    lines = [
        f"Training step: {args.arch}, {args.size}x{args.size}, batch {args.batch}, K = {args.parts}, "
        f"features {args.features}; {args.warmup} warm-up + {args.steps} timed steps. {memory}",
        "",
        "| config | settings | ms/step median (best) | steps/s | images/s | peak memory | vs naive |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rate = {}
    for config, result in results.items():
        settings = CONFIGS[config] + (", torch.compile" if config == "ours_fast" and args.compile else "")
        if "error" in result:
            lines.append(f"| {config} | {settings} | failed: {result['error']} | | | | |")
            continue
        seconds = result["seconds"]
        rate[config] = len(seconds) / sum(seconds)
        lines.append(
            f"| {config} | {settings} | {1000 * statistics.median(seconds):.1f} "
            f"({1000 * min(seconds):.1f}) | {rate[config]:.3f} | "
            f"{rate[config] * args.batch:.2f} | {memory_text(result, device)} | "
            + (f"{rate[config] / rate['naive']:.2f}x |" if "naive" in rate else "- |")
        )
    for config, floor in FLOOR_OF.items():
        if config in rate and floor in rate:
            lines.append(f"- {config}: {rate[floor] / rate[config]:.2f}x its floor ({floor})")
    if "naive" in rate:
        lines.append("")
        for config, target in TARGETS.items():
            if config in rate:
                ratio = rate[config] / rate["naive"]
                verdict = "reached" if ratio >= target else "not reached"
                lines.append(f"- {config}: {ratio:.2f}x naive (target {target:.0f}x: {verdict})")
    return lines


def inference_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Markdown rows of the inference table."""
    lines = [
        f"Inference: {args.arch} forward pass (eval mode, no grad), {args.size}x{args.size}.",
        "",
        "| settings | batch | ms/batch (median) | images/s |",
        "|---|---:|---:|---:|",
    ]
    for name, result in results.items():
        if "error" in result:
            lines.append(f"| {name} | | failed: {result['error']} | |")
            continue
        for batch, timing in result["batches"].items():
            seconds = timing["seconds"]
            rate = int(batch) * len(seconds) / sum(seconds)
            lines.append(f"| {name} | {batch} | {1000 * statistics.median(seconds):.1f} | {rate:.2f} |")
    return lines


def eval_table(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Markdown rows of the evaluation table."""
    lines = [
        f"Evaluation: `evaluate` on {args.eval_images} synthetic {args.size}x{args.size} images held in "
        f"memory, batch {args.eval_batch}, fp32, randomly initialised {args.arch} (no baseline).",
        "",
        "| images | seconds | images/s |",
        "|---:|---:|---:|",
    ]
    if "error" in result:
        return [*lines, f"| failed: {result['error']} | | |"]
    return [
        *lines,
        f"| {result['images']} | {result['seconds']:.2f} | {result['images'] / result['seconds']:.2f} |",
    ]


def write_section(path: Path, lines: list[str]) -> None:
    """Append a section to the benchmark file (created with a header if missing)."""
    text = "\n".join(lines) + "\n"
    if not path.exists():
        path.write_text(HEADER + "\n" + text)
    else:
        with path.open("a") as f:
            f.write("\n" + text)


# ------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: the reference configuration)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 20 on CUDA)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default 1 on CPU, 3 on CUDA)"
    )
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (ref 256)")
    parser.add_argument("--batch", type=int, default=6, help="training batch (ref 6)")
    parser.add_argument("--parts", type=int, default=4, help="K (ref 4)")
    parser.add_argument("--arch", default="deeplab_r50_2branch", help="segmenter architecture")
    parser.add_argument("--features", default="vgg19_random", help="vgg19_random | vgg19 | texture")
    parser.add_argument("--features-weights", default=None, help="local vgg19 .pth for --features vgg19")
    parser.add_argument(
        "--configs",
        default="naive,ours_fp32,ours_fast",
        help=f"comma list of {', '.join(CONFIGS)}; '' = none",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model in ours_fast")
    parser.add_argument(
        "--inference", action="store_true", help="also time the forward pass at batch 1 and 16"
    )
    parser.add_argument("--eval", action="store_true", help="also time evaluate() on synthetic images")
    parser.add_argument("--eval-images", type=int, default=16, help="images for --eval")
    parser.add_argument("--eval-batch", type=int, default=8, help="evaluation batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--write", default=None, metavar="FILE", help="append a dated section to FILE")
    parser.add_argument("--no-isolate", action="store_true", help="measure in this process (no subprocesses)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    if args.steps is None:
        args.steps = 20 if on_cuda else 3
    if args.warmup is None:
        args.warmup = 3 if on_cuda else 1
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if on_cuda and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but CUDA is not available")
    if args.batch < 2:
        parser.error(f"--batch must be >= 2 (the contrastive loss needs two images), got {args.batch}")
    args.config_list = [c for c in args.configs.split(",") if c]
    unknown = [c for c in args.config_list if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {list(CONFIGS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the requested measurements, print the tables, optionally append them to a file."""
    args = parse_args(argv)
    if args.child:
        print(RESULT_TAG + json.dumps(run_child(args.child, args)), flush=True)
        return
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    train = {config: measure(f"train:{config}", args) for config in args.config_list}
    inference = {}
    if args.inference:
        fast_name = "bf16 + channels-last" + (" + compile" if args.compile else "")
        inference = {"fp32": measure("inference:fp32", args), fast_name: measure("inference:fast", args)}
    evaluation = measure("eval", args) if args.eval else None
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    lines = [
        "",
        f"## Training step, inference and evaluation on {args.device} (benchmarks/bench_step.py)",
        "",
        *machine_lines(args, (load_before, load_after)),
    ]
    if train:
        lines += ["", *train_table(train, args)]
    if inference:
        lines += ["", *inference_table(inference, args)]
    if evaluation is not None:
        lines += ["", *eval_table(evaluation, args)]
    print("\n".join(lines))
    if args.write:
        write_section(Path(args.write), lines)
        print(f"appended to {args.write}")


if __name__ == "__main__":
    main()
