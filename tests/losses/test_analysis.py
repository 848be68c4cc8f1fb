import pytest
import torch

from imbalance.losses import asl1_loss, binary_cross_entropy
from imbalance.losses.analysis import (
    gradient_density,
    gradient_share,
    regression_grad_norm,
    sigmoid_ce_grad_norm,
)
from imbalance.losses.ghm import bin_index


def test_grad_norm_is_the_magnitude_of_the_ce_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64, requires_grad=True) * 3
    t = (torch.rand(40, 3, generator=g) < 0.3).double()
    (grad,) = torch.autograd.grad(binary_cross_entropy(x, t, reduction="sum"), x)
    torch.testing.assert_close(sigmoid_ce_grad_norm(x, t), grad.abs())


def test_regression_grad_norm_is_the_magnitude_of_the_asl1_gradient():
    d = torch.linspace(-2, 2, 21, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(asl1_loss(d, torch.zeros(21, dtype=torch.float64), 0.1).sum(), d)
    torch.testing.assert_close(regression_grad_norm(d, torch.zeros_like(d), 0.1), grad.abs())


def test_gradient_density_counts_valid_elements_in_ghm_bins():
    g = torch.rand(500, 4, generator=torch.Generator().manual_seed(1))
    lw = (torch.rand(500, 1, generator=torch.Generator().manual_seed(2)) > 0.25).float()
    hist = gradient_density(g, bins=20, label_weight=lw)
    valid = g[(lw > 0).expand_as(g)]
    assert int(hist.counts.sum()) == valid.numel()
    assert torch.equal(hist.counts, torch.bincount(bin_index(valid, 20).long(), minlength=20))
    torch.testing.assert_close(hist.density, hist.counts.double() * 20)
    torch.testing.assert_close(hist.fraction.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert hist.edges.shape == (21,)


def test_gradient_share_splits_count_and_gradient():
    g = torch.tensor([0.01, 0.02, 0.05, 0.5, 0.95])
    share = gradient_share(g)
    assert share.count == pytest.approx({"easy": 0.6, "medium": 0.2, "hard": 0.2})
    total = float(g.sum())
    assert share.share == pytest.approx(
        {"easy": 0.08 / total, "medium": 0.5 / total, "hard": 0.95 / total}
    )


def test_gradient_share_of_other_values_and_ignored_elements():
    g = torch.tensor([0.01, 0.5, 0.95, 0.99])
    loss = torch.tensor([1.0, 2.0, 3.0, 100.0])
    lw = torch.tensor([1.0, 1.0, 1.0, 0.0])
    share = gradient_share(g, values=loss, label_weight=lw)
    assert share.share == pytest.approx({"easy": 1 / 6, "medium": 2 / 6, "hard": 3 / 6})


def test_gradient_share_rejects_bad_thresholds():
    with pytest.raises(ValueError):
        gradient_share(torch.rand(5), thresholds=(0.9, 0.1))
