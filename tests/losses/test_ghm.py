import pytest
import torch

from imbalance.losses import (
    GHMC,
    GHMR,
    _fused,
    asl1_loss,
    binary_cross_entropy,
    ghm_c_loss,
    ghm_c_weights,
    ghm_r_loss,
)
from imbalance.losses._fused import _floor_is_exact, floor_bin_index
from imbalance.losses.ghm import GHMC_TOP_EDGE, bin_edges, bin_index
from imbalance.losses.ghm_r import GHMR_TOP_EDGE
from imbalance.losses.reference import ghm_c_loss_loop, ghm_r_loss_loop


def _cls(n=300, c=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g) * 3 - 1).to(dtype)
    t = (torch.rand(n, c, generator=g) < 0.15).to(dtype)
    lw = (torch.rand(n, 1, generator=g) > 0.2).to(dtype)  # ~20 % ignored anchors
    return x, t, lw


def _reg(n=120, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pred = (torch.randn(n, 4, generator=g) * 0.2).to(dtype)
    target = (torch.randn(n, 4, generator=g) * 0.2).to(dtype)
    lw = (torch.rand(n, 1, generator=g) > 0.3).to(dtype)
    return pred, target, lw


def _value_and_grad(fn, x, *args):
    x = x.clone().requires_grad_(True)
    loss = fn(x, *args)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


# --- bins -------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", list(range(1, 65)) + [100, 128])
def test_bin_index_equals_float32_edge_comparisons_at_every_edge(bins):
    edges = bin_edges(bins, GHMC_TOP_EDGE)
    inner = edges[1:-1]
    probes = torch.cat(
        [
            inner,
            torch.nextafter(inner, torch.zeros_like(inner)),
            torch.nextafter(inner, torch.ones_like(inner)),
            torch.tensor([0.0, 1.0, 0.5, 1e-8, 1 - 1e-7]),
            torch.rand(1000, generator=torch.Generator().manual_seed(bins)),
        ]
    )
    expected = ((probes[:, None] >= edges[:-1]) & (probes[:, None] < edges[1:])).int().argmax(1)
    assert torch.equal(bin_index(probes, bins).long(), expected)
    # the fast path: floor(g * bins) where that is exact, bucketize elsewhere
    assert torch.equal(floor_bin_index(probes.clone(), bins, GHMC_TOP_EDGE).long(), expected)


@pytest.mark.parametrize("bins", [1, 10, 11, 30, 64])
@pytest.mark.parametrize("top", [GHMC_TOP_EDGE, GHMR_TOP_EDGE])
def test_fast_path_edges_are_the_readable_edges(bins, top):
    assert torch.equal(_fused._edges(bins, top), bin_edges(bins, top))


def test_floor_fast_path_covers_the_released_configs():
    # 30 bins (GHM-C) and 10 bins (GHM-R) take the floor(g * bins) path.
    assert _floor_is_exact(30) and _floor_is_exact(10)
    assert not all(_floor_is_exact(b) for b in range(1, 65))  # the fallback is needed


# --- GHM-C ------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [30, 10, 11, 1])
@pytest.mark.parametrize("weighted", [False, True])
def test_ghm_c_equals_the_loop_over_bins(bins, weighted):
    x, t, lw = _cls()
    lw = lw if weighted else None
    ours = _value_and_grad(lambda a: ghm_c_loss(a, t, lw, bins), x)
    ref = _value_and_grad(lambda a: ghm_c_loss_loop(a, t, lw, bins), x)
    torch.testing.assert_close(ours, ref)


def test_ghm_c_with_one_bin_is_mean_bce_over_valid_elements():
    x, t, lw = _cls()
    valid = (lw > 0).expand_as(x)
    expected = binary_cross_entropy(x, t)[valid].mean()
    torch.testing.assert_close(ghm_c_loss(x, t, lw, bins=1), expected)


def test_ghm_c_is_the_average_of_bin_means():
    # Two bins: g = 0.1, 0.2, 0.3 (bin 0) and g = 0.9 (bin 1) -> (mean of bin 0 + bin 1) / 2.
    p = torch.tensor([0.1, 0.2, 0.3, 0.9], dtype=torch.float64)
    x, t = torch.logit(p), torch.zeros(4, dtype=torch.float64)
    ce = binary_cross_entropy(x, t)
    expected = (ce[:3].mean() + ce[3]) / 2
    torch.testing.assert_close(ghm_c_loss(x, t, bins=2), expected)


def test_ghm_c_weights_are_tot_over_n_count():
    p = torch.tensor([0.1, 0.2, 0.3, 0.9, 0.5], dtype=torch.float64)
    x, t = torch.logit(p), torch.zeros(5, dtype=torch.float64)
    lw = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0], dtype=torch.float64)  # the last is ignored
    w = ghm_c_weights(x, t, lw, bins=2)
    # tot = 4 valid, n = 2 non-empty bins, counts 3 and 1
    torch.testing.assert_close(w, torch.tensor([4 / 6, 4 / 6, 4 / 6, 2.0, 0.0], dtype=w.dtype))


def test_ghm_c_weights_sum_to_the_number_of_valid_elements():
    x, t, lw = _cls(seed=3)
    w = ghm_c_weights(x, t, lw)
    torch.testing.assert_close(w.sum(), (lw > 0).expand_as(x).sum().to(w.dtype))


def test_label_weight_magnitude_is_ignored():
    x, t, lw = _cls()
    torch.testing.assert_close(ghm_c_loss(x, t, lw * 7.5), ghm_c_loss(x, t, lw))


def test_ghm_c_gradcheck():
    x, t, lw = _cls(n=12, c=3)
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: ghm_c_loss(a, t, lw, bins=5), (x,))


# --- GHM-R ------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [10, 30, 11, 1])
@pytest.mark.parametrize("weighted", [False, True])
def test_ghm_r_equals_the_loop_over_bins(bins, weighted):
    pred, target, lw = _reg()
    lw = lw if weighted else None
    ours = _value_and_grad(lambda a: ghm_r_loss(a, target, lw, 0.02, bins), pred)
    ref = _value_and_grad(lambda a: ghm_r_loss_loop(a, target, lw, 0.02, bins), pred)
    torch.testing.assert_close(ours, ref)


def test_ghm_r_fractional_label_weights_match_the_authors_tot():
    # The authors divide by Σ label_weight, we count valid elements: it cancels.
    pred, target, lw = _reg()
    lw = lw * torch.rand_like(lw)
    torch.testing.assert_close(
        ghm_r_loss(pred, target, lw), ghm_r_loss_loop(pred, target, lw, 0.02, 10)
    )


def test_ghm_r_with_one_bin_is_mean_asl1():
    pred, target, _ = _reg()
    torch.testing.assert_close(
        ghm_r_loss(pred, target, bins=1), asl1_loss(pred, target, reduction="mean")
    )


def test_ghm_r_gradient_reaches_pred_and_target():
    pred, target, lw = _reg(n=10)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, t: ghm_r_loss(p, t, lw, bins=4), (pred, target))


# --- running counts (EMA) -------------------------------------------------------------------


def test_first_call_with_momentum_is_one_over_one_minus_m_times_the_plain_loss():
    x, t, lw = _cls(dtype=torch.float32)
    m = 0.75
    torch.testing.assert_close(GHMC(30, m)(x, t, lw), ghm_c_loss(x, t, lw, 30) / (1 - m))


def test_running_counts_follow_the_authors_update():
    module = GHMC(bins=30, momentum=0.75)
    acc = torch.zeros(30)
    for seed in range(4):
        x, t, lw = _cls(seed=seed, dtype=torch.float32)
        torch.testing.assert_close(module(x, t, lw), ghm_c_loss_loop(x, t, lw, 30, acc, 0.75))
        torch.testing.assert_close(module.acc_sum, acc)


def test_ghmr_module_follows_the_authors_update():
    module = GHMR(mu=0.02, bins=10, momentum=0.7)
    acc = torch.zeros(10)
    for seed in range(3):
        pred, target, lw = _reg(seed=seed, dtype=torch.float32)
        expected = ghm_r_loss_loop(pred, target, lw, 0.02, 10, acc, 0.7)
        torch.testing.assert_close(module(pred, target, lw), expected)
        torch.testing.assert_close(module.acc_sum, acc)


def test_empty_bins_keep_their_running_count():
    module = GHMC(bins=2, momentum=0.5)
    t = torch.zeros(3)
    module(torch.logit(torch.tensor([0.1, 0.2, 0.9])), t)  # counts 2, 1
    torch.testing.assert_close(module.acc_sum, torch.tensor([1.0, 0.5]))
    module(torch.logit(torch.tensor([0.1, 0.2, 0.3])), t)  # counts 3, 0: bin 1 keeps 0.5
    torch.testing.assert_close(module.acc_sum, torch.tensor([2.0, 0.5]))


def test_state_dict_round_trip_and_reset():
    a = GHMC()
    for seed in range(2):
        x, t, lw = _cls(seed=seed, dtype=torch.float32)
        a(x, t, lw)
    b = GHMC()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.acc_sum, b.acc_sum) and a.acc_sum.sum() > 0
    x, t, lw = _cls(seed=9, dtype=torch.float32)
    torch.testing.assert_close(a(x, t, lw), b(x, t, lw))
    a.reset()
    assert torch.equal(a.acc_sum, torch.zeros(30))


def test_eval_mode_does_not_touch_the_running_counts():
    module = GHMC()
    x, t, lw = _cls(dtype=torch.float32)
    module(x, t, lw)
    before = module.acc_sum.clone()
    module.eval()
    loss = module(x, t, lw)
    assert torch.equal(module.acc_sum, before)
    torch.testing.assert_close(loss, ghm_c_loss(x, t, lw))


def test_momentum_zero_module_is_the_function():
    x, t, lw = _cls(dtype=torch.float32)
    torch.testing.assert_close(GHMC(momentum=0)(x, t, lw), ghm_c_loss(x, t, lw))
    pred, target, lw = _reg(dtype=torch.float32)
    torch.testing.assert_close(GHMR(momentum=0)(pred, target, lw), ghm_r_loss(pred, target, lw))


@pytest.mark.parametrize(
    "make", [lambda: GHMC(bins=0), lambda: GHMC(momentum=1.0), lambda: GHMR(mu=0.0)]
)
def test_bad_module_arguments_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_label_weight_that_does_not_broadcast_is_rejected():
    x, t, _ = _cls()
    with pytest.raises(ValueError, match="label_weight"):
        ghm_c_loss(x, t, torch.ones(7, 1))
