import pytest
import torch

from imbalance.losses import alpha_balanced_bce, binary_cross_entropy, sigmoid_focal_loss


def _data(n=64, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=dtype) * 3
    t = (torch.rand(n, c, generator=g) < 0.2).to(dtype)
    return x, t


def test_bce_matches_its_formula():
    x, t = _data()
    p = torch.sigmoid(x)
    expected = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    torch.testing.assert_close(binary_cross_entropy(x, t), expected)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_reductions(reduction):
    x, t = _data()
    full = binary_cross_entropy(x, t)
    out = binary_cross_entropy(x, t, reduction=reduction)
    expected = {"none": full, "mean": full.mean(), "sum": full.sum()}[reduction]
    torch.testing.assert_close(out, expected)


def test_alpha_balanced_bce_weights_positives_and_negatives():
    x, t = _data()
    alpha = 0.75
    expected = binary_cross_entropy(x, t) * torch.where(t == 1, alpha, 1 - alpha)
    torch.testing.assert_close(alpha_balanced_bce(x, t, alpha=alpha), expected)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.9, -1.0])
def test_alpha_balanced_bce_is_focal_with_gamma_zero(alpha):
    x, t = _data()
    torch.testing.assert_close(
        alpha_balanced_bce(x, t, alpha=alpha), sigmoid_focal_loss(x, t, alpha=alpha, gamma=0)
    )


def test_negative_alpha_disables_weighting():
    x, t = _data()
    torch.testing.assert_close(alpha_balanced_bce(x, t, alpha=-1), binary_cross_entropy(x, t))


@pytest.mark.parametrize("fn", [binary_cross_entropy, alpha_balanced_bce])
def test_gradcheck(fn):
    x, t = _data(n=8, c=3)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: fn(a, t, reduction="sum"), (x,))


def test_alpha_above_one_is_rejected():
    x, t = _data()
    with pytest.raises(ValueError, match="alpha"):
        alpha_balanced_bce(x, t, alpha=1.5)
