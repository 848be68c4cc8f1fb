import contextlib

import pytest
import torch
import torchvision

from imbalance.losses import _fused, binary_cross_entropy, sigmoid_focal_loss

PARAMS = [(0.25, 2.0), (0.25, 0.0), (-1.0, 2.0), (0.5, 0.5), (0.75, 1.0), (0.25, 5.0), (1.0, 2.0)]
PATHS = {"fused": contextlib.nullcontext, "readable": _fused.disabled}

# torchvision computes 1 - p_t as 1 - (p t + (1 - p)(1 - t)) and its cross-entropy as
# (1 - t) x - log σ(x): both cancel for easy examples, with relative errors that grow like
# e^|x| 2^-24 (5 % at x = 11.5, the whole value beyond x = 17). So we compare with it where
# it is accurate, |x| <= 6; test_exactness.py checks every logit in [-30, 30] against float64.
TORCHVISION_RANGE = 6.0


def _data(n=200, c=6, seed=0, dtype=torch.float64, soft=False, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=dtype) * scale
    if soft:
        t = torch.rand(n, c, generator=g, dtype=dtype)
    else:
        t = (torch.rand(n, c, generator=g) < 0.1).to(dtype)
    return x, t


def _accurate_range(x):
    return x.clamp(-TORCHVISION_RANGE, TORCHVISION_RANGE)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("alpha,gamma", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("soft", [False, True])
def test_values_and_gradients_equal_torchvision(alpha, gamma, dtype, soft, path):
    x, t = _data(dtype=dtype, soft=soft)
    x = _accurate_range(x)
    ours_x = x.clone().requires_grad_(True)
    tv_x = x.clone().requires_grad_(True)
    with PATHS[path]():
        ours = sigmoid_focal_loss(ours_x, t, alpha=alpha, gamma=gamma)
    tv = torchvision.ops.sigmoid_focal_loss(tv_x, t, alpha=alpha, gamma=gamma)
    torch.testing.assert_close(ours, tv)
    w = torch.rand_like(ours)  # a non-uniform upstream gradient
    (ours * w).sum().backward()
    (tv * w).sum().backward()
    torch.testing.assert_close(ours_x.grad, tv_x.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions_equal_torchvision(reduction):
    x, t = _data()
    x = _accurate_range(x)
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, reduction=reduction),
        torchvision.ops.sigmoid_focal_loss(x, t, reduction=reduction),
    )


def test_gradient_reaches_targets_that_require_it():
    x, t = _data(soft=True)
    x = _accurate_range(x)
    t1 = t.clone().requires_grad_(True)
    t2 = t.clone().requires_grad_(True)
    sigmoid_focal_loss(x, t1, reduction="sum").backward()
    torchvision.ops.sigmoid_focal_loss(x, t2, reduction="sum").backward()
    torch.testing.assert_close(t1.grad, t2.grad)


# --- torchvision's own focal-loss properties (test_ops.py, TestFocalLoss) -------------------


def _diverse_inputs(seed, dtype=torch.float32):
    """Logits of probabilities near 0, near 1 and anywhere, and saturated logits up to ±30,
    each with all-zero, all-one, random binary and soft targets, as torchvision's test."""
    g = torch.Generator().manual_seed(seed)
    probs = {
        "small": torch.rand(64, generator=g) * 0.2,
        "big": 0.8 + torch.rand(64, generator=g) * 0.2,
        "random": torch.rand(64, generator=g),
    }
    logits = [torch.logit(p.double().clamp(1e-12, 1 - 1e-12)) for p in probs.values()]
    logits.append(torch.linspace(-30, 30, 64, dtype=torch.float64))  # saturated
    xs, ts = [], []
    for x in logits:
        for target in ("zeros", "ones", "binary", "soft"):
            xs.append(x)
            ts.append(
                {
                    "zeros": torch.zeros(64),
                    "ones": torch.ones(64),
                    "binary": torch.randint(0, 2, (64,), generator=g).float(),
                    "soft": torch.rand(64, generator=g),
                }[target].double()
            )
    return torch.cat(xs).to(dtype), torch.cat(ts).to(dtype)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("alpha", [-1.0, 0.0, 0.58, 1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_over_cross_entropy_is_alpha_t_times_modulator(alpha, gamma, seed, path):
    """focal <= CE, and focal / CE = α_t (1 - p_t)^γ, on saturated, soft and binary inputs.

    torchvision checks the ratio to 1e-3 against its own CE; ours is exact, so the ratio
    is checked against float64 to 1e-5 wherever the focal loss is a normal float32."""
    x, t = _diverse_inputs(seed)
    with PATHS[path]():
        focal = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
        ce = binary_cross_entropy(x, t)
    assert torch.all(focal <= ce)
    x64, t64 = x.double(), t.double()
    p = torch.sigmoid(x64)
    one_minus_p_t = p * (1 - t64) + torch.sigmoid(-x64) * t64
    ratio = one_minus_p_t**gamma
    if alpha >= 0:
        ratio = ratio * (alpha * t64 + (1 - alpha) * (1 - t64))
    normal = (ce > 0) & (ratio * ce.double() >= torch.finfo(torch.float32).tiny)
    torch.testing.assert_close(
        (focal.double() / ce.double())[normal], ratio[normal], rtol=1e-5, atol=0
    )
    assert torch.all(focal[ratio == 0] == 0)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("seed", [0, 1])
def test_alpha_minus_one_gamma_zero_equals_cross_entropy(reduction, seed, path):
    x, t = _diverse_inputs(seed)
    x_fl = x.clone().requires_grad_(True)
    x_ce = x.clone().requires_grad_(True)
    with PATHS[path]():
        focal = sigmoid_focal_loss(x_fl, t, alpha=-1, gamma=0, reduction=reduction)
        ce = binary_cross_entropy(x_ce, t, reduction=reduction)
    torch.testing.assert_close(focal, ce)
    focal.sum().backward()
    ce.sum().backward()
    torch.testing.assert_close(x_fl.grad, x_ce.grad)


# --- the rest ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("alpha,gamma", PARAMS)
def test_gradcheck(alpha, gamma, path):
    x, t = _data(n=10, c=3)
    x = x.clone().requires_grad_(True)
    with PATHS[path]():
        assert torch.autograd.gradcheck(lambda a: sigmoid_focal_loss(a, t, alpha, gamma), (x,))


def test_no_grad_gives_the_same_values():
    x, t = _data()
    with torch.no_grad():
        a = sigmoid_focal_loss(x.clone().requires_grad_(True), t)
    b = sigmoid_focal_loss(x.clone().requires_grad_(True), t)
    torch.testing.assert_close(a, b.detach())


def test_inputs_are_not_modified_in_place():
    x, t = _data()
    x0, t0 = x.clone(), t.clone()
    sigmoid_focal_loss(x.requires_grad_(True), t, reduction="sum").backward()
    assert torch.equal(x.detach(), x0) and torch.equal(t, t0)


def test_easy_examples_are_down_weighted():
    # The modulating factor: a well-classified negative (p = 0.1) loses 100x at gamma = 2.
    x = torch.logit(torch.tensor([0.1, 0.9], dtype=torch.float64))
    t = torch.zeros(2, dtype=torch.float64)
    ratio = sigmoid_focal_loss(x, t, alpha=-1) / binary_cross_entropy(x, t)
    torch.testing.assert_close(ratio, torch.tensor([0.1, 0.9], dtype=torch.float64) ** 2)


def test_easy_positive_keeps_its_loss():
    """The defect this module once had: at x = 15, y = 1 the loss is about 3e-7 · q^γ, not 0."""
    x, t = torch.tensor([15.0]), torch.tensor([1.0])
    for path in PATHS.values():
        with path():
            ce = binary_cross_entropy(x, t)
            focal = sigmoid_focal_loss(x, t, alpha=-1, gamma=0.5)
        exact = torch.nn.functional.softplus(-x.double())
        torch.testing.assert_close(ce.double(), exact, rtol=1e-6, atol=0)
        assert focal > 0 and focal <= ce


@pytest.mark.parametrize("kwargs", [{"gamma": -1.0}, {"alpha": 2.0}])
def test_bad_hyper_parameters_are_rejected(kwargs):
    x, t = _data()
    with pytest.raises(ValueError):
        sigmoid_focal_loss(x, t, **kwargs)
