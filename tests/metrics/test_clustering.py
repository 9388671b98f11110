import doctest
import math
import os
import tempfile
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import partdisco.metrics.clustering as clustering_module
from partdisco.metrics import ContingencyTable, ari_from_table, clustering_scores, nmi_ari, nmi_from_table

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sk_scores(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    return 100 * normalized_mutual_info_score(gt, pred), 100 * adjusted_rand_score(gt, pred)


def table_of(pred: np.ndarray, gt: np.ndarray, num_pred: int, num_gt: int) -> np.ndarray:
    table = np.zeros((num_pred, num_gt), dtype=np.int64)
    np.add.at(table, (pred, gt), 1)
    return table


def exact_ari(table: np.ndarray) -> Fraction:
    """Hubert-Arabie ARI with binomial coefficients, exact rational arithmetic."""
    cells = sum(math.comb(int(v), 2) for v in table.ravel())
    rows = sum(math.comb(int(v), 2) for v in table.sum(axis=1))
    cols = sum(math.comb(int(v), 2) for v in table.sum(axis=0))
    total = math.comb(int(table.sum()), 2)
    expected = Fraction(rows * cols, total)
    return (cells - expected) / (Fraction(rows + cols, 2) - expected)


def reference_nmi(table: np.ndarray) -> float:
    """NMI from probabilities in extended precision with compensated sums (independent formula)."""
    t = table.astype(np.longdouble)
    n = t.sum()
    p = t / n
    pr = p.sum(axis=1)
    pc = p.sum(axis=0)
    nz = table > 0
    mi = math.fsum((p[nz] * np.log(p[nz] / np.outer(pr, pc)[nz])).tolist())
    hr = -math.fsum((pr[pr > 0] * np.log(pr[pr > 0])).tolist())
    hc = -math.fsum((pc[pc > 0] * np.log(pc[pc > 0])).tolist())
    return 100 * mi / ((hr + hc) / 2)


def test_doctests() -> None:
    result = doctest.testmod(clustering_module)
    assert result.attempted > 0 and result.failed == 0


class TestScoresFromTable:
    def test_permuted_perfect_prediction(self) -> None:
        gt = np.array([0, 0, 1, 1, 1, 2, 3, 3])
        pred = np.array([2, 2, 0, 0, 0, 3, 1, 1])
        table = table_of(pred, gt, 4, 4)
        assert nmi_from_table(table) == pytest.approx(100.0, abs=1e-12)
        assert ari_from_table(table) == 100.0

    def test_constant_prediction_scores_zero(self) -> None:
        table = table_of(np.zeros(6, dtype=int), np.array([0, 1, 2, 0, 1, 2]), 3, 3)
        assert nmi_from_table(table) == 0.0
        assert ari_from_table(table) == 0.0

    def test_hand_computed_values(self) -> None:
        # gt [0, 0, 1, 1], pred [0, 0, 0, 1]: table rows pred, cols gt.
        table = np.array([[2, 1], [0, 1]])
        mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
        h_gt = math.log(2)
        h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
        assert nmi_from_table(table) == pytest.approx(100 * mi / ((h_gt + h_pred) / 2), abs=1e-12)
        # Pairs: sum C(n_ij, 2) = 1, rows C(3,2) + 0 = 3, cols 1 + 1 = 2, C(4, 2) = 6.
        expected = (1 - 3 * 2 / 6) / ((3 + 2) / 2 - 3 * 2 / 6)
        assert ari_from_table(table) == pytest.approx(100 * expected, abs=1e-12)
        # Anti-correlated pairs give the ARI minimum of a 2x2 table.
        assert ari_from_table(np.array([[1, 1], [1, 1]])) == pytest.approx(-50.0)

    def test_matches_sklearn_on_random_tables(self) -> None:
        rng = np.random.default_rng(0)
        for trial in range(100):
            n = int(rng.integers(2, 400))
            num_pred, num_gt = int(rng.integers(1, 9)), int(rng.integers(1, 9))
            gt = rng.integers(0, num_gt, n)
            pred = rng.integers(0, num_pred, n) if trial % 2 else (gt * 7 + rng.integers(0, 2, n)) % num_pred
            nmi, ari = sk_scores(gt, pred)
            table = table_of(pred, gt, num_pred, num_gt)
            assert nmi_from_table(table) == pytest.approx(nmi, abs=1e-9)
            assert ari_from_table(table) == pytest.approx(ari, abs=1e-9)

    def test_ignores_empty_rows_and_columns(self) -> None:
        table = np.array([[3, 0, 1], [0, 0, 0], [1, 0, 4]])
        assert nmi_from_table(table) == pytest.approx(nmi_from_table(table[[0, 2]][:, [0, 2]]), abs=1e-12)
        assert ari_from_table(table) == pytest.approx(ari_from_table(table[[0, 2]][:, [0, 2]]), abs=1e-12)

    def test_accepts_torch_and_table(self) -> None:
        table = np.array([[3, 1], [2, 5]])
        expected = clustering_scores(table)
        assert clustering_scores(torch.from_numpy(table)) == expected
        acc = ContingencyTable(2, 2)
        acc.counts += torch.from_numpy(table)
        assert clustering_scores(acc) == expected
        assert expected["count"] == 11

    @pytest.mark.parametrize(
        "table",
        [np.zeros(3, dtype=np.int64), np.ones((2, 2)) * 0.5, np.array([[1, -1], [0, 0]])],
        ids=["rank1", "float", "negative"],
    )
    def test_rejects_bad_tables(self, table: np.ndarray) -> None:
        with pytest.raises(ValueError, match="contingency table"):
            nmi_from_table(table)
        with pytest.raises(ValueError, match="contingency table"):
            ari_from_table(table)


class TestDegenerateInputs:
    def test_one_cluster_on_both_sides(self) -> None:
        labels = np.zeros(7, dtype=int)
        assert sk_scores(labels, labels) == (100.0, 100.0)
        assert nmi_ari(labels, labels + 3) == (100.0, 100.0)

    def test_all_distinct_on_both_sides(self) -> None:
        labels = np.arange(9)
        nmi, ari = nmi_ari(labels, labels[::-1])
        sk_nmi, sk_ari = sk_scores(labels[::-1], labels)
        assert nmi == pytest.approx(sk_nmi, abs=1e-9) and nmi == pytest.approx(100.0, abs=1e-9)
        assert ari == sk_ari == 100.0

    def test_one_cluster_against_all_distinct(self) -> None:
        pred, gt = np.zeros(5, dtype=int), np.arange(5)
        assert nmi_ari(pred, gt) == (0.0, 0.0)
        assert sk_scores(gt, pred) == (0.0, 0.0)

    def test_single_item(self) -> None:
        assert nmi_ari([4], [2]) == (100.0, 100.0)
        assert sk_scores([2], [4]) == (100.0, 100.0)

    def test_empty_is_nan_not_sklearns_one(self) -> None:
        nmi, ari = nmi_ari(np.array([], dtype=int), np.array([], dtype=int))
        assert math.isnan(nmi) and math.isnan(ari)
        scores = ContingencyTable(3, 4).compute()
        assert scores["count"] == 0 and math.isnan(scores["nmi"]) and math.isnan(scores["ari"])
        # Documented deviation: sklearn calls an empty labelling a perfect match.
        assert sk_scores(np.array([], dtype=int), np.array([], dtype=int)) == (100.0, 100.0)


class TestOverflowSafety:
    @pytest.mark.parametrize("total", [5 * 10**8, 5 * 10**10])
    def test_huge_tables(self, total: int) -> None:
        rng = np.random.default_rng(1)
        weights = rng.random((4, 16)) ** 3
        table = np.floor(weights / weights.sum() * total).astype(np.int64)
        assert table.sum() > 0.99 * total
        # The pair-count products must exceed int64 for the test to mean anything.
        n = int(table.sum())
        assert n**4 > 2**63
        assert ari_from_table(table) == pytest.approx(100 * float(exact_ari(table)), rel=1e-12, abs=1e-12)
        assert nmi_from_table(table) == pytest.approx(reference_nmi(table), rel=1e-9)

    def test_nmi_is_scale_invariant_against_sklearn(self) -> None:
        rng = np.random.default_rng(2)
        gt = rng.integers(0, 5, 300)
        pred = (gt + rng.integers(0, 3, 300)) % 4
        table = table_of(pred, gt, 4, 5)
        sk_nmi, _ = sk_scores(gt, pred)
        assert nmi_from_table(table * 10**7) == pytest.approx(sk_nmi, abs=1e-9)

    def test_streaming_counts_above_int32(self) -> None:
        acc = ContingencyTable(2, 2)
        acc.counts += torch.tensor([[3 * 10**9, 10**9], [10**9, 3 * 10**9]])
        acc.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
        table = acc.table
        assert table.dtype == np.int64 and int(table.sum()) == 8 * 10**9 + 2
        assert acc.compute()["ari"] == pytest.approx(100 * float(exact_ari(table)), rel=1e-12)


class TestContingencyTable:
    def test_smoke_and_shape(self) -> None:
        acc = ContingencyTable(3, 5)
        assert acc.table.shape == (3, 5) and acc.table.dtype == np.int64 and acc.count == 0

    def test_counts_cells(self) -> None:
        acc = ContingencyTable(2, 3)
        acc.update(np.array([[0, 1], [1, 1]]), np.array([[2, 0], [0, 1]]))
        assert acc.table.tolist() == [[0, 0, 1], [2, 1, 0]]

    def test_streaming_equals_sklearn(self) -> None:
        rng = np.random.default_rng(3)
        acc = ContingencyTable(5, 7)
        all_pred, all_gt = [], []
        for step in range(40):
            gt = rng.integers(0, 7, size=(2, 6, 5))
            pred = (gt + rng.integers(0, 3, size=gt.shape)) % 5
            valid = rng.random(gt.shape) > 0.3
            if step % 2:
                acc.update(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid))
            else:
                acc.update(pred.astype(np.int32), gt.astype(np.uint8), valid)
            all_pred.append(pred[valid])
            all_gt.append(gt[valid])
        nmi, ari = sk_scores(np.concatenate(all_gt), np.concatenate(all_pred))
        scores = acc.compute()
        assert scores["nmi"] == pytest.approx(nmi, abs=1e-9)
        assert scores["ari"] == pytest.approx(ari, abs=1e-9)
        assert scores["count"] == sum(len(p) for p in all_pred)

    def test_invalid_positions_may_hold_ignore_labels(self) -> None:
        acc = ContingencyTable(2, 2)
        gt = torch.tensor([0, 255, 1])
        acc.update(torch.tensor([1, 0, 0]), gt, gt != 255)
        assert acc.table.tolist() == [[0, 1], [1, 0]]

    @pytest.mark.parametrize(
        ("pred", "gt", "match"),
        [
            ([0, 4], [0, 1], r"pred labels must lie in \[0, 4\) \(num_pred=4\), got values in \[0, 4\]"),
            ([0, 1], [-1, 1], r"gt labels must lie in \[0, 3\) \(num_gt=3\), got values in \[-1, 1\]"),
            ([0, 1], [0, 3], r"gt labels must lie in \[0, 3\)"),
        ],
    )
    def test_out_of_range_labels(self, pred: list, gt: list, match: str) -> None:
        acc = ContingencyTable(4, 3)
        with pytest.raises(ValueError, match=match):
            acc.update(torch.tensor(pred), torch.tensor(gt))
        assert acc.count == 0

    def test_out_of_range_under_valid_mask_is_still_an_error(self) -> None:
        acc = ContingencyTable(2, 2)
        with pytest.raises(ValueError, match="gt labels"):
            acc.update(torch.tensor([0, 0]), torch.tensor([5, 7]), torch.tensor([False, True]))

    def test_input_errors(self) -> None:
        acc = ContingencyTable(2, 2)
        with pytest.raises(ValueError, match="integer"):
            acc.update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="same shape"):
            acc.update(torch.tensor([0, 1]), torch.tensor([[0, 1]]))
        with pytest.raises(ValueError, match="bool mask"):
            acc.update(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([1, 0]))
        with pytest.raises(ValueError, match="labels' shape"):
            acc.update(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([True]))
        with pytest.raises(ValueError, match="num_gt must be a positive int"):
            ContingencyTable(2, 0)

    def test_empty_update_is_a_no_op(self) -> None:
        acc = ContingencyTable(2, 2)
        acc.update(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
        acc.update(torch.tensor([0, 9]), torch.tensor([0, 9]), torch.tensor([False, False]))
        assert acc.count == 0

    def test_merge_equals_single_table(self) -> None:
        rng = np.random.default_rng(4)
        pred, gt = rng.integers(0, 3, 100), rng.integers(0, 4, 100)
        whole, first, second = ContingencyTable(3, 4), ContingencyTable(3, 4), ContingencyTable(3, 4)
        whole.update(pred, gt)
        first.update(pred[:30], gt[:30])
        second.update(pred[30:], gt[30:])
        first.merge(second)
        assert np.array_equal(first.table, whole.table)
        with pytest.raises(ValueError, match="shapes differ"):
            first.merge(ContingencyTable(4, 3))

    def test_reset(self) -> None:
        acc = ContingencyTable(2, 2)
        acc.update([0, 1], [1, 1])
        acc.reset()
        assert acc.count == 0

    def test_all_reduce_without_process_group_is_a_no_op(self) -> None:
        acc = ContingencyTable(2, 2)
        acc.update([0, 1], [1, 1])
        acc.all_reduce()
        assert acc.table.tolist() == [[0, 1], [0, 1]]

    @pytest.mark.parametrize("device", DEVICES)
    def test_follows_input_device(self, device: str) -> None:
        acc = ContingencyTable(3, 3)
        pred = torch.tensor([0, 1, 2, 2], device=device)
        acc.update(pred, pred)
        assert acc.counts.device.type == device
        acc.update(np.array([0]), np.array([1]))  # numpy input joins the table on its device
        assert acc.table.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 2]]

    @pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.int64])
    def test_label_dtypes(self, dtype: torch.dtype) -> None:
        acc = ContingencyTable(3, 3)
        acc.update(torch.tensor([0, 2], dtype=dtype), torch.tensor([1, 2], dtype=dtype))
        assert acc.table.tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 1]]


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        acc = ContingencyTable(2, 3)
        acc.update(torch.tensor([rank, 1]), torch.tensor([2, rank]))
        acc.all_reduce()
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), acc.table)
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_all_reduce_sums_over_ranks() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_worker, args=(2, os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        tables = [np.load(os.path.join(tmp, f"rank{r}.npy")) for r in range(2)]
    # rank 0 adds (0, 2), (1, 0); rank 1 adds (1, 2), (1, 1).
    expected = [[0, 0, 1], [1, 1, 1]]
    assert tables[0].tolist() == expected and tables[1].tolist() == expected


class TestNmiAri:
    def test_equals_sklearn_with_arbitrary_label_values(self) -> None:
        rng = np.random.default_rng(5)
        gt = rng.choice([-3, 10, 1000, 7], size=200)
        pred = rng.choice([5, 2**40, 0], size=200)
        nmi, ari = sk_scores(gt, pred)
        ours = nmi_ari(torch.from_numpy(pred), gt)
        assert ours[0] == pytest.approx(nmi, abs=1e-9) and ours[1] == pytest.approx(ari, abs=1e-9)

    def test_length_mismatch(self) -> None:
        with pytest.raises(ValueError, match="same number of items"):
            nmi_ari([0, 1], [0])
