"""Every classification loss against a float64 evaluation of its own formula, on a dense grid
of float32 logits in [-30, 30], for binary and soft targets, in both paths (the readable
equations differentiated by autograd, and the fused closed form).

Relative error at most 1e-4, in value and in gradient, wherever the float64 number is a
normal float32 (below ``torch.finfo(torch.float32).tiny`` a float32 has fewer digits). For a
soft target the derivative of the cross-entropy, (1 - t)p - t(1 - p), changes sign at
x = logit(t), where no float32 evaluation has relative precision; there the error is
measured against the sum of the magnitudes of the gradient's terms, its condition scale
(for binary targets every term has the same sign, and the scale is the gradient itself).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from imbalance import losses as L
from imbalance.losses import _fused

TINY = torch.finfo(torch.float32).tiny
RTOL = 1e-4
TARGETS = [0.0, 1.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999]
PATHS = {"fused": contextlib.nullcontext, "readable": _fused.disabled}
ALPHA_GAMMA = [
    (0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.5, 0.5), (0.75, 1.0), (0.25, 5.0), (1.0, 3.0)
]


def grid(target: float) -> tuple[Tensor, Tensor]:
    x = torch.linspace(-30, 30, 6001)
    return x, torch.full_like(x, target)


def focal64(x: Tensor, t: Tensor, alpha: float, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
    """Value, gradient (autograd) and gradient scale of α_t (1 - p_t)^γ CE in float64."""
    x, t = x.double().requires_grad_(True), t.double()
    p, pm = torch.sigmoid(x), torch.sigmoid(-x)
    softplus = lambda v: F.softplus(v, threshold=100)  # noqa: E731 (torch's 20 cuts e^-20 off)
    ce = t * softplus(-x) + (1 - t) * softplus(x)
    q = p * (1 - t) + pm * t
    a_t = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else torch.ones_like(t)
    value = a_t * q**gamma * ce
    (grad,) = torch.autograd.grad(value.sum(), x)
    with torch.no_grad():
        scale = q**gamma * ((1 - t) * p + t * pm)  # |q^γ| |∂CE/∂x| with its terms' magnitudes
        if gamma > 0:
            scale += gamma * q ** (gamma - 1) * ce * p * pm * (1 - 2 * t).abs()
        scale *= a_t
    return value.detach(), grad, scale


def assert_relative(name: str, ours: Tensor, exact: Tensor, scale: Tensor) -> float:
    """Max relative error where the float64 scale is a normal float32 (and exact zeros where
    it is zero); returned for reports."""
    ours, exact = ours.double(), exact.double()
    assert torch.equal(ours[scale == 0], exact[scale == 0]), f"{name}: not 0 where it should be"
    normal = scale >= TINY
    if not normal.any():
        return 0.0
    err = ((ours - exact).abs() / scale)[normal]
    worst = float(exact[normal][int(err.argmax())])
    assert err.max() <= RTOL, f"{name}: relative error {err.max():.2e} where exact = {worst:.3e}"
    return float(err.max())


def value_and_grad(fn, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    x = x.clone().requires_grad_(True)
    value = fn(x, t)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


CASES = {
    "binary_cross_entropy": (lambda x, t: L.binary_cross_entropy(x, t), -1.0, 0.0),
    "alpha_balanced_bce": (lambda x, t: L.alpha_balanced_bce(x, t, alpha=0.25), 0.25, 0.0),
    **{
        f"sigmoid_focal_loss(alpha={a}, gamma={g})": (
            lambda x, t, a=a, g=g: L.sigmoid_focal_loss(x, t, alpha=a, gamma=g), a, g
        )
        for a, g in ALPHA_GAMMA
    },
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES)
def test_element_wise_losses_match_float64(case, target, path):
    fn, alpha, gamma = CASES[case]
    x, t = grid(target)
    with PATHS[path]():
        value, grad = value_and_grad(fn, x, t)
    value64, grad64, scale = focal64(x, t, alpha, gamma)
    assert_relative(f"{case} value", value, value64, value64.abs())
    assert_relative(f"{case} gradient", grad, grad64, scale)


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_gradient_scale_of_binary_targets_is_the_gradient(target):
    """The scale used above is the gradient's own magnitude for binary targets."""
    x, t = grid(target)
    for alpha, gamma in ALPHA_GAMMA:
        _, grad64, scale = focal64(x, t, alpha, gamma)
        torch.testing.assert_close(grad64.abs(), scale, rtol=1e-12, atol=0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("module", [False, True])
def test_ghm_c_matches_its_weighted_bce_in_float64(target, path, module):
    """GHM-C on groups of 4 neighbouring logits (one call each, so that each value is the
    weighted cross-entropy of similar elements), against Σ w CE / tot in float64 with the
    same weights w (tot = 4)."""
    x, t = grid(target)
    xs, ts = x[::2][:3000].view(-1, 4), t[::2][:3000].view(-1, 4)
    values, grads = [], []
    with PATHS[path]():
        for xg, tg in zip(xs, ts, strict=True):
            # a fresh module's first call weighs by the running count (1 - m) · count
            fn = L.GHMC(bins=30, momentum=0.75) if module else L.ghm_c_loss
            value, grad = value_and_grad(fn, xg, tg)
            values.append(value)
            grads.append(grad)
    w = torch.stack([L.ghm_c_weights(xg, tg, bins=30) for xg, tg in zip(xs, ts, strict=True)])
    w = w.double()
    w = w / (1 - 0.75) if module else w
    ce64, dce64, scale = (v.view_as(w) for v in focal64(xs.flatten(), ts.flatten(), -1.0, 0.0))
    value64 = (w * ce64).sum(1) / 4
    assert_relative("GHM-C value", torch.stack(values), value64, value64.abs())
    assert_relative("GHM-C gradient", torch.stack(grads), w * dce64 / 4, w * scale / 4)


def test_asl1_matches_float64_for_tiny_and_huge_errors():
    d = torch.logspace(-12, 4, 3001)
    d = torch.cat([d, -d])
    mu = 0.02
    d64 = d.double()
    r64 = torch.sqrt(d64 * d64 + mu * mu)
    series = d64**2 / (2 * mu) * (1 - d64**2 / (4 * mu**2))  # sqrt(d² + μ²) - μ for |d| ≪ μ
    value64 = torch.where(d64.abs() < 1e-3, series, r64 - mu)
    for path in PATHS.values():
        with path():
            value, grad = value_and_grad(lambda p, q: L.asl1_loss(p, q, mu), d, torch.zeros_like(d))
        assert_relative("ASL1 value", value, value64, value64.abs())
        assert_relative("ASL1 gradient", grad, d64 / r64, (d64 / r64).abs())
