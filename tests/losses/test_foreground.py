"""Mask-free priors (border, area, presence) and the mask-free Objective."""

from __future__ import annotations

import pytest
import torch

from partdisco.config import LossConfig
from partdisco.losses import Objective
from partdisco.losses.foreground import (
    border_background_loss,
    border_band,
    foreground_area_loss,
    presence_loss,
)


def test_border_band_width() -> None:
    band = border_band(20, 40, 0.1)
    assert band[:2].all() and band[:, :2].all() and not band[2:18, 2:38].any()
    with pytest.raises(ValueError, match="fraction"):
        border_band(8, 8, 0.6)


def test_border_loss_values_and_gradient() -> None:
    bg = torch.full((2, 1, 10, 10), 0.5, requires_grad=True)
    loss = border_background_loss(bg, 0.1)
    assert loss.item() == pytest.approx(-torch.log(torch.tensor(0.5)).item(), abs=1e-6)
    loss.backward()
    assert (bg.grad[:, :, 5, 5] == 0).all() and (bg.grad[:, :, 0, 0] < 0).all()  # only the band pulls
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        border_background_loss(torch.ones(2, 2, 4, 4))


def test_area_loss_hinge() -> None:
    f = torch.zeros(3, 1, 10, 10)
    f[0, :, :3] = 1.0  # 0.3: inside [0.1, 0.6]
    f[1] = 1.0  # 1.0: 0.4 above
    # f[2] all background: 0.1 below
    assert foreground_area_loss(f, 0.1, 0.6).item() == pytest.approx((0.0 + 0.4 + 0.1) / 3)
    with pytest.raises(ValueError, match="low < high"):
        foreground_area_loss(f, 0.6, 0.1)


def test_presence_loss() -> None:
    p = torch.zeros(2, 3, 4, 4)
    p[:, 0] = 1.0  # all background: part 1 and 2 absent everywhere
    assert presence_loss(p, pool=1).item() == pytest.approx(1.0)  # bg term 0, part term 1
    p[0, 0, 0, 0], p[0, 1, 0, 0] = 0.0, 1.0  # part 1 in image 0 only: present in the batch
    assert presence_loss(p, pool=1).item() == pytest.approx(0.5)
    p[1, 0], p[1, 2] = 0.0, 1.0  # image 1 has no background at all
    assert presence_loss(p, pool=1).item() == pytest.approx(0.5 + 0.0)


def _inputs(B: int = 3, K: int = 4, H: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, K + 1, H, H, generator=g, requires_grad=True)
    return dict(
        logits=logits,
        warped_logits=torch.randn(B, K + 1, H, H, generator=g),
        target_logits=torch.randn(B, K + 1, H, H, generator=g),
        fg_mask=torch.ones(B, 1, H, H),
        warped_fg_mask=torch.ones(B, 1, H, H),
        features=torch.randn(B, 8, H, H, generator=g),
        lab=torch.randn(B, 3, H, H, generator=g),
    )


@pytest.mark.parametrize("bg_as_part", [True, False])
def test_mask_free_objective_terms_and_gradient(bg_as_part: bool) -> None:
    objective = Objective(LossConfig(bg_as_part=bg_as_part), background_channel=True, mask_free=True)
    inputs = _inputs()
    terms = objective(**inputs, generator=torch.Generator().manual_seed(1))
    assert {"fg_border", "fg_area", "presence", "eqv", "feat", "color", "contrastive"} <= set(terms)
    assert "bg" not in terms and all(torch.isfinite(v) for v in terms.values())
    terms["total"].backward()
    assert inputs["logits"].grad[:, 0].abs().sum() > 0  # the background channel learns


def test_mask_free_needs_background_channel() -> None:
    with pytest.raises(ValueError, match="background_channel"):
        Objective(LossConfig(), background_channel=False, mask_free=True)
