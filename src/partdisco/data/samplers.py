"""Deterministic, resumable, rank-sharded sampling for iteration-based training.

The sample used at (step, slot) is a pure function of (seed, step, rank), so a resumed run sees exactly the
batches an uninterrupted run would have seen, and each sample carries its own augmentation seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler


class SeededDataset(Dataset):
    """Wrap a data set so that ``ds[(index, seed)]`` draws its augmentation from ``seed``.

    The torch and numpy global RNGs are seeded inside a forked RNG scope, so data sets that draw their
    random crops and flips from the global generators become replayable, and the caller's RNG is untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        import numpy as np

        index, seed = item
        state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(state)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yield batches of (index, augmentation seed) from ``start_step`` to ``num_steps``.

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
        """The (index, seed) pairs of this rank's batch at ``step``."""
        epoch, within = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        start = (within * self.world_size + self.rank) * self.batch_size
        indices = perm[start : start + self.batch_size].tolist()
        # the augmentation seed depends on the global position in the step's batch, not on the rank, so a
        # 2-rank run and a 1-process run with the doubled batch draw the same augmentations
        base = (self.seed * 7_919 + step) * 10_007 + self.rank * self.batch_size
        return [(i, (base + j) % (2**63 - 1)) for j, i in enumerate(indices)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.num_steps):
            yield self.batch_at(step)
