import doctest
import itertools
import math

import numpy as np
import pytest
import torch

import partdisco.metrics.matching as matching_module
from partdisco.metrics import ContingencyTable, hungarian_miou, hungarian_miou_labels, iou_matrix


def test_doctests() -> None:
    result = doctest.testmod(matching_module)
    assert result.attempted > 0 and result.failed == 0


class TestIouMatrix:
    def test_hand_computed(self) -> None:
        # pred 0 covers 3 px: 2 of GT 0, 1 of GT 1; pred 1 covers 1 px of GT 1.
        iou = iou_matrix(np.array([[2, 1], [0, 1]]))
        assert np.allclose(iou, [[2 / 3, 1 / 4], [0.0, 1 / 2]], rtol=0, atol=1e-15)

    def test_empty_union_is_zero(self) -> None:
        assert iou_matrix(np.zeros((2, 3), dtype=np.int64)).tolist() == [[0.0] * 3] * 2


class TestHungarianMiou:
    def test_permuted_perfect_prediction(self) -> None:
        rng = np.random.default_rng(0)
        gt = rng.integers(0, 4, size=(3, 20, 20))  # 0 = background, parts 1..3
        perm = np.array([2, 0, 3, 1])  # pred label of each GT label
        names = ["head", "body", "tail"]
        result = hungarian_miou_labels(perm[gt], gt, num_pred=4, num_gt=4, part_names=names)
        assert result["miou"] == pytest.approx(100.0)
        assert result["matching"] == {"head": 0, "body": 3, "tail": 1}
        assert result["iou"] == pytest.approx({"head": 100.0, "body": 100.0, "tail": 100.0})
        assert result["unmatched_pred"] == [2] and result["absent_gt"] == []

    def test_background_ignored_versus_scored(self) -> None:
        # GT columns: background, part_1, part_2. Pred 0 leaks 4 px onto the background.
        confusion = np.array([[4, 6, 0], [0, 0, 5]])
        ignored = hungarian_miou(confusion)
        assert ignored["iou"] == pytest.approx({"part_1": 100.0, "part_2": 100.0})
        scored = hungarian_miou(confusion, ignore_background=False)
        # Two predicted parts for three GT parts: background stays unmatched with IoU 0.
        assert scored["matching"] == {"background": None, "part_1": 0, "part_2": 1}
        assert scored["iou"] == pytest.approx({"background": 0.0, "part_1": 60.0, "part_2": 100.0})
        assert scored["miou"] == pytest.approx(160.0 / 3)

    def test_fewer_predicted_than_gt_parts(self) -> None:
        confusion = np.array([[0, 5, 1, 0], [0, 0, 1, 8]])
        result = hungarian_miou(confusion, part_names=["a", "b", "c"])
        assert result["matching"] == {"a": 0, "b": None, "c": 1}
        assert result["iou"]["b"] == 0.0
        assert result["iou"]["a"] == pytest.approx(100 * 5 / 6)  # union: pred 0 has 6 px, GT a 5 px
        assert result["iou"]["c"] == pytest.approx(100 * 8 / 9)
        assert result["miou"] == pytest.approx((100 * 5 / 6 + 0.0 + 100 * 8 / 9) / 3)
        assert result["unmatched_pred"] == []

    def test_absent_gt_part_is_left_out(self) -> None:
        confusion = np.array([[0, 5, 0], [0, 0, 0], [0, 1, 0]])
        result = hungarian_miou(confusion)
        assert math.isnan(result["iou"]["part_2"]) and result["matching"]["part_2"] is None
        assert result["absent_gt"] == ["part_2"]
        assert result["miou"] == pytest.approx(100 * 5 / 6)
        assert result["unmatched_pred"] == [1, 2]

    def test_nothing_to_score(self) -> None:
        result = hungarian_miou(np.array([[3, 0], [2, 0]]))
        assert math.isnan(result["miou"]) and result["absent_gt"] == ["part_1"]

    def test_matches_brute_force(self) -> None:
        rng = np.random.default_rng(1)
        for _ in range(20):
            confusion = rng.integers(0, 20, size=(4, 5))
            result = hungarian_miou(confusion)
            iou = iou_matrix(confusion[:, 1:])
            best = max(sum(iou[p[j], j] for j in range(4)) for p in itertools.permutations(range(4)))
            assert result["miou"] == pytest.approx(100 * best / 4)

    def test_accepts_table_and_tensor(self) -> None:
        table = ContingencyTable(2, 3)
        table.update(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 0]))
        from_table = hungarian_miou(table)
        from_tensor = hungarian_miou(torch.from_numpy(table.table))
        assert from_table == from_tensor
        assert from_table["miou"] == pytest.approx(100.0)

    def test_part_names_length(self) -> None:
        with pytest.raises(ValueError, match="expected 2 names"):
            hungarian_miou(np.zeros((2, 3), dtype=np.int64), part_names=["a"])

    def test_valid_mask(self) -> None:
        gt = np.array([1, 2, 2, 0])
        pred = np.array([0, 1, 1, 9])
        result = hungarian_miou_labels(pred, gt, num_pred=2, num_gt=3, valid=pred < 2)
        assert result["miou"] == pytest.approx(100.0)
