"""Keypoint regression under DDP fits and scores on every rank's share (issue #11, point 8)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = [pytest.mark.ddp, pytest.mark.slow]


def _evaluate(root: str) -> dict:
    from partdisco.config import DataConfig, EvalConfig
    from partdisco.data import cub
    from partdisco.engine.evaluate import evaluate
    from partdisco.models import create_segmenter

    # one thread everywhere: the 3-sample regression is ill-conditioned, so even the rounding of a 2-thread
    # convolution would move the error; the comparison is about which samples are fitted and scored
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_segmenter("resnet18", num_parts=3)
    cfg = DataConfig(name="cub", root=root, image_size=32)
    return evaluate(
        model,
        cub.build(cfg, "test", train=False),
        EvalConfig(batch_size=1, baseline=False),
        torch.device("cpu"),
        regression_dataset=cub.build(cfg, "train", train=False),
    )


def _worker(rank: int, world: int, init_file: str, root: str, out: str, tests_dir: str) -> None:
    import torch.distributed as dist

    sys.path.insert(0, tests_dir)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metrics = _evaluate(root)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"error": metrics["kp_regression_error"]}))
    finally:
        dist.destroy_process_group()


def test_regression_error_with_two_ranks_equals_one_process(tmp_path):
    from data.tiny_datasets import make_tiny_cub

    root = str(make_tiny_cub(tmp_path / "data"))
    single = _evaluate(root)["kp_regression_error"]
    tests_dir = str(Path(__file__).resolve().parents[1])
    mp.spawn(
        _worker, args=(2, str(tmp_path / "init"), root, str(tmp_path), tests_dir), nprocs=2, join=True
    )
    for rank in (0, 1):
        value = json.loads((tmp_path / f"rank{rank}.json").read_text())["error"]
        assert value == pytest.approx(single, rel=1e-6), (rank, value, single)
