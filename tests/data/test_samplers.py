import numpy as np
import pytest
import torch

from partdisco.data.samplers import ResumableBatchSampler, SeededDataset


def test_batches_are_pure_function_of_step():
    a = ResumableBatchSampler(50, 4, 30, seed=1)
    b = ResumableBatchSampler(50, 4, 30, seed=1, start_step=17)
    full = list(a)
    assert len(full) == 30 and list(b) == full[17:]
    assert all(len(batch) == 4 for batch in full)


def test_epoch_is_a_permutation_and_seeds_differ():
    s = ResumableBatchSampler(12, 4, 3, seed=0)
    idx = [i for batch in s for i, _ in batch]
    assert sorted(idx) == list(range(12))
    seeds = [seed for batch in s for _, seed in batch]
    assert len(set(seeds)) == len(seeds)
    assert list(ResumableBatchSampler(12, 4, 3, seed=1)) != list(s)


def test_ranks_take_disjoint_slices():
    r0 = ResumableBatchSampler(16, 2, 4, seed=0, rank=0, world_size=2)
    r1 = ResumableBatchSampler(16, 2, 4, seed=0, rank=1, world_size=2)
    one = ResumableBatchSampler(16, 4, 4, seed=0)
    for step in range(4):
        both = [i for i, _ in r0.batch_at(step)] + [i for i, _ in r1.batch_at(step)]
        assert both == [i for i, _ in one.batch_at(step)]


def test_too_small_dataset():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 4, 10, seed=0)


class RandomDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.rand(1).item(), np.random.rand()


def test_seeded_dataset_replays_and_restores_rng():
    ds = SeededDataset(RandomDataset())
    torch.manual_seed(0)
    np.random.seed(0)
    expected_torch, expected_np = torch.rand(1).item(), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    a = ds[(1, 123)]
    assert ds[(1, 123)] == a and ds[(1, 124)] != a
    assert torch.rand(1).item() == expected_torch and np.random.rand() == expected_np
    assert len(ds) == 5
