"""Segmenter cost by architecture: forward (eval, no grad) and forward + backward, one batch, on the CPU.

Interleaved rounds (arch A, arch B, A, B, ...) so that a changing machine load hits both alike; the median
over rounds is printed, with the load average.

    PYTHONPATH=src python benchmarks/bench_arch_forward.py --size 128 --batch 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from partdisco.models import create_segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "efficientnet_lite0"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size)
    models = {arch: create_segmenter(arch, num_parts=4, background_channel=True) for arch in args.archs}
    forward: dict[str, list[float]] = {a: [] for a in args.archs}
    step: dict[str, list[float]] = {a: [] for a in args.archs}
    load_before = os.getloadavg()[0]
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for arch, seg in models.items():
            inp = seg.preprocess(x)
            seg.eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                seg(inp)
            t1 = time.perf_counter()
            seg.train()
            seg.zero_grad(set_to_none=True)
            seg(inp).square().mean().backward()
            t2 = time.perf_counter()
            if round_:
                forward[arch].append(1000 * (t1 - t0))
                step[arch].append(1000 * (t2 - t1))
    print(
        f"batch {args.batch} x {args.size} px, {args.threads} threads, torch {torch.__version__}, "
        f"load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after"
    )
    print("| arch | parameters | logit grid | forward, eval (ms, median) | fwd + bwd, train (ms, median) |")
    print("|---|---:|---|---:|---:|")
    for arch, seg in models.items():
        params = sum(p.numel() for p in seg.parameters()) / 1e6
        h, w = seg.output_size(args.size, args.size)
        print(
            f"| {arch} | {params:.1f} M | {h} x {w} | {statistics.median(forward[arch]):.0f} | "
            f"{statistics.median(step[arch]):.0f} |"
        )


if __name__ == "__main__":
    main()
