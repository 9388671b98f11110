import math

import pytest
import torch
import torch.nn.functional as F

from partdisco.config import LossConfig
from partdisco.losses import (
    Objective,
    background_bce,
    contrastive_infonce,
    equivariance_kl,
    part_feature_statistics,
    pool_part_features,
    sample_positive_images,
    within_part_variance,
)


def naive_variance(probs, fg, feats, eps=1e-5):
    """The reference's per-image loop formula (loss.py consistency_loss), written out directly."""
    out = []
    for b in range(probs.shape[0]):
        p = probs[b] * fg[b]  # (K, H, W)
        f = feats[b] * fg[b]  # (C, H, W)
        total = 0.0
        for k in range(p.shape[0]):
            mean = (p[k] * f).sum((1, 2)) / (p[k].sum() + eps)  # (C,)
            total = total + (p[k] * (f - mean[:, None, None]) ** 2).sum()
        out.append(total / (fg[b].sum() + eps))
    return torch.stack(out)


def naive_infonce(z, positives, tau):
    z = F.normalize(z, dim=-1)
    B, K, _ = z.shape
    losses = []
    for b in range(B):
        for k in range(K):
            pos = (z[b, k] * z[positives[b, k], k]).sum() / tau
            negs = [(z[b, k] * z[bb, j]).sum() / tau for bb in range(B) for j in range(K) if j != k]
            logits = torch.stack([pos] + negs)
            losses.append(torch.logsumexp(logits, 0) - pos)
    return torch.stack(losses).mean()


class TestPoolPartFeatures:
    def test_hand_value(self):
        probs = torch.zeros(1, 2, 1, 4)
        probs[0, 0, 0, :2] = 1
        probs[0, 1, 0, 2:] = 1
        feats = torch.tensor([1.0, 3.0, 10.0, 20.0]).view(1, 1, 1, 4)
        z = pool_part_features(probs, torch.ones(1, 1, 1, 4), feats)
        assert torch.allclose(z.flatten(), torch.tensor([2.0, 15.0]), atol=1e-5)

    def test_mask_excludes_background(self):
        probs = torch.ones(1, 1, 1, 3)
        feats = torch.tensor([1.0, 2.0, 100.0]).view(1, 1, 1, 3)
        fg = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
        assert pool_part_features(probs, fg, feats).item() == pytest.approx(1.5, abs=1e-5)

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="fg_mask"):
            pool_part_features(torch.rand(2, 3, 4, 4), torch.rand(2, 2, 4, 4), torch.rand(2, 5, 4, 4))
        with pytest.raises(ValueError, match="features"):
            pool_part_features(torch.rand(2, 3, 4, 4), torch.rand(2, 1, 4, 4), torch.rand(2, 5, 4, 3))


class TestWithinPartVariance:
    def test_uniform_part_is_zero(self):
        probs = torch.softmax(torch.randn(2, 4, 8, 8), 1)
        feats = torch.full((2, 3, 8, 8), 42.0)
        assert torch.allclose(
            within_part_variance(probs, torch.ones(2, 1, 8, 8), feats), torch.zeros(2), atol=1e-3
        )

    def test_hand_value(self):
        # one part, features 0 and 2 on two fg pixels: sum of squared deviations 2, / area 2 = 1
        probs = torch.ones(1, 1, 1, 2)
        feats = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
        assert within_part_variance(probs, torch.ones(1, 1, 1, 2), feats).item() == pytest.approx(
            1.0, rel=1e-4
        )

    def test_hard_parts_split_variance(self):
        probs = torch.zeros(1, 2, 1, 4)
        probs[0, 0, 0, :2] = 1
        probs[0, 1, 0, 2:] = 1
        feats = torch.tensor([0.0, 0.0, 5.0, 5.0]).view(1, 1, 1, 4)
        assert within_part_variance(probs, torch.ones(1, 1, 1, 4), feats).item() == pytest.approx(
            0.0, abs=1e-4
        )

    def test_matches_reference_loop(self):
        g = torch.Generator().manual_seed(0)
        probs = torch.softmax(torch.randn(3, 4, 16, 16, generator=g), 1)
        fg = (torch.rand(3, 1, 16, 16, generator=g) > 0.3).float()
        feats = torch.randn(3, 5, 16, 16, generator=g) * 30 + 50  # Lab-like magnitudes
        ours = within_part_variance(probs, fg, feats)
        assert torch.allclose(ours, naive_variance(probs, fg, feats), rtol=1e-4)

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(1)
        logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
        fg = (torch.rand(2, 1, 4, 4, generator=g) > 0.2).double()
        feats = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)

        def fn(x, f):
            return within_part_variance(torch.softmax(x, 1), fg, f)

        assert fn(logits, feats).dtype == torch.float64
        assert torch.autograd.gradcheck(fn, (logits, feats))

    def test_gradcheck_descriptors(self):
        g = torch.Generator().manual_seed(2)
        logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
        fg = (torch.rand(2, 1, 4, 4, generator=g) > 0.2).double()
        feats = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)

        def fn(x, f):
            return part_feature_statistics(torch.softmax(x, 1), fg, f)[0]

        assert torch.autograd.gradcheck(fn, (logits, feats))
        assert torch.autograd.gradcheck(
            lambda x, f: pool_part_features(torch.softmax(x, 1), fg, f), (logits, feats)
        )

    def test_float32_island_unchanged(self):
        """float32 / bf16 inputs still compute in float32 (only float64 stays float64)."""
        g = torch.Generator().manual_seed(3)
        probs = torch.softmax(torch.randn(2, 3, 4, 4, generator=g), 1)
        fg = torch.ones(2, 1, 4, 4)
        feats = torch.randn(2, 2, 4, 4, generator=g)
        assert within_part_variance(probs, fg, feats).dtype == torch.float32
        assert within_part_variance(probs, fg, feats.bfloat16()).dtype == torch.float32


class TestPartFeatureStatistics:
    def test_equals_separate_functions_for_binary_masks(self):
        g = torch.Generator().manual_seed(4)
        probs = torch.softmax(torch.randn(3, 4, 16, 16, generator=g), 1)
        fg = (torch.rand(3, 1, 16, 16, generator=g) > 0.4).float()
        feats = torch.relu(torch.randn(3, 6, 16, 16, generator=g)) * 20
        z, v = part_feature_statistics(probs, fg, feats)
        assert torch.allclose(z, pool_part_features(probs, fg, feats), rtol=1e-4, atol=1e-4)
        assert torch.allclose(v, within_part_variance(probs, fg, feats), rtol=1e-4)
        assert torch.allclose(v, naive_variance(probs, fg, feats), rtol=1e-4)

    def test_bf16_features(self):
        g = torch.Generator().manual_seed(5)
        probs = torch.softmax(torch.randn(2, 3, 8, 8, generator=g), 1)
        fg = torch.ones(2, 1, 8, 8)
        feats = torch.randn(2, 5, 8, 8, generator=g)
        z, v = part_feature_statistics(probs, fg, feats.bfloat16())
        z32, v32 = part_feature_statistics(probs, fg, feats.bfloat16().float())
        assert (
            z.dtype == torch.float32
            and torch.allclose(z, z32, atol=1e-5)
            and torch.allclose(v, v32, rtol=1e-4)
        )

    def test_gradients_flow_to_probs(self):
        logits = torch.randn(2, 3, 8, 8, requires_grad=True)
        z, v = part_feature_statistics(
            torch.softmax(logits, 1), torch.ones(2, 1, 8, 8), torch.randn(2, 4, 8, 8)
        )
        (z.sum() + v.sum()).backward()
        assert logits.grad is not None and logits.grad.abs().sum() > 0


class TestSamplePositives:
    def test_never_self_and_uniform(self):
        pos = sample_positive_images(6, 4000, torch.Generator().manual_seed(0))
        own = torch.arange(6).view(-1, 1)
        assert (pos != own).all()
        counts = torch.bincount(pos[0], minlength=6)
        assert counts[0] == 0 and (counts[1:] > 600).all()  # all 5 others chosen

    def test_reference_off_by_one(self):
        pos = sample_positive_images(6, 4000, torch.Generator().manual_seed(0), reference_sampling=True)
        own = torch.arange(6).view(-1, 1)
        assert (pos != own).all()
        # image 0: others are 1..5 and the lowest (1) is never chosen; image 3: others 0,1,2,4,5 -> never 0
        assert (pos[0] != 1).all() and (pos[3] != 0).all()
        assert set(pos[0].tolist()) == {2, 3, 4, 5}

    def test_batch_two(self):
        for ref in (False, True):
            pos = sample_positive_images(2, 5, torch.Generator().manual_seed(0), reference_sampling=ref)
            assert (pos[0] == 1).all() and (pos[1] == 0).all()

    def test_batch_one_error(self):
        with pytest.raises(ValueError, match="batch_size >= 2"):
            sample_positive_images(1, 4)


class TestContrastive:
    def test_matches_naive(self):
        g = torch.Generator().manual_seed(2)
        z = torch.randn(5, 4, 7, generator=g)
        pos = sample_positive_images(5, 4, g)
        assert contrastive_infonce(z, pos, 0.19).item() == pytest.approx(
            naive_infonce(z, pos, 0.19).item(), rel=1e-5
        )

    def test_perfect_parts_low_loss_and_swapped_high(self):
        z = torch.eye(4).repeat(3, 1, 1)  # every image: part k = e_k
        pos = sample_positive_images(3, 4, torch.Generator().manual_seed(0))
        good = contrastive_infonce(z, pos, 0.19)
        expected = math.log(1 + 9 * math.exp(-1 / 0.19))  # 9 negatives at cosine 0
        assert good.item() == pytest.approx(expected, rel=1e-4)
        bad = z.clone()
        bad[1] = bad[1][[1, 0, 2, 3]]
        assert contrastive_infonce(bad, pos, 0.19) > good

    def test_batch_two_works(self):
        z = torch.randn(2, 4, 8, requires_grad=True)
        loss = contrastive_infonce(z, sample_positive_images(2, 4), 0.19)
        loss.backward()
        assert torch.isfinite(loss) and z.grad is not None

    def test_anchor_rows_average_to_the_whole_batch(self):
        g = torch.Generator().manual_seed(3)
        z = torch.randn(6, 4, 5, generator=g)
        pos = sample_positive_images(6, 4, g)
        whole = contrastive_infonce(z, pos, 0.19)
        halves = (
            contrastive_infonce(z, pos, 0.19, anchor_rows=(0, 3))
            + contrastive_infonce(z, pos, 0.19, anchor_rows=(3, 6))
        ) / 2
        assert torch.allclose(whole, halves, atol=1e-6)
        with pytest.raises(ValueError, match="anchor_rows"):
            contrastive_infonce(z, pos, 0.19, anchor_rows=(4, 9))

    def test_errors(self):
        with pytest.raises(ValueError, match=r"\(B, K, D\)"):
            contrastive_infonce(torch.randn(4, 8), torch.zeros(4, 1, dtype=torch.long))
        with pytest.raises(ValueError, match="positive_images"):
            contrastive_infonce(torch.randn(3, 4, 8), torch.zeros(3, 2, dtype=torch.long))


class TestEquivariance:
    def test_identical_is_zero_and_positive_otherwise(self):
        x = torch.randn(2, 4, 8, 8)
        fg = torch.ones(2, 1, 8, 8)
        assert equivariance_kl(x, x, fg).abs().item() < 1e-6
        assert equivariance_kl(torch.randn(2, 4, 8, 8), x, fg).item() > 0

    def test_hand_value(self):
        # target uniform over 2, pred (0.8, 0.2): KL = 0.5 log(0.5/0.8) + 0.5 log(0.5/0.2)
        pred = torch.log(torch.tensor([0.8, 0.2])).view(1, 2, 1, 1).expand(1, 2, 2, 2)
        target = torch.zeros(1, 2, 2, 2)
        expected = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
        assert equivariance_kl(pred, target, torch.ones(1, 1, 2, 2)).item() == pytest.approx(
            expected, rel=1e-5
        )

    def test_mask_weighting(self):
        pred = torch.zeros(1, 2, 1, 2)
        target = torch.zeros(1, 2, 1, 2)
        target[0, 0, 0, 1] = 5.0  # only pixel 1 disagrees
        fg = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
        assert equivariance_kl(pred, target, fg).item() == pytest.approx(0.0, abs=1e-6)

    def test_target_detached(self):
        pred = torch.randn(1, 3, 4, 4, requires_grad=True)
        target = torch.randn(1, 3, 4, 4, requires_grad=True)
        equivariance_kl(pred, target, torch.ones(1, 1, 4, 4)).backward()
        assert pred.grad is not None and target.grad is None

    def test_shape_error(self):
        with pytest.raises(ValueError, match="target_logits"):
            equivariance_kl(torch.randn(1, 3, 4, 4), torch.randn(1, 2, 4, 4), torch.ones(1, 1, 4, 4))


class TestObjective:
    def _inputs(self, B=2, K=4, C=6, S=16, bg=False):
        g = torch.Generator().manual_seed(0)
        out = K + 1 if bg else K
        return dict(
            logits=torch.randn(B, out, S, S, generator=g, requires_grad=True),
            warped_logits=torch.randn(B, out, S, S, generator=g, requires_grad=True),
            target_logits=torch.randn(B, out, S, S, generator=g),
            fg_mask=(torch.rand(B, 1, S, S, generator=g) > 0.3).float(),
            warped_fg_mask=torch.rand(B, 1, S, S, generator=g),
            features=torch.randn(B, C, S, S, generator=g),
            lab=torch.rand(B, 3, S, S, generator=g) * 100,
        )

    def test_weights_and_total(self):
        cfg = LossConfig()
        inputs = self._inputs()
        terms = Objective(cfg)(**inputs, generator=torch.Generator().manual_seed(1))
        assert set(terms) == {"eqv", "feat", "color", "contrastive", "total"}
        total = terms["eqv"] + terms["feat"] + terms["color"] + terms["contrastive"]
        assert torch.allclose(terms["total"], total)
        probs = torch.softmax(inputs["logits"], 1)
        feat = within_part_variance(probs, inputs["fg_mask"], inputs["features"]).sum()
        assert torch.allclose(terms["feat"], 5.0 * feat)
        color = within_part_variance(probs, inputs["fg_mask"], inputs["lab"]).mean()
        assert torch.allclose(terms["color"], 30.0 * color)
        terms["total"].backward()
        assert inputs["logits"].grad is not None and inputs["warped_logits"].grad is not None

    def test_background_channel(self):
        terms = Objective(LossConfig(), background_channel=True)(
            **self._inputs(bg=True), generator=torch.Generator().manual_seed(1)
        )
        assert "bg" in terms and torch.isfinite(terms["total"])


def test_background_bce_hand_value():
    p = torch.full((1, 1, 2, 2), 0.5)
    assert background_bce(p, torch.ones(1, 1, 2, 2)).item() == pytest.approx(math.log(2), rel=1e-5)


def test_part_statistics_of_upsampled_maps_equal_those_of_the_dense_features() -> None:
    """Tapped feature networks hand the loss their small maps (issue #24): same values, same gradients."""
    from partdisco.geometry.upsampled import Upsampled

    torch.manual_seed(0)
    maps = (torch.randn(3, 5, 8, 8, dtype=torch.float64), torch.randn(3, 4, 2, 2, dtype=torch.float64))
    up = Upsampled(maps, (32, 32), True)
    probs = torch.rand(3, 4, 32, 32, dtype=torch.float64).softmax(1).requires_grad_()
    mask = torch.rand(3, 1, 32, 32, dtype=torch.float64).requires_grad_()  # soft: gradients reach it
    dense = part_feature_statistics(probs, mask, up.dense())
    small = part_feature_statistics(probs, mask, up)
    for a, b in zip(dense, small):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    grads_dense = torch.autograd.grad(dense[0].sum() + dense[1].sum(), [probs, mask])
    grads_small = torch.autograd.grad(small[0].sum() + small[1].sum(), [probs, mask])
    for a, b in zip(grads_dense, grads_small):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # bf16 maps (autocast's phi) are read in float32: float32 rounding of the exact sums (a dense bf16
    # tensor would round the upsampled values to bf16 first)
    maps16 = tuple(m.to(torch.bfloat16) for m in maps)
    p64, m64 = probs.detach(), (mask.detach() > 0.5).double()
    exact = Upsampled(tuple(m.double() for m in maps16), (32, 32), True).dense()
    want = part_feature_statistics(p64, m64, exact)
    got = part_feature_statistics(p64.float(), m64.float(), Upsampled(maps16, (32, 32), True))
    assert got[0].dtype == torch.float32
    for a, b in zip(want, got):
        torch.testing.assert_close(a, b.double(), rtol=1e-5, atol=1e-5)
