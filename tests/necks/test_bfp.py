"""Balanced Feature Pyramid: shapes, identity at init, a by-hand reference, gradients, errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from imbalance.necks import BalancedFeaturePyramid, NonLocal2d

KEYS = ["0", "1", "2", "3", "pool"]
CHANNELS = 16


def pyramid(
    sizes: list[tuple[int, int]], channels: int = CHANNELS, batch: int = 2, seed: int = 0
) -> OrderedDict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (k, torch.randn(batch, channels, h, w, generator=g))
        for k, (h, w) in zip(KEYS, sizes, strict=True)
    )


SQUARE = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
ODD = [(25, 38), (13, 19), (7, 10), (4, 5), (2, 3)]


def by_hand(feats: OrderedDict[str, Tensor], refine_level: int) -> OrderedDict[str, Tensor]:
    """Independent reference: gather, average, scatter, residual, with no refinement."""
    xs = list(feats.values())
    h_r, w_r = xs[refine_level].shape[-2:]
    total = torch.zeros_like(xs[refine_level])
    for i, x in enumerate(xs):
        if i < refine_level:
            total = total + F.adaptive_max_pool2d(x, (h_r, w_r))
        else:
            total = total + F.interpolate(x, size=(h_r, w_r), mode="nearest")
    bsf = total / len(xs)
    out = OrderedDict()
    for i, (k, x) in enumerate(feats.items()):
        size = (x.shape[-2], x.shape[-1])
        if i < refine_level:
            out[k] = F.interpolate(bsf, size=size, mode="nearest") + x
        else:
            out[k] = F.adaptive_max_pool2d(bsf, size) + x
    return out


@pytest.mark.parametrize("refine", ["non_local", "conv", None])
@pytest.mark.parametrize("refine_level", [0, 1, 2, 4])
def test_keys_and_shapes_preserved(refine: str | None, refine_level: int) -> None:
    feats = pyramid(SQUARE, channels=64)
    bfp = BalancedFeaturePyramid(64, 5, refine_level=refine_level, refine=refine)
    out = bfp(feats)
    assert isinstance(out, OrderedDict)
    assert list(out) == KEYS
    for k in KEYS:
        assert out[k].shape == feats[k].shape
        assert torch.isfinite(out[k]).all()


def test_non_local_identity_at_init() -> None:
    torch.manual_seed(0)
    block = NonLocal2d(CHANNELS)
    x = torch.randn(2, CHANNELS, 7, 5)
    assert torch.equal(block(x), x)
    # ... and not the identity once the output conv is non-zero (the test can fail).
    with torch.no_grad():
        block.conv_out.weight.normal_()
    assert not torch.allclose(block(x), x)


@pytest.mark.parametrize("refine_level", [0, 2, 4])
def test_bfp_non_local_refine_is_identity_at_init(refine_level: int) -> None:
    torch.manual_seed(0)
    feats = pyramid(SQUARE)
    bfp = BalancedFeaturePyramid(CHANNELS, 5, refine_level=refine_level, refine="non_local")
    out = bfp(feats)
    expected = by_hand(feats, refine_level)
    for k in KEYS:
        torch.testing.assert_close(out[k], expected[k], rtol=0, atol=1e-6)
    stages = bfp.forward_with_stages(feats)
    assert torch.equal(stages["refined"], stages["integrated"])


@pytest.mark.parametrize("sizes", [SQUARE, ODD], ids=["square", "odd"])
@pytest.mark.parametrize("refine_level", [0, 1, 2, 3, 4])
def test_no_refine_matches_by_hand(sizes: list[tuple[int, int]], refine_level: int) -> None:
    feats = pyramid(sizes, seed=refine_level)
    out = BalancedFeaturePyramid(CHANNELS, 5, refine_level=refine_level, refine=None)(feats)
    expected = by_hand(feats, refine_level)
    assert list(out) == KEYS
    for k in KEYS:
        torch.testing.assert_close(out[k], expected[k], rtol=1e-6, atol=1e-6)


def test_stages_are_consistent() -> None:
    feats = pyramid(ODD)
    bfp = BalancedFeaturePyramid(CHANNELS, 5, refine_level=2, refine="conv")
    st = bfp.forward_with_stages(feats)
    assert list(st["gathered"]) == KEYS and list(st["scattered"]) == KEYS
    for g in st["gathered"].values():
        assert g.shape == (2, CHANNELS, 7, 10)
    torch.testing.assert_close(st["integrated"], sum(st["gathered"].values()) / 5)
    torch.testing.assert_close(st["refined"], bfp.refine(st["integrated"]))
    for k in KEYS:
        torch.testing.assert_close(st["outputs"][k], st["scattered"][k] + feats[k])


@pytest.mark.parametrize("refine", ["non_local", "conv", None])
@pytest.mark.parametrize("sizes", [SQUARE, ODD], ids=["square", "odd"])
def test_gradient_flow(refine: str | None, sizes: list[tuple[int, int]]) -> None:
    torch.manual_seed(0)
    bfp = BalancedFeaturePyramid(CHANNELS, 5, refine_level=2, refine=refine).double()
    feats = OrderedDict((k, v.double().requires_grad_()) for k, v in pyramid(sizes).items())
    if refine == "non_local":
        with torch.no_grad():  # activate the attention path (it is a no-op at init)
            bfp.refine.conv_out.weight.normal_(std=0.1)
            bfp.refine.conv_out.bias.normal_(std=0.1)
            for conv in (bfp.refine.g, bfp.refine.theta, bfp.refine.phi):
                conv.weight.normal_(std=0.3)
                conv.bias.normal_(std=0.3)
    out = bfp(feats)
    sum(o.sum() for o in out.values()).backward()
    for k, x in feats.items():
        assert x.grad is not None and torch.isfinite(x.grad).all(), k
        assert x.grad.abs().sum() > 0, k
    for name, p in bfp.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name == "refine.phi.bias":
            # phi's bias adds theta_i . b to every logit of row i: softmax is invariant to
            # it, so its gradient is zero in exact arithmetic (same in the authors' code).
            assert p.grad.abs().max() < 1e-8, name
        else:
            assert p.grad.abs().sum() > 0, name


def test_wrong_number_of_levels_raises() -> None:
    bfp = BalancedFeaturePyramid(CHANNELS, 5)
    feats = pyramid(SQUARE)
    feats.pop("pool")
    with pytest.raises(ValueError, match="expects 5 feature maps, got 4"):
        bfp(feats)
    with pytest.raises(ValueError, match="expects 4 feature maps, got 5"):
        BalancedFeaturePyramid(CHANNELS, 4, refine_level=1)(pyramid(SQUARE))


def test_wrong_channels_raises() -> None:
    bfp = BalancedFeaturePyramid(CHANNELS, 5)
    feats = pyramid(SQUARE)
    feats["2"] = torch.randn(2, CHANNELS + 1, 8, 8)
    with pytest.raises(ValueError, match=r"'2' has 17 channels, expected in_channels=16"):
        bfp(feats)


def test_bad_constructor_arguments_raise() -> None:
    with pytest.raises(ValueError, match="refine_level"):
        BalancedFeaturePyramid(CHANNELS, 5, refine_level=5)
    with pytest.raises(ValueError, match="refine"):
        BalancedFeaturePyramid(CHANNELS, 5, refine="attention")


@pytest.mark.parametrize("refine", ["non_local", "conv"])
def test_composes_with_torchvision_fpn(refine: str) -> None:
    torch.manual_seed(0)
    fpn = FeaturePyramidNetwork([8, 16, 32, 64], 32, extra_blocks=LastLevelMaxPool())
    bfp = BalancedFeaturePyramid(32, 5, refine_level=2, refine=refine)
    backbone = OrderedDict(
        (str(i), torch.randn(2, c, s, s + 3))
        for i, (c, s) in enumerate(zip([8, 16, 32, 64], [40, 20, 10, 5], strict=True))
    )
    feats = fpn(backbone)
    assert list(feats) == KEYS
    out = bfp(feats)
    assert list(out) == KEYS
    for k in KEYS:
        assert out[k].shape == feats[k].shape
    assert not torch.allclose(out["0"], feats["0"])  # the balanced feature was added
