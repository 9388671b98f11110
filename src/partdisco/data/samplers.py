"""Deterministic, resumable, rank-sharded sampling for iteration-based training.

The sample used at (step, slot) is a pure function of (seed, step, rank), so a resumed run sees exactly the
batches an uninterrupted run would have seen. Each item is an ``(index, epoch)`` pair: the data set draws
that sample's augmentation from a generator seeded with (run seed, epoch, index) (``data/io.py``), so
no global generator is seeded or read.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yield batches of (index, epoch) pairs from ``start_step`` to ``num_steps``.

    Epoch e is a permutation drawn from (seed, e); epochs drop their last incomplete global batch. With
    ``world_size`` ranks, the global batch of step s is split into contiguous per-rank slices.

    Args:
        dataset_size: number of samples.
        batch_size: per-rank batch size.
        num_steps: total steps of the run.
        seed: run seed.
        start_step: first step to yield (resume point).
        rank: this process's rank.
        world_size: number of ranks.
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        num_steps: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        global_batch = batch_size * world_size
        if dataset_size < global_batch:
            raise ValueError(
                f"the training split has {dataset_size} images, fewer than one global batch "
                f"({batch_size} x {world_size} ranks); lower train.batch_size or add images"
            )
        self.n = dataset_size
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.steps_per_epoch = dataset_size // global_batch
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return max(0, self.num_steps - self.start_step)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.n, generator=gen)
            self._perm_epoch = epoch
        return self._perm

    def batch_at(self, step: int) -> list[tuple[int, int]]:
        """The (index, epoch) pairs of this rank's batch at ``step``.

        Example:
            >>> ResumableBatchSampler(6, 2, 10, seed=0).batch_at(4)[0][1]  # 3 steps per epoch
            1
        """
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        start = (within * self.world_size + self.rank) * self.batch_size
        indices = perm[start : start + self.batch_size].tolist()
        # the augmentation depends on (epoch, index) only, not on the rank, so a 2-rank run and a
        # 1-process run with the doubled batch draw the same augmentations
        return [(i, epoch) for i in indices]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.num_steps):
            yield self.batch_at(step)
