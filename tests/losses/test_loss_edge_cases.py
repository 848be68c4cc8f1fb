"""Edge cases every loss must survive: empty input, everything ignored, huge logits,
half precision under autocast, bad arguments, and no device synchronisation."""

import pytest
import torch

from imbalance import losses as L

CLASSIFICATION = {
    "bce": lambda x, t: L.binary_cross_entropy(x, t, reduction="sum"),
    "alpha_bce": lambda x, t: L.alpha_balanced_bce(x, t, reduction="sum"),
    "focal": lambda x, t: L.sigmoid_focal_loss(x, t, reduction="sum"),
    "focal_g05": lambda x, t: L.sigmoid_focal_loss(x, t, gamma=0.5, reduction="sum"),
    "ghm_c": lambda x, t: L.ghm_c_loss(x, t),
    "GHMC": lambda x, t: L.GHMC()(x, t),
}
REGRESSION = {
    "smooth_l1": lambda p, t: L.smooth_l1_loss(p, t, reduction="sum"),
    "asl1": lambda p, t: L.asl1_loss(p, t, reduction="sum"),
    "ghm_r": lambda p, t: L.ghm_r_loss(p, t),
    "GHMR": lambda p, t: L.GHMR()(p, t),
    "balanced_l1": lambda p, t: L.balanced_l1_loss(p, t, reduction="sum"),
}
ALL = {**CLASSIFICATION, **REGRESSION}
WITH_REDUCTION = {
    "bce": L.binary_cross_entropy,
    "alpha_bce": L.alpha_balanced_bce,
    "focal": L.sigmoid_focal_loss,
    "smooth_l1": L.smooth_l1_loss,
    "asl1": L.asl1_loss,
    "balanced_l1": L.balanced_l1_loss,
}


def _inputs(name, n=64, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name in CLASSIFICATION:
        return torch.randn(n, c, generator=g) * 3, (torch.rand(n, c, generator=g) < 0.2).float()
    return torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)


@pytest.mark.parametrize("name", ALL)
def test_empty_input_gives_zero_and_a_gradient(name):
    x = torch.zeros(0, 5, requires_grad=True)
    loss = ALL[name](x, torch.zeros(0, 5))
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0, 5)


@pytest.mark.parametrize("name", list(WITH_REDUCTION))
def test_mean_of_empty_input_is_zero_not_nan(name):
    loss = WITH_REDUCTION[name](torch.zeros(0, 4), torch.zeros(0, 4), reduction="mean")
    assert loss.item() == 0.0


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, t, w: L.ghm_c_loss(x, t, w),
        lambda x, t, w: L.GHMC()(x, t, w),
        lambda x, t, w: L.ghm_r_loss(x, t, w),
        lambda x, t, w: L.GHMR()(x, t, w),
    ],
)
def test_every_element_ignored_gives_zero_loss_and_zero_gradient(fn):
    x = torch.randn(30, 4, requires_grad=True)
    loss = fn(x, torch.zeros(30, 4), torch.zeros(30, 1))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("name", CLASSIFICATION)
@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_huge_logits_stay_finite(name, scale):
    x = torch.tensor([[scale, -scale], [-scale, scale], [scale, scale]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # right, wrong, mixed
    loss = CLASSIFICATION[name](x, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name", ALL)
def test_nan_input_gives_a_nan_loss_not_a_crash(name):
    """A NaN must reach the training loop's non-finite-loss guard as a NaN loss."""
    x, t = _inputs(name)
    x[3, 1] = float("nan")
    assert torch.isnan(ALL[name](x, t))


@pytest.mark.parametrize("name", REGRESSION)
def test_huge_regression_errors_stay_finite(name):
    p = torch.tensor([[1e4, -1e4, 0.0, 1e-6]], requires_grad=True)
    loss = REGRESSION[name](p, torch.zeros(1, 4))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_under_autocast(name, dtype):
    """Inputs made by a layer under autocast arrive in half precision: the loss is computed
    in float32, close to the float32 result, and the gradient flows back in half."""
    x, t = _inputs(name)
    layer = torch.nn.Linear(x.shape[1], x.shape[1])
    with torch.no_grad():
        layer.weight.copy_(torch.eye(x.shape[1]))
        layer.bias.zero_()
    with torch.autocast("cpu", dtype=dtype):
        y = layer(x)
        assert y.dtype == dtype
        loss = ALL[name](y, t)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(layer.weight.grad).all()
    reference = ALL[name](y.detach().float(), t)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_mismatched_shapes_are_a_clear_value_error(name):
    x, t = _inputs(name)
    with pytest.raises(ValueError, match="same shape"):
        ALL[name](x, t[:-1])


@pytest.mark.parametrize("name", list(WITH_REDUCTION))
def test_bad_reduction_is_a_clear_value_error(name):
    x, t = _inputs(name)
    with pytest.raises(ValueError, match="reduction"):
        WITH_REDUCTION[name](x, t, reduction="avg")


@pytest.mark.parametrize("name", ALL)
def test_no_host_synchronisation(name, monkeypatch):
    """Reading a tensor's value on the host (``.item()``, ``bool()``, ``float()``, ...)
    would force a device synchronisation on a GPU: the losses never do it."""
    x, t = _inputs(name)
    ALL[name](x.clone().requires_grad_(True), t)  # warm caches outside the guard

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation inside a loss")

    for attr in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, attr, forbidden)
    x = x.clone().requires_grad_(True)
    ALL[name](x, t).backward()
    monkeypatch.undo()
    assert x.grad is not None and torch.isfinite(x.grad).all()


NAN = float("nan")


@pytest.mark.parametrize(("call", "match"), [
    (lambda x, t: L.sigmoid_focal_loss(x, t, alpha=NAN), "alpha must be a finite number"),
    (lambda x, t: L.sigmoid_focal_loss(x, t, gamma=NAN), "gamma must be a finite number"),
    (lambda x, t: L.alpha_balanced_bce(x, t, alpha=float("inf")), "alpha must be a finite"),
    (lambda x, t: L.ghm_c_loss(x, t, bins=True), "bins must be a positive integer"),
    (lambda x, t: L.ghm_c_loss(x, t, momentum=NAN), "momentum must be a finite"),
    (lambda x, t: L.ghm_r_loss(x, t, mu=NAN), "mu must be a finite number"),
    (lambda x, t: L.asl1_loss(x, t, mu=NAN), "mu must be a finite number"),
    (lambda x, t: L.smooth_l1_loss(x, t, beta=NAN), "beta must be a finite number"),
    (lambda x, t: L.balanced_l1_loss(x, t, beta=NAN), "beta must be a finite number"),
    (lambda x, t: L.balanced_l1_loss(x, t, alpha=NAN), "alpha must be a finite number"),
    (lambda x, t: L.balanced_l1_loss(x, t, alpha=0.001), "gamma / alpha = 1500 is too large"),
    (lambda x, t: L.balanced_l1_loss(x, t, alpha=0.01), "alpha >= 0.025 for gamma = 1.5"),
])
def test_bad_hyper_parameters_are_refused_by_name(call, match):
    """Issue 13, items 7 and 10: NaN passed every check (alpha=nan silently disabled α),
    bins=True gave 0.0, alpha=0.001 raised OverflowError, alpha=0.01 gave NaN, and
    smooth_l1_loss(beta=nan) said "negative"."""
    x, t = torch.randn(8, 4), torch.rand(8, 4).round()
    with pytest.raises(ValueError, match=match):
        call(x, t)


def test_the_usable_balanced_l1_range_is_finite_at_its_edge():
    from imbalance.losses.balanced_l1 import MAX_GAMMA_OVER_ALPHA

    x = (torch.linspace(-3, 3, 101)).requires_grad_()
    loss = L.balanced_l1_loss(x, torch.zeros(101), alpha=1.5 / MAX_GAMMA_OVER_ALPHA, gamma=1.5,
                              reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_numpy_integers_are_bin_counts_and_a_label_weight_elsewhere_is_refused():
    import numpy as np

    x, t = torch.randn(8, 4), torch.rand(8, 4).round()
    assert torch.isclose(L.ghm_c_loss(x, t, bins=np.int64(30)), L.ghm_c_loss(x, t, bins=30))
    assert L.GHMC(bins=np.int64(10)).bins == 10
    meta = torch.ones(8, 4, device="meta")
    with pytest.raises(ValueError, match="label_weight is on meta"):
        L.ghm_c_loss(x, t, label_weight=meta)
