"""torch.distributed helpers that degrade to one process when no process group is initialised."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """Rank within this machine (torchrun's LOCAL_RANK, 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Only the main process writes files and logs."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set the rendezvous variables."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_from_env(device: torch.device) -> bool:
    """Initialise the process group from torchrun's environment variables, if present.

    NCCL on CUDA devices, gloo on CPU. Returns True when a group was (or already is) initialised.
    """
    if is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return True


def barrier() -> None:
    """Synchronise all ranks (no-op in one process)."""
    if is_initialized():
        dist.barrier()


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a detached copy; for logging)."""
    value = value.detach().clone()
    if is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world_size()
    return value


def all_reduce_sum_(value: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op in one process)."""
    if is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def destroy() -> None:
    """Tear down the process group if one is initialised."""
    if is_initialized():
        dist.destroy_process_group()


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, with gradients flowing back to each rank's slice.

    ``torch.distributed.nn.functional.all_gather`` sums the incoming gradients in its backward, which,
    combined with DDP's gradient averaging, gives exactly the gradient of the global-batch loss.
    """
    if not is_initialized() or world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_concat(pieces: list[Any]) -> Any:
    """Concatenate numpy arrays along axis 0 over this rank's list and every other rank's, in rank order.

    For statistics that need every sample (e.g. fitting the keypoint regressor). A rank may hold no piece.
    With one process this is ``np.concatenate(pieces)``.

    Args:
        pieces: this rank's ``(N_i, ...)`` numpy arrays (the trailing shape must agree everywhere).

    Returns:
        The ``(sum N_i, ...)`` concatenation, the same on every rank.
    """
    import numpy as np

    if is_initialized() and world_size() > 1:
        gathered: list[Any] = [None] * world_size()
        dist.all_gather_object(gathered, list(pieces))
        pieces = [piece for rank_pieces in gathered for piece in rank_pieces]
    return np.concatenate(pieces, axis=0)
