import pytest

from partdisco.data.samplers import ResumableBatchSampler


def test_batches_are_pure_function_of_step():
    a = ResumableBatchSampler(50, 4, 30, seed=1)
    b = ResumableBatchSampler(50, 4, 30, seed=1, start_step=17)
    full = list(a)
    assert len(full) == 30 and list(b) == full[17:]
    assert all(len(batch) == 4 for batch in full)


def test_epoch_is_a_permutation_and_items_carry_the_epoch():
    s = ResumableBatchSampler(12, 4, 7, seed=0)  # 3 steps per epoch
    items = [item for batch in s for item in batch]
    assert [epoch for _, epoch in items] == [0] * 12 + [1] * 12 + [2] * 4
    assert sorted(i for i, epoch in items if epoch == 0) == list(range(12))
    assert sorted(i for i, epoch in items if epoch == 1) == list(range(12))
    assert [i for i, _ in items[:12]] != [i for i, _ in items[12:24]]  # a new permutation per epoch
    assert list(ResumableBatchSampler(12, 4, 3, seed=1)) != list(ResumableBatchSampler(12, 4, 3, seed=0))


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
