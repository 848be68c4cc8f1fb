import pytest
import torch
import torchvision

from imbalance.losses import binary_cross_entropy, sigmoid_focal_loss
from imbalance.losses.focal import sigmoid_focal_loss_reference

PARAMS = [(0.25, 2.0), (0.25, 0.0), (-1.0, 2.0), (0.5, 0.5), (0.75, 1.0), (0.25, 5.0), (1.0, 2.0)]


def _data(n=200, c=6, seed=0, dtype=torch.float64, soft=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=dtype) * 4
    if soft:
        t = torch.rand(n, c, generator=g, dtype=dtype)
    else:
        t = (torch.rand(n, c, generator=g) < 0.1).to(dtype)
    return x, t


@pytest.mark.parametrize("alpha,gamma", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("soft", [False, True])
def test_values_and_gradients_equal_torchvision(alpha, gamma, dtype, soft):
    x, t = _data(dtype=dtype, soft=soft)
    ours_x = x.clone().requires_grad_(True)
    tv_x = x.clone().requires_grad_(True)
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
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, reduction=reduction),
        torchvision.ops.sigmoid_focal_loss(x, t, reduction=reduction),
    )


def test_gamma_zero_without_alpha_is_bce():
    x, t = _data()
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, alpha=-1, gamma=0), binary_cross_entropy(x, t)
    )


@pytest.mark.parametrize("alpha,gamma", PARAMS)
def test_closed_form_backward_passes_gradcheck(alpha, gamma):
    x, t = _data(n=10, c=3)
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: sigmoid_focal_loss(a, t, alpha, gamma), (x,))


@pytest.mark.parametrize("alpha,gamma", PARAMS)
def test_closed_form_backward_equals_autograd(alpha, gamma):
    x, t = _data(soft=True)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    sigmoid_focal_loss(a, t, alpha, gamma, reduction="sum").backward()
    sigmoid_focal_loss_reference(b, t, alpha, gamma).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_gradient_reaches_targets_that_require_it():
    x, t = _data(soft=True)
    t1 = t.clone().requires_grad_(True)
    t2 = t.clone().requires_grad_(True)
    sigmoid_focal_loss(x, t1, reduction="sum").backward()
    torchvision.ops.sigmoid_focal_loss(x, t2, reduction="sum").backward()
    torch.testing.assert_close(t1.grad, t2.grad)


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


@pytest.mark.parametrize("kwargs", [{"gamma": -1.0}, {"alpha": 2.0}])
def test_bad_hyper_parameters_are_rejected(kwargs):
    x, t = _data()
    with pytest.raises(ValueError):
        sigmoid_focal_loss(x, t, **kwargs)
