import doctest

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LinearRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.preprocessing import StandardScaler

import partdisco.metrics.keypoints as keypoints_module
from partdisco.geometry.logits import ALIGN_KEYPOINTS, ALIGN_PIXELS, ALIGN_TRAIN
from partdisco.metrics import (
    KeypointNMI,
    KeypointRegressor,
    all_classes_protocol,
    labels_at_keypoints,
    logits_to_labels,
    normalize_by_bbox,
    part_centroids,
    three_class_protocol,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_doctests() -> None:
    result = doctest.testmod(keypoints_module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "align, reference", [(ALIGN_KEYPOINTS, False), (ALIGN_PIXELS, True), (ALIGN_TRAIN, True)]
)
def test_reference_align_constants(align: bool, reference: bool) -> None:
    """Labels made with each protocol's constant are the reference's interpolate + argmax."""
    logits = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(logits, size=(17, 17), mode="bilinear", align_corners=reference).argmax(1)
    other = F.interpolate(logits, size=(17, 17), mode="bilinear", align_corners=not reference).argmax(1)
    labels = logits_to_labels(logits, (17, 17), align_corners=align)
    assert torch.equal(labels, expected) and not torch.equal(labels, other)


class TestLogitsToLabels:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_fg_labels_are_argmax_of_upsampled_logits(self, align_corners: bool) -> None:
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(2, 4, 5, 7, generator=g)
        labels = logits_to_labels(logits, (20, 28), align_corners=align_corners)
        up = F.interpolate(logits, size=(20, 28), mode="bilinear", align_corners=align_corners)
        assert labels.shape == (2, 20, 28) and labels.dtype == torch.int64
        assert torch.equal(labels, up.argmax(dim=1))

    def test_same_size_is_plain_argmax(self) -> None:
        logits = torch.randn(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
        assert torch.equal(logits_to_labels(logits, (6, 6), align_corners=False), logits.argmax(1))

    def test_full_labels_follow_the_reference_formula(self) -> None:
        g = torch.Generator().manual_seed(2)
        logits = torch.randn(2, 4, 8, 8, generator=g)
        fg = torch.rand(2, 1, 16, 16, generator=g)
        fg[:, :, :4] = 0.0  # certain background
        fg[:, :, -4:] = 255.0  # unnormalised supervised masks (0/255)
        labels = logits_to_labels(logits, (16, 16), align_corners=False, fg_mask=fg, background="mask")
        up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
        expected = torch.cat([1 - fg, fg * torch.softmax(up, dim=1)], dim=1).argmax(dim=1)
        assert torch.equal(labels, expected)
        assert (labels[:, :4] == 0).all()
        assert torch.equal(labels[:, -4:], up[:, :, -4:].argmax(dim=1) + 1)
        assert int(labels.max()) <= 4

    def test_fractional_mask_is_not_a_threshold(self) -> None:
        # fg = 0.3 with a confident part: 1 - 0.3 = 0.7 > 0.3 * ~1.0, so the formula says background
        # although the mask is > 0; fg = 0.6 makes it part 2 (label 3).
        logits = torch.tensor([0.0, 0.0, 20.0]).view(1, 3, 1, 1).expand(1, 3, 1, 2)
        fg = torch.tensor([0.3, 0.6]).view(1, 1, 1, 2)
        labels = logits_to_labels(logits, (1, 2), align_corners=False, fg_mask=fg, background="mask")
        assert labels.tolist() == [[[0, 3]]]

    def test_ties_go_to_the_lowest_label(self) -> None:
        logits = torch.zeros(1, 3, 2, 2)
        assert (logits_to_labels(logits, (2, 2), align_corners=False) == 0).all()
        # One part and fg = 0.5: scores [1 - 0.5, 0.5 * 1.0] tie exactly -> background; fg = 1.0 -> [0, 1].
        logits = torch.zeros(1, 1, 1, 2)
        fg = torch.tensor([0.5, 1.0]).view(1, 1, 1, 2)
        labels = logits_to_labels(logits, (1, 2), align_corners=False, fg_mask=fg, background="mask")
        assert labels.tolist() == [[[0, 1]]]

    def test_half_precision_input(self) -> None:
        logits = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(3))
        labels = logits_to_labels(logits.half(), (6, 6), align_corners=True)
        up = F.interpolate(logits.half().float(), size=(6, 6), mode="bilinear", align_corners=True)
        assert torch.equal(labels, up.argmax(1))

    def test_errors(self) -> None:
        logits = torch.zeros(1, 2, 3, 3)
        with pytest.raises(ValueError, match=r"expected logits \(B, C, h, w\)"):
            logits_to_labels(torch.zeros(2, 3, 3), (3, 3), align_corners=False)
        with pytest.raises(ValueError, match="needs fg_mask"):
            logits_to_labels(logits, (3, 3), align_corners=False, background="mask")
        with pytest.raises(ValueError, match="only used with background='mask'"):
            logits_to_labels(logits, (3, 3), align_corners=False, fg_mask=torch.ones(1, 1, 3, 3))
        with pytest.raises(ValueError, match=r"expected fg_mask \(B, 1, H, W\)"):
            logits_to_labels(
                logits, (3, 3), align_corners=False, fg_mask=torch.ones(1, 3, 3), background="mask"
            )
        with pytest.raises(ValueError, match="background must be"):
            logits_to_labels(logits, (3, 3), align_corners=False, background="full")
        with pytest.raises(ValueError, match="size must be"):
            logits_to_labels(logits, (0, 3), align_corners=False)

    @pytest.mark.parametrize("device", DEVICES)
    def test_device(self, device: str) -> None:
        logits = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(4))
        fg = torch.ones(1, 1, 6, 6)
        out = logits_to_labels(
            logits.to(device), (6, 6), align_corners=False, fg_mask=fg.to(device), background="mask"
        )
        assert out.device.type == device
        expected = logits_to_labels(logits, (6, 6), align_corners=False, fg_mask=fg, background="mask")
        assert torch.equal(out.cpu(), expected)


class TestLabelsAtKeypoints:
    def column_labels(self, B: int = 1, H: int = 6, W: int = 8) -> torch.Tensor:
        return torch.arange(W).view(1, 1, W).expand(B, H, W).contiguous()  # label = column index

    def test_convention_floor(self) -> None:
        labels = self.column_labels()
        pred, index = labels_at_keypoints(labels, torch.tensor([[[3.7, 2.0, 1.0]]]))
        assert pred.tolist() == [3] and index.tolist() == [0]
        rows = self.column_labels().transpose(1, 2).contiguous()  # (1, 8, 6): label = row index
        pred, _ = labels_at_keypoints(rows, torch.tensor([[[1.0, 3.7, 1.0]]]))
        assert pred.tolist() == [3]

    def test_convention_matches_reference_grid_sample(self) -> None:
        # Away from odd integers the reference's nearest grid_sample reads the same pixel as floor.
        g = torch.Generator().manual_seed(5)
        B, H, W, N = 3, 9, 11, 20
        labels = torch.randint(0, 5, (B, H, W), generator=g)
        xy = torch.rand(B, N, 2, generator=g) * torch.tensor([W, H])
        xy = torch.where((xy - xy.round()).abs() < 1e-3, xy + 0.01, xy)
        kps = torch.cat([xy, torch.ones(B, N, 1)], dim=-1)
        pred, _ = labels_at_keypoints(labels, kps)
        grid = (xy / torch.tensor([W, H]) * 2 - 1).unsqueeze(2)  # (B, N, 1, 2)
        ref = F.grid_sample(labels.unsqueeze(1).double(), grid.double(), mode="nearest", align_corners=False)
        assert torch.equal(pred, ref.view(-1).long())

    def test_visibility_and_bounds(self) -> None:
        labels = self.column_labels(B=2)
        kps = torch.tensor(
            [
                [[1.5, 1.0, 1.0], [2.5, 1.0, 0.0], [8.0, 6.0, 1.0], [-0.1, 1.0, 1.0]],
                [[0.0, 0.0, 1.0], [5.5, 6.01, 1.0], [6.5, 3.0, 0.6], [float("nan"), 1.0, 1.0]],
            ]
        )
        pred, index = labels_at_keypoints(labels, kps)
        # Kept: (0,0) x=1.5; (0,2) x=W clamps to column W-1; (1,0) x=0; (1,2) visibility 0.6 > 0.5.
        assert pred.tolist() == [1, 7, 0, 6]
        assert index.tolist() == [0, 2, 0, 2]

    def test_no_visible_keypoint(self) -> None:
        pred, index = labels_at_keypoints(self.column_labels(), torch.zeros(1, 15, 3))
        assert pred.shape == (0,) and index.shape == (0,)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match=r"expected labels \(B, H, W\)"):
            labels_at_keypoints(torch.zeros(4, 4, dtype=torch.long), torch.zeros(1, 2, 3))
        with pytest.raises(ValueError, match="integers"):
            labels_at_keypoints(torch.zeros(1, 4, 4), torch.zeros(1, 2, 3))
        with pytest.raises(ValueError, match=r"expected keypoints \(B, N, 3\)"):
            labels_at_keypoints(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 2, 2))
        with pytest.raises(ValueError, match="batch"):
            labels_at_keypoints(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(2, 2, 3))

    @pytest.mark.parametrize("device", DEVICES)
    def test_device(self, device: str) -> None:
        labels = self.column_labels().to(device)
        pred, index = labels_at_keypoints(labels, torch.tensor([[[3.7, 2.0, 1.0]]]))
        assert pred.device.type == device and index.device.type == device


class TestKeypointNMI:
    def test_equals_sklearn_over_batches(self) -> None:
        g = torch.Generator().manual_seed(6)
        metric = KeypointNMI(num_labels=5, num_keypoints=15)
        all_pred, all_kp = [], []
        for _ in range(6):
            labels = torch.randint(0, 5, (2, 16, 24), generator=g)
            xy = torch.rand(2, 15, 2, generator=g) * torch.tensor([24, 16])
            kps = torch.cat([xy, torch.rand(2, 15, 1, generator=g)], dim=-1)
            metric.update(labels, kps)
            pred, index = labels_at_keypoints(labels, kps)
            all_pred.append(pred.numpy())
            all_kp.append(index.numpy())
        gt, pred = np.concatenate(all_kp), np.concatenate(all_pred)
        scores = metric.compute()
        assert scores["count"] == len(gt)
        assert scores["nmi"] == pytest.approx(100 * normalized_mutual_info_score(gt, pred), abs=1e-9)
        assert scores["ari"] == pytest.approx(100 * adjusted_rand_score(gt, pred), abs=1e-9)

    def test_merge_and_reset(self) -> None:
        labels = torch.tensor([[[0, 1]]])
        kps = torch.tensor([[[0.5, 0.5, 1.0], [1.5, 0.5, 1.0]]])
        a, b = KeypointNMI(2, 2), KeypointNMI(2, 2)
        a.update(labels, kps)
        b.update(labels, kps)
        a.merge(b)
        a.all_reduce()
        assert a.table.table.tolist() == [[2, 0], [0, 2]]
        a.reset()
        assert a.table.count == 0

    def test_errors(self) -> None:
        metric = KeypointNMI(2, 3)
        with pytest.raises(ValueError, match="expected 3 keypoints per image, got 2"):
            metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 3))
        with pytest.raises(ValueError, match=r"pred labels must lie in \[0, 2\)"):
            metric.update(torch.full((1, 2, 2), 2), torch.ones(1, 3, 3))


class TestPartCentroids:
    def test_single_pixel_part(self) -> None:
        probs = torch.zeros(2, 3, 5, 7)
        probs[0, 1, 4, 2] = 1.0
        probs[1, 2, 0, 6] = 0.25
        centroids = part_centroids(probs)
        assert centroids.shape == (2, 3, 2) and centroids.dtype == torch.float32
        assert centroids[0, 1].tolist() == pytest.approx([2.5, 4.5])
        assert centroids[1, 2].tolist() == pytest.approx([6.5, 0.5])

    def test_uniform_map_is_the_image_centre(self) -> None:
        centroids = part_centroids(torch.ones(1, 1, 6, 10))
        assert centroids[0, 0].tolist() == pytest.approx([5.0, 3.0])

    def test_mask_weights(self) -> None:
        probs = torch.ones(1, 1, 4, 4)
        fg = torch.zeros(1, 1, 4, 4)
        fg[..., 1, 3] = 1.0
        fg[..., 3, 1] = 3.0
        # (3.5, 1.5) with weight 1 and (1.5, 3.5) with weight 3.
        assert part_centroids(probs, fg)[0, 0].tolist() == pytest.approx([2.0, 3.0])

    def test_empty_part_is_origin(self) -> None:
        assert part_centroids(torch.zeros(1, 2, 3, 3))[0].tolist() == [[0.0, 0.0], [0.0, 0.0]]

    def test_reference_offset_is_half_a_pixel(self) -> None:
        g = torch.Generator().manual_seed(7)
        probs = torch.softmax(torch.randn(2, 4, 9, 13, generator=g), dim=1)
        cols = torch.arange(1, 14, dtype=torch.float32).view(1, 1, 1, 13)
        rows = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 9, 1)
        mass = probs.sum(dim=(2, 3)) + 1e-8
        ref = torch.stack([(probs * cols).sum(dim=(2, 3)) / mass, (probs * rows).sum(dim=(2, 3)) / mass], -1)
        assert torch.allclose(part_centroids(probs), ref - 0.5, atol=1e-4)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match=r"expected probs \(B, K, H, W\)"):
            part_centroids(torch.zeros(3, 4, 4))
        with pytest.raises(ValueError, match=r"expected fg_mask \(B, 1, H, W\)"):
            part_centroids(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


class TestNormalizeByBbox:
    def test_torch_and_numpy(self) -> None:
        points = np.array([[[10.0, 20.0], [30.0, 60.0]], [[0.0, 0.0], [5.0, 5.0]]])
        bbox = np.array([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 10.0, 20.0]])
        expected = [[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [0.5, 0.25]]]
        assert normalize_by_bbox(points, bbox).tolist() == expected
        out = normalize_by_bbox(torch.from_numpy(points), torch.from_numpy(bbox))
        assert isinstance(out, torch.Tensor) and out.tolist() == expected

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="x1 > x0"):
            normalize_by_bbox(torch.zeros(1, 2, 2), torch.tensor([[5.0, 0.0, 5.0, 3.0]]))
        with pytest.raises(ValueError, match=r"expected points \(B, M, 2\)"):
            normalize_by_bbox(torch.zeros(2, 2), torch.zeros(1, 4))
        with pytest.raises(ValueError, match=r"expected bbox \(B, 4\)"):
            normalize_by_bbox(torch.zeros(2, 3, 2), torch.ones(1, 4))


def planted_data(
    rng: np.random.Generator, M: int, K: int = 4, N: int = 15, coef: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.normal(0.5, 0.2, size=(M, 2 * K))
    if coef is None:
        coef = rng.normal(size=(2 * K, 2 * N))
    y = (x @ coef + np.linspace(-1, 1, 2 * N)).reshape(M, N, 2)  # affine: features -> keypoints
    return x, y, coef


class TestKeypointRegressor:
    def test_planted_relation_is_recovered(self) -> None:
        rng = np.random.default_rng(8)
        x, y, coef = planted_data(rng, 200)
        x_test, y_test, _ = planted_data(rng, 50, coef=coef)
        reg = KeypointRegressor().fit(x, y)
        assert np.abs(reg.predict(x_test) - y_test).max() < 1e-6
        assert reg.error(x_test, y_test, np.ones((50, 15), dtype=bool)) < 1e-6

    def test_equals_huang_li_sklearn_protocol(self) -> None:
        rng = np.random.default_rng(9)
        x, y, _ = planted_data(rng, 120, N=5)
        y = y + rng.normal(0, 0.05, y.shape)
        vis_train = rng.random((120, 5)) > 0.2
        x_test, y_test = rng.normal(0.5, 0.2, (40, 8)), rng.normal(size=(40, 5, 2))
        vis_test = rng.random((40, 5)) > 0.2
        ours = KeypointRegressor().fit(x, y, vis_train)
        errors, count = 0.0, 0
        for n in range(5):
            sx, sy = StandardScaler().fit(x[vis_train[:, n]]), StandardScaler().fit(y[vis_train[:, n], n])
            lr = LinearRegression(fit_intercept=False)
            lr.fit(sx.transform(x[vis_train[:, n]]), sy.transform(y[vis_train[:, n], n]))
            pred = sy.inverse_transform(lr.predict(sx.transform(x_test)))
            assert np.allclose(ours.predict(x_test)[:, n], pred, atol=1e-9)
            errors += np.linalg.norm(pred - y_test[:, n], axis=1)[vis_test[:, n]].sum()
            count += vis_test[:, n].sum()
        assert ours.error(x_test, y_test, vis_test) == pytest.approx(100 * errors / count, abs=1e-9)

    def test_invisible_keypoints_are_ignored(self) -> None:
        rng = np.random.default_rng(10)
        x, y, _ = planted_data(rng, 80, N=3)
        vis = rng.random((80, 3)) > 0.3
        garbage = np.where(vis[..., None], y, 1e6)
        a = KeypointRegressor().fit(x, y, vis)
        b = KeypointRegressor().fit(x, garbage, vis.astype(np.float32))
        assert np.allclose(a.predict(x), b.predict(x), atol=1e-9)
        assert b.error(x, garbage, vis) < 1e-6

    def test_hand_computed_error(self) -> None:
        rng = np.random.default_rng(11)
        x, y, _ = planted_data(rng, 60, N=2)
        reg = KeypointRegressor().fit(x, y)
        shifted = reg.predict(x[:3]) + np.array([0.03, 0.04])
        assert reg.error(x[:3], shifted, np.ones((3, 2), dtype=bool)) == pytest.approx(5.0, abs=1e-9)

    def test_equals_least_squares_with_intercept(self) -> None:
        rng = np.random.default_rng(12)
        x, y, _ = planted_data(rng, 100, N=4)
        y = y + rng.normal(0, 0.1, y.shape)
        reg = KeypointRegressor().fit(torch.from_numpy(x), torch.from_numpy(y))
        design = np.concatenate([x, np.ones((100, 1))], axis=1)
        solution = np.linalg.lstsq(design, y.reshape(100, 8), rcond=None)[0]
        assert np.allclose(reg.predict(x), (design @ solution).reshape(100, 4, 2), atol=1e-9)

    def test_errors(self) -> None:
        rng = np.random.default_rng(13)
        x, y, _ = planted_data(rng, 20, N=2)
        with pytest.raises(ValueError, match="call fit"):
            KeypointRegressor().predict(x)
        # a keypoint never visible in training is not fitted and not scored
        partial = KeypointRegressor().fit(x, y, np.array([[True, False]] * 20))
        assert partial.fitted.tolist() == [True, False]
        only_first = partial.error(x, y, np.ones((20, 2), dtype=bool))
        assert only_first == pytest.approx(partial.error(x, y, np.array([[True, False]] * 20)))
        with pytest.raises(ValueError, match="no visible"):
            partial.error(x, y, np.array([[False, True]] * 20))
        with pytest.raises(ValueError, match=r"expected features \(M, 2K\)"):
            KeypointRegressor().fit(x[:, None], y)
        reg = KeypointRegressor().fit(x, y)
        with pytest.raises(ValueError, match="no visible"):
            reg.error(x, y, np.zeros((20, 2), dtype=bool))
        with pytest.raises(ValueError, match="NaN"):
            reg.predict(np.full_like(x, np.nan))


class TestProtocols:
    def test_three_class_protocol_fits_on_classes_one_to_three(self) -> None:
        rng = np.random.default_rng(14)
        x, y, coef = planted_data(rng, 90, N=3)
        other_x, other_y, _ = planted_data(rng, 60, N=3)  # classes 4, 5 follow another relation
        train_x = np.concatenate([x, other_x])
        train_y = np.concatenate([y, other_y])
        train_cls = np.concatenate([np.repeat([1, 2, 3], 30), np.repeat([4, 5], 30)])
        test_x, test_y, _ = planted_data(rng, 30, N=3, coef=coef)
        test_y[:10, 0] += 0.1  # class-1 keypoint 0 off by 0.1 on the test side
        test_cls = np.repeat([1, 2, 3], 10)
        vis = np.ones((30, 3), dtype=bool)
        errors = three_class_protocol(train_x, train_y, None, train_cls, test_x, test_y, vis, test_cls)
        assert set(errors) == {1, 2, 3}
        assert errors[1] == pytest.approx(100 * 0.1 * np.sqrt(2) / 3, abs=1e-6)
        assert errors[2] < 1e-6 and errors[3] < 1e-6

    def test_three_class_protocol_errors(self) -> None:
        rng = np.random.default_rng(15)
        x, y, _ = planted_data(rng, 20, N=2)
        vis = np.ones((20, 2), dtype=bool)
        with pytest.raises(ValueError, match="class 2 has no training sample"):
            three_class_protocol(x, y, vis, np.ones(20), x, y, vis, np.ones(20))
        cls = np.repeat([1, 2, 3, 3], 5)
        with pytest.raises(ValueError, match="class 2 has no test sample"):
            three_class_protocol(x, y, vis, cls, x, y, vis, np.ones(20))

    def test_all_classes_protocol(self) -> None:
        rng = np.random.default_rng(16)
        x, y, coef = planted_data(rng, 100, N=3)
        test_x, test_y, _ = planted_data(rng, 20, N=3, coef=coef)
        vis = torch.ones(20, 3)
        assert all_classes_protocol(x, y, None, test_x, test_y, vis) < 1e-6
