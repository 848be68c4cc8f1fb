import math

import pytest
import torch

from imbalance.losses import asl1_loss, balanced_l1_b, balanced_l1_loss, smooth_l1_loss


def _pair(n=50, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(n, 4, generator=g, dtype=torch.float64) * scale
    target = torch.randn(n, 4, generator=g, dtype=torch.float64) * scale
    return pred, target


def _slope(fn, x):
    """d loss / d pred at pred = x, target = 0 (element-wise)."""
    x = x.clone().requires_grad_(True)
    fn(x, torch.zeros_like(x)).sum().backward()
    return x.grad


# --- smooth L1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.11, 1 / 9])
def test_smooth_l1_matches_its_piecewise_formula(beta):
    pred, target = _pair()
    x = (pred - target).abs()
    expected = torch.where(x < beta, 0.5 * x**2 / beta, x - 0.5 * beta)
    torch.testing.assert_close(smooth_l1_loss(pred, target, beta=beta), expected)


def test_smooth_l1_with_beta_zero_is_l1():
    pred, target = _pair()
    torch.testing.assert_close(smooth_l1_loss(pred, target, beta=0.0), (pred - target).abs())


def test_smooth_l1_gradient_saturates_at_one():
    x = torch.tensor([2.0, 5.0, 50.0], dtype=torch.float64)
    torch.testing.assert_close(_slope(smooth_l1_loss, x), torch.ones_like(x))


# --- ASL1 -----------------------------------------------------------------------------------


def test_asl1_approaches_l1_minus_mu_for_large_errors():
    pred = torch.tensor([10.0, -30.0, 100.0], dtype=torch.float64)
    loss = asl1_loss(pred, torch.zeros_like(pred), mu=0.02)
    torch.testing.assert_close(loss, pred.abs() - 0.02, rtol=0, atol=1e-4)


def test_asl1_is_quadratic_for_small_errors():
    d = torch.tensor([1e-4, -2e-4], dtype=torch.float64)
    mu = 0.02
    torch.testing.assert_close(
        asl1_loss(d, torch.zeros_like(d), mu=mu), d**2 / (2 * mu), rtol=1e-4, atol=0
    )


def test_asl1_gradient_is_d_over_sqrt():
    d = torch.linspace(-3, 3, 41, dtype=torch.float64)
    mu = 0.1
    torch.testing.assert_close(
        _slope(lambda p, t: asl1_loss(p, t, mu), d), d / torch.sqrt(d**2 + mu**2)
    )


# --- Balanced L1 --------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,gamma", [(0.5, 1.5), (0.3, 1.0), (0.5, 1.0), (0.8, 2.0)])
def test_b_solves_alpha_log_b_plus_one_equals_gamma(alpha, gamma):
    b = balanced_l1_b(alpha, gamma)
    assert math.isclose(alpha * math.log(b + 1), gamma, rel_tol=1e-12)


@pytest.mark.parametrize("alpha,gamma", [(0.5, 1.5), (0.3, 1.0), (0.8, 2.0)])
def test_balanced_l1_gradient_is_alpha_log_inside_and_gamma_outside(alpha, gamma):
    b = balanced_l1_b(alpha, gamma)
    x = torch.cat([torch.linspace(0.01, 0.99, 50), torch.linspace(1.01, 5, 20)]).double()
    for sign in (1, -1):
        slope = _slope(lambda p, t: balanced_l1_loss(p, t, alpha, gamma), sign * x)
        expected = torch.where(x < 1, alpha * torch.log(b * x + 1), torch.full_like(x, gamma))
        torch.testing.assert_close(slope, sign * expected)


def test_balanced_l1_is_continuous_with_continuous_slope_at_one():
    x = torch.tensor([1 - 1e-9, 1 + 1e-9], dtype=torch.float64)
    value = balanced_l1_loss(x, torch.zeros_like(x))
    slope = _slope(balanced_l1_loss, x)
    torch.testing.assert_close(value[0], value[1], rtol=0, atol=1e-7)
    torch.testing.assert_close(slope[0], slope[1], rtol=0, atol=1e-7)


def test_balanced_l1_inliers_get_more_gradient_than_smooth_l1():
    # The point of the loss: below |x| ~ 0.47 it pulls harder than smooth L1 (slope x).
    x = torch.linspace(0.05, 0.3, 6, dtype=torch.float64)
    assert (_slope(balanced_l1_loss, x) > _slope(smooth_l1_loss, x)).all()


def test_balanced_l1_beta_generalisation_slopes():
    alpha, gamma, beta = 0.5, 1.5, 0.11
    b = balanced_l1_b(alpha, gamma)
    fn = lambda p, t: balanced_l1_loss(p, t, alpha, gamma, beta)  # noqa: E731
    x = torch.tensor([1e-9, beta - 1e-9, beta + 1e-9], dtype=torch.float64)
    slope = _slope(fn, x)
    below = gamma + alpha * ((b * beta + 1) / (beta * (b + 1)) - 1)
    expected = torch.tensor([alpha * (1 / beta - 1), below, gamma], dtype=torch.float64)
    torch.testing.assert_close(slope, expected, rtol=1e-6, atol=1e-6)
    value = fn(x[1:], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(value[0], value[1], rtol=0, atol=1e-7)  # value is continuous


@pytest.mark.parametrize(
    "fn",
    [
        lambda p, t: smooth_l1_loss(p, t, beta=0.5),
        lambda p, t: asl1_loss(p, t, mu=0.05),
        lambda p, t: balanced_l1_loss(p, t),
        lambda p, t: balanced_l1_loss(p, t, beta=0.3),
    ],
)
def test_gradcheck(fn):
    pred, target = _pair(n=6)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, t: fn(p, t).sum(), (pred, target))


@pytest.mark.parametrize(
    "call",
    [
        lambda p, t: smooth_l1_loss(p, t, beta=-1),
        lambda p, t: asl1_loss(p, t, mu=0),
        lambda p, t: balanced_l1_loss(p, t, alpha=0),
        lambda p, t: balanced_l1_loss(p, t, beta=0),
    ],
)
def test_bad_hyper_parameters_are_rejected(call):
    pred, target = _pair()
    with pytest.raises(ValueError):
        call(pred, target)
