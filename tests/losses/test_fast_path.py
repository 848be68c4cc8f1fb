"""The fast path (:mod:`imbalance.losses._fused`) gives the values, gradients and GHM running
counts of the readable path (the papers' equations differentiated by autograd), in one block
and in many (forced here by small blocks; on the CPU, large inputs are cut into blocks)."""

from __future__ import annotations

import pytest
import torch

from imbalance import losses as L
from imbalance.losses import _fused


def _inputs(dtype, n=600, c=7, seed=0, soft=False):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g) * 4 - 1).to(dtype)
    x[0, :] = torch.tensor([-40.0, -17.0, -0.0, 0.0, 9.0, 17.0, 40.0]).to(dtype)  # saturated
    if soft:
        t = torch.rand(n, c, generator=g).to(dtype)
        t[1, :] = torch.tensor([0.0, 1.0, 0.5, 1e-6, 1 - 1e-6, 0.25, 0.75]).to(dtype)
    else:
        t = (torch.rand(n, c, generator=g) < 0.15).to(dtype)
    lw = (torch.rand(n, 1, generator=g) > 0.2).to(dtype)
    return x, t, lw


ELEMENT_WISE = {
    "bce": lambda x, t, lw, r: L.binary_cross_entropy(x, t, reduction=r),
    "alpha_bce": lambda x, t, lw, r: L.alpha_balanced_bce(x, t, 0.25, reduction=r),
    "alpha_bce_1": lambda x, t, lw, r: L.alpha_balanced_bce(x, t, 1.0, reduction=r),
    "focal": lambda x, t, lw, r: L.sigmoid_focal_loss(x, t, reduction=r),
    "focal_g05": lambda x, t, lw, r: L.sigmoid_focal_loss(x, t, 0.5, 0.5, reduction=r),
    "focal_g1_no_alpha": lambda x, t, lw, r: L.sigmoid_focal_loss(x, t, -1, 1.0, reduction=r),
    "focal_g3": lambda x, t, lw, r: L.sigmoid_focal_loss(x, t, 0.75, 3.0, reduction=r),
    "asl1": lambda x, t, lw, r: L.asl1_loss(x / 8, t, 0.02, reduction=r),
}
GHM = {
    "ghm_c": lambda x, t, lw: L.ghm_c_loss(x, t),
    "ghm_c_lw": lambda x, t, lw: L.ghm_c_loss(x, t, lw),
    "ghm_c_11_bins": lambda x, t, lw: L.ghm_c_loss(x, t, lw, bins=11),  # bucketize, not floor
    "ghm_c_300_bins": lambda x, t, lw: L.ghm_c_loss(x, t, lw, bins=300),  # int32 indices
    "ghm_r": lambda x, t, lw: L.ghm_r_loss(x / 8, t, lw),
    "ghm_r_22_bins": lambda x, t, lw: L.ghm_r_loss(x / 8, t, None, 0.05, bins=22),
}


@pytest.fixture(params=["one block", "many blocks"])
def blocks(request, monkeypatch):
    if request.param == "many blocks":
        monkeypatch.setattr(_fused, "BLOCK", 256)
        monkeypatch.setattr(_fused, "GHM_ONE_BLOCK", 512)
    return request.param


def _value_and_grad(fn, x, *args):
    x = x.clone().requires_grad_(True)
    value = fn(x, *args)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def _both_paths(fn, x, *args):
    fast = _value_and_grad(fn, x, *args)
    with _fused.disabled():
        readable = _value_and_grad(fn, x, *args)
    return fast, readable


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", ELEMENT_WISE)
def test_element_wise_losses(name, reduction, soft, dtype, blocks):
    x, t, lw = _inputs(dtype, soft=soft)
    fast, readable = _both_paths(lambda a, b: ELEMENT_WISE[name](a, b, lw, reduction), x, t)
    torch.testing.assert_close(fast, readable)
    with torch.no_grad():  # the forward-only path
        torch.testing.assert_close(ELEMENT_WISE[name](x, t, lw, reduction), readable[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("name", GHM)
def test_ghm_losses(name, soft, dtype, blocks):
    x, t, lw = _inputs(dtype, soft=soft)
    fast, readable = _both_paths(lambda a, b: GHM[name](a, b, lw), x, t)
    torch.testing.assert_close(fast, readable)
    with torch.no_grad():
        torch.testing.assert_close(GHM[name](x, t, lw), readable[0])


@pytest.mark.parametrize(
    "make, scale",
    [(lambda: L.GHMC(bins=30, momentum=0.75), 1.0), (lambda: L.GHMR(0.02, 10, 0.7), 1 / 8)],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_running_counts(make, scale, weighted, blocks):
    """Several training steps and one in eval mode: losses, gradients and acc_sum agree."""
    fast, readable = make(), make()
    for step in range(4):
        x, t, lw = _inputs(torch.float32, seed=step)
        x = x * scale
        lw = lw if weighted else None
        if step == 3:
            fast.eval()
            readable.eval()
        got = _value_and_grad(fast, x, t, lw)
        with _fused.disabled():
            expected = _value_and_grad(readable, x, t, lw)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(fast.acc_sum, readable.acc_sum)
    assert fast.acc_sum.sum() > 0


def test_gradients_reach_pred_and_target_in_ghm_r_and_asl1(blocks):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(300, 4, generator=g) / 8, torch.randn(300, 4, generator=g) / 8
    for fn in (lambda p, q: L.ghm_r_loss(p, q), lambda p, q: L.asl1_loss(p, q, reduction="sum")):

        def grads(fn=fn):
            p, q = pred.clone().requires_grad_(True), target.clone().requires_grad_(True)
            fn(p, q).backward()
            return p.grad, q.grad

        fast = grads()
        with _fused.disabled():
            readable = grads()
        torch.testing.assert_close(fast, readable)
        torch.testing.assert_close(fast[0], -fast[1])
