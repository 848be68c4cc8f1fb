"""ResNet + FPN backbones from scratch: shapes, normalisation layers, trainability, errors."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from imbalance.models.backbones import (
    RESNETS,
    BackboneWithNeck,
    load_backbone_weights,
    norm_layer,
    resnet,
    resnet_fpn,
    save_backbone_weights,
)

SIZE = 64  # input side; C2..C5 have strides 4, 8, 16, 32


pytestmark = pytest.mark.usefixtures("one_thread")


def images(batch: int = 2, size: int = SIZE) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("name", "norm", "extra", "layers", "expected"),
    [
        ("resnet18", "bn", "pool", (1, 2, 3, 4), {"0": 16, "1": 8, "2": 4, "3": 2, "pool": 1}),
        ("resnet18", "gn", "p6p7", (2, 3, 4), {"0": 8, "1": 4, "2": 2, "p6": 1, "p7": 1}),
        ("resnet50", "gn", "pool", (1, 2, 3, 4), {"0": 16, "1": 8, "2": 4, "3": 2, "pool": 1}),
        ("resnet50", "bn", "p6p7", (3, 4), {"0": 4, "1": 2, "p6": 1, "p7": 1}),
    ],
)
def test_output_keys_and_shapes(
    name: str, norm: str, extra: str, layers: tuple[int, ...], expected: dict[str, int]
) -> None:
    model = resnet_fpn(name, norm=norm, fpn_channels=24, returned_layers=layers, extra=extra)
    assert model.out_channels == 24
    out = model(images())
    assert isinstance(out, OrderedDict)
    assert list(out) == list(expected)
    for key, side in expected.items():
        assert out[key].shape == (2, 24, side, side), key


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_names(name: str) -> None:
    body = resnet(name, "gn")
    assert type(body).__name__ == "ResNet"
    assert body.fc.in_features == (512 if name in ("resnet18", "resnet34") else 2048)


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_normalisation_layers_and_trainability(norm: str) -> None:
    model = resnet_fpn("resnet18", norm=norm, fpn_channels=16)
    kinds = {type(m) for m in model.modules()}
    assert FrozenBatchNorm2d not in kinds
    if norm == "bn":
        assert nn.BatchNorm2d in kinds and nn.GroupNorm not in kinds
    else:
        assert nn.GroupNorm in kinds and nn.BatchNorm2d not in kinds
        groups = {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)}
        assert groups == {32}
    params = list(model.named_parameters())
    assert params and all(p.requires_grad for _, p in params)

    # every layer trains: the stem's first conv gets a gradient (nothing frozen)
    sum(o.mean() for o in model(images()).values()).backward()
    stem = model.body.conv1.weight.grad
    assert stem is not None and stem.abs().sum() > 0


def test_norm_layer_factory() -> None:
    assert norm_layer("bn") is nn.BatchNorm2d
    gn = norm_layer("gn", num_groups=4)(8)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 4 and gn.num_channels == 8


class Doubler(nn.Module):
    def forward(self, feats: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:
        return OrderedDict((k, 2 * v) for k, v in feats.items())


def test_backbone_with_neck() -> None:
    fpn = resnet_fpn("resnet18", fpn_channels=16).eval()
    model = BackboneWithNeck(fpn, Doubler())
    assert model.out_channels == 16
    x = images(1)
    with torch.no_grad():
        plain, necked = fpn(x), model(x)
    assert list(necked) == list(plain)
    for k in plain:
        torch.testing.assert_close(necked[k], 2 * plain[k])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "resnet9"},
        {"name": "vgg16"},
        {"norm": "ln"},
        {"extra": "p5"},
        {"returned_layers": ()},
        {"returned_layers": (0, 1)},
        {"returned_layers": (2, 5)},
        {"returned_layers": (2, 2, 3)},
        {"fpn_channels": 0},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        resnet_fpn(**kwargs)


def test_bad_norm_factory() -> None:
    with pytest.raises(ValueError, match="norm"):
        norm_layer("batch")


# ------------------------------------------------------------------ width, weights, frozen stages
@pytest.mark.parametrize(("name", "width"), [("resnet18", 32), ("resnet50", 16)])
def test_a_scaled_resnet_is_torchvisions_with_every_width_scaled(name: str, width: int) -> None:
    full, scaled = resnet(name, "gn"), resnet(name, "gn", width)
    assert list(dict(full.named_parameters())) == list(dict(scaled.named_parameters()))
    ratio = width / 64
    for (key, a), b in zip(full.named_parameters(), scaled.parameters(), strict=True):
        if key.startswith("fc."):
            continue
        # every dimension but the RGB input is scaled by width / 64
        expected = tuple(n if (key == "conv1.weight" and i == 1) else int(n * ratio)
                         for i, n in enumerate(a.shape[:2])) + tuple(a.shape[2:])
        assert tuple(b.shape) == expected, key
    groups = {m.num_channels // m.num_groups for m in full.modules() if isinstance(m, nn.GroupNorm)}
    scaled_groups = {m.num_channels // m.num_groups for m in scaled.modules()
                     if isinstance(m, nn.GroupNorm)}
    assert groups == scaled_groups  # the same channels per group at every width
    fpn = resnet_fpn(name, norm="gn", fpn_channels=8, width=width)
    assert [v.shape[1] for v in fpn(images()).values()] == [8] * 5


@pytest.mark.parametrize("width", [0, 3, 2.0, True])
def test_a_bad_width_is_refused(width: object) -> None:
    with pytest.raises(ValueError, match="width"):
        resnet("resnet18", "gn", width)  # type: ignore[arg-type]


def test_pretrained_weights_round_trip_and_must_fit(tmp_path) -> None:
    torch.manual_seed(3)
    body = resnet("resnet18", "gn", 16)
    path = save_backbone_weights(tmp_path / "w.pt", body, {"backbone": "resnet18", "width": 16,
                                                           "norm": "gn"}, {"note": "test"})
    blob = load_backbone_weights(path)
    assert blob["provenance"] == {"note": "test"}
    assert not any(k.startswith("fc.") for k in blob["state_dict"])
    torch.manual_seed(4)  # a different random draw, replaced by the file's weights
    loaded = resnet_fpn("resnet18", norm="gn", fpn_channels=8, width=16, weights=path).body
    for key, value in body.state_dict().items():
        if key.startswith("fc."):
            continue
        # stored in float16: equal to its rounding
        torch.testing.assert_close(loaded.state_dict()[key], value.half().float(), msg=key)
    with pytest.raises(ValueError, match="are for"):
        resnet_fpn("resnet18", norm="gn", fpn_channels=8, width=32, weights=path)
    with pytest.raises(ValueError, match="are for"):
        resnet_fpn("resnet18", norm="bn", fpn_channels=8, width=16, weights=path)
    with pytest.raises(FileNotFoundError):
        resnet_fpn("resnet18", norm="gn", width=16, weights=tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a weight file")
    with pytest.raises(ValueError, match="not a readable"):
        load_backbone_weights(tmp_path / "bad.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a backbone weight file"):
        load_backbone_weights(tmp_path / "other.pt")


@pytest.mark.parametrize("frozen", [0, 1, 2])
def test_frozen_stages_get_no_gradient(frozen: int) -> None:
    model = resnet_fpn("resnet18", norm="gn", fpn_channels=8, width=8, frozen_stages=frozen)
    sum(v.sum() for v in model(images()).values()).backward()
    stem = [model.body.conv1, model.body.bn1]
    stages = [getattr(model.body, f"layer{i}") for i in range(1, 5)]
    frozen_modules = (stem + stages[:frozen]) if frozen else []
    trained = stages[frozen:] + ([] if frozen else stem)
    for module in frozen_modules:
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    for module in trained:
        assert all(p.grad is not None for p in module.parameters())
    with pytest.raises(ValueError, match="frozen_stages"):
        resnet_fpn("resnet18", norm="gn", width=8, frozen_stages=5)
