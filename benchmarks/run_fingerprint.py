"""Fingerprint a short default training run: a SHA-256 over the final weights and the logged losses.

Issue #23 (the module-layout redesign) must not change what training computes. This trains the default
run (built-in synthetic data, the default config) for a few steps in a fresh folder and prints one line per
tensor group and a digest of the whole state dict, so that two checkouts can be compared byte for byte:

    python benchmarks/run_fingerprint.py --steps 12            # prints the digest
    python benchmarks/run_fingerprint.py --steps 12 --json out.json

Same machine, same torch, same thread count: the same digest means the same weights to the bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def state_digest(path: Path) -> tuple[str, int]:
    """SHA-256 over every tensor of the model file's state dict (names sorted), and the tensor count."""
    record = torch.load(path, map_location="cpu", weights_only=False)
    state = record["model"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest(), len(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="training steps (default 12)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for partdisco train")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "partdisco", "train", f"train.steps={args.steps}", f"out={out}"]
        command += args.overrides
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        digest, count = state_digest(out / "model.pt")
        metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
    result = {
        "steps": args.steps,
        "sha256": digest,
        "tensors": count,
        "seconds": round(seconds, 1),
        "torch": torch.__version__,
        "metrics": metrics,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
