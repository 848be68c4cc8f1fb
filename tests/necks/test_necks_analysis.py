"""level_correlation, integration_shares, residual_share: definitions checked by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from imbalance.necks import BalancedFeaturePyramid, bfp_gather
from imbalance.necks.analysis import integration_shares, level_correlation, residual_share


def pyramid(seed: int = 0, channels: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, channels, s, s, generator=g) for s in (16, 8, 4, 2)]


def test_correlation_matches_a_by_hand_pearson() -> None:
    feats = pyramid()
    corr = level_correlation(feats, refine_level=1)
    assert corr.shape == (4, 4) and torch.equal(corr, corr.T)
    assert torch.allclose(corr.diagonal(), torch.ones(4))
    a = F.adaptive_max_pool2d(feats[0], (8, 8))
    b = F.interpolate(feats[3], size=(8, 8), mode="nearest")
    a, b = (t - t.mean(dim=(-2, -1), keepdim=True) for t in (a, b))
    expected = (a * b).sum() / (a.norm() * b.norm())
    assert corr[0, 3].item() == pytest.approx(expected.item(), abs=1e-6)


def test_correlation_ignores_channel_offsets_and_sees_shared_content() -> None:
    feats = pyramid()
    base = feats[1]
    shifted = base + torch.arange(8.0)[None, :, None, None]  # a per-channel offset only
    corr = level_correlation([feats[0], base, shifted], refine_level=1)
    assert corr[1, 2].item() == pytest.approx(1.0, abs=1e-6)
    assert abs(corr[0, 1].item()) < 0.3  # independent noise
    flat = level_correlation([base, torch.zeros_like(base)], 0)
    assert flat[1, 1] == 0 and flat[0, 1] == 0
    with pytest.raises(ValueError, match="refine_level"):
        level_correlation(feats, 4)


def test_integration_shares_decompose_the_balanced_feature() -> None:
    feats = pyramid(1)
    gathered = bfp_gather(feats, 2)
    q = integration_shares(gathered)
    assert q.sum().item() == pytest.approx(1.0, abs=1e-5)
    same = integration_shares([gathered[0]] * 3)
    assert torch.allclose(same, torch.full((3,), 1 / 3))
    opposed = integration_shares([gathered[0], -0.5 * gathered[0]])
    assert torch.allclose(opposed, torch.tensor([2.0, -1.0]), atol=1e-5)
    zero = torch.zeros_like(gathered[0])
    assert torch.equal(integration_shares([zero, zero]), torch.zeros(2))


def test_residual_share_of_a_bfp_at_initialisation() -> None:
    feats = pyramid(2, channels=16)
    bfp = BalancedFeaturePyramid(16, 4, refine_level=1)
    stages = bfp.forward_with_stages(dict(zip("abcd", feats, strict=True)))
    s = residual_share(feats, list(stages["scattered"].values()))
    assert s.shape == (4,) and bool(((s > 0) & (s < 1)).all())
    assert residual_share(feats, feats).tolist() == pytest.approx([0.5] * 4)
    zeros = [torch.zeros_like(f) for f in feats]
    assert residual_share(feats, zeros).tolist() == [0.0] * 4
    assert residual_share(zeros, zeros).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="differ"):
        residual_share(feats[:2], feats[1:3])
    with pytest.raises(ValueError, match="residuals"):
        residual_share(feats, feats[:2])
