"""Backbones: torchvision's ResNet and FPN, with a choice of normalisation, width and weights.

No ImageNet weights can be downloaded here, so a backbone starts either from random weights or
from weights the package pretrained itself (:mod:`imbalance.train.pretrain`, loaded with
``weights=``). Every normalisation layer trains, which rules out torchvision's default
``FrozenBatchNorm2d``: frozen at its initial statistics it is an identity, i.e. no normalisation
at all. :func:`resnet_fpn` therefore uses ``BatchNorm2d`` (``norm="bn"``, statistics per batch;
``SyncBatchNorm`` under DDP is an option of the training pipeline) or ``GroupNorm``
(``norm="gn"``, independent of the batch size, the better choice for the small batches of CPU
runs). ``frozen_stages`` freezes the stem and the first stages, as the authors' detectors do
with a pretrained backbone.

``width`` scales every stage's channels (torchvision's ResNets have width 64: stages of 64, 128,
256 and 512 channels times the block's expansion); a narrower ResNet is the same network with
fewer channels, built from torchvision's own blocks, for the book's one-core runs. GroupNorm keeps
torchvision's channels per group at every width (32 groups at width 64).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    LastLevelMaxPool,
    LastLevelP6P7,
)

Norm = Literal["bn", "gn"]
Extra = Literal["pool", "p6", "p6p7"]
RESNETS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")
NORMS: tuple[str, ...] = ("bn", "gn")


def norm_layer(norm: str, num_groups: int = 32) -> Callable[[int], nn.Module]:
    """The normalisation layer factory for ``norm`` (``"bn"`` or ``"gn"``)."""
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return partial(nn.GroupNorm, num_groups)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


_DEPTHS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (tv_resnet.Bottleneck, [3, 4, 23, 3]),
}
WEIGHTS_FORMAT = "imbalance.backbone/1"


class ScaledResNet(tv_resnet.ResNet):
    """torchvision's ResNet with ``width`` channels in the stem and first stage (64 in theirs).

    The stages have ``width``, ``2 width``, ``4 width`` and ``8 width`` channels times the block's
    expansion; the module names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, ``fc``) and the
    initialisation are torchvision's, so :class:`~torchvision.models.detection.backbone_utils.
    BackboneWithFPN` and state dicts work unchanged.
    """

    def __init__(self, block: type[nn.Module], layers: list[int], width: int,
                 norm: Callable[[int], nn.Module], num_classes: int = 1000) -> None:
        super().__init__(block, layers, num_classes=num_classes, norm_layer=norm)  # type: ignore[arg-type]
        # torchvision fixes the widths at 64 .. 512: rebuild the stem and stages at ``width``
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.layer1 = self._make_layer(block, width, layers[0])  # type: ignore[arg-type]
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)  # type: ignore[arg-type]
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)  # type: ignore[arg-type]
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)  # type: ignore[arg-type]
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)  # type: ignore[attr-defined]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def resnet(name: str = "resnet18", norm: Norm = "bn", width: int = 64) -> tv_resnet.ResNet:
    """A randomly initialised torchvision ResNet (``resnet18/34/50/101``) with ``norm`` layers.

    ``width`` other than torchvision's 64 gives a :class:`ScaledResNet` (GroupNorm with
    ``width / 2`` groups, torchvision's channels per group).
    """
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {RESNETS}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
        raise ValueError(f"width must be an even int >= 2, got {width!r}")
    if width == 64:
        return getattr(tv_resnet, name)(weights=None, norm_layer=norm_layer(norm))
    block, layers = _DEPTHS[name]
    return ScaledResNet(block, layers, width, norm_layer(norm, num_groups=width // 2))


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_backbone_weights(path: str | os.PathLike) -> dict[str, Any]:
    """Read a backbone weight file written by :func:`save_backbone_weights`.

    Returns:
        ``{"format", "architecture": {"backbone", "width", "norm"}, "state_dict",
        "provenance"}``; the state dict's tensors are float32.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a backbone weight file of this package.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no backbone weights at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error to the user
        raise ValueError(f"{path} is not a readable weight file: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path} is not a backbone weight file (format {WEIGHTS_FORMAT!r}) "
                         f"written by imbalance.train.pretrain")
    blob["state_dict"] = {k: v.float() for k, v in blob["state_dict"].items()}
    return blob


def save_backbone_weights(path: str | os.PathLike, body: nn.Module, architecture: dict[str, Any],
                          provenance: dict[str, Any]) -> Path:
    """Write ``body``'s weights (without ``fc``) in float16 with their architecture and
    provenance, atomically; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16) for k, v in body.state_dict().items()
             if not k.startswith("fc.")}
    # plain JSON types only, so that torch.load(weights_only=True) reads the file back
    blob = {"format": WEIGHTS_FORMAT, "architecture": dict(architecture), "state_dict": state,
            "provenance": json.loads(json.dumps(dict(provenance), default=str))}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def freeze_stages(body: tv_resnet.ResNet, frozen_stages: int) -> None:
    """Stop training the stem and the first ``frozen_stages`` stages (0: nothing frozen; 1: the
    stem and ``layer1``, the authors' setting with a pretrained backbone; -1: nothing, either)."""
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
            or not -1 <= frozen_stages <= 4:
        raise ValueError(f"frozen_stages must be an int in -1..4, got {frozen_stages!r}")
    if frozen_stages < 1:
        return
    modules = [body.conv1, body.bn1] + [getattr(body, f"layer{i}")
                                        for i in range(1, frozen_stages + 1)]
    for module in modules:
        module.requires_grad_(False)


class LastLevelP6(ExtraFPNBlock):
    """One extra level P6 by a stride-2 3x3 conv on C5, as RetinaNet's P6 (without its P7).

    Used when the anchors are half RetinaNet's scale: strides 4..64 are the levels P2..P6.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        nn.init.kaiming_uniform_(self.p6.weight, a=1)
        nn.init.constant_(self.p6.bias, 0)

    def forward(
        self, results: list[Tensor], x: list[Tensor], names: list[str]
    ) -> tuple[list[Tensor], list[str]]:
        return [*results, self.p6(x[-1])], [*names, "p6"]


def _stage_channels(body: tv_resnet.ResNet, width: int = 64) -> list[int]:
    """Output channels of C2..C5."""
    expansion = type(body.layer1[-1]).expansion
    return [width * 2 ** (i - 1) * expansion for i in range(1, 5)]


def resnet_fpn(
    name: str = "resnet18",
    *,
    norm: Norm = "bn",
    fpn_channels: int = 256,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    extra: Extra = "pool",
    width: int = 64,
    weights: str | os.PathLike | None = None,
    frozen_stages: int = 0,
) -> BackboneWithFPN:
    """ResNet + FPN, from scratch or from the package's pretrained weights.

    Args:
        name: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        norm: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm, 32 groups) in the ResNet.
        fpn_channels: width of every FPN output.
        returned_layers: the ResNet stages (1..4, i.e. C2..C5) the FPN takes.
        extra: ``"pool"`` adds a max-pooled level after the last (Faster R-CNN's P6, key
            ``"pool"``); ``"p6"`` adds P6 by a stride-2 3x3 conv on C5 (key ``"p6"``);
            ``"p6p7"`` adds P6 and P7 by stride-2 3x3 convs from C5, as in the RetinaNet paper
            (keys ``"p6"``, ``"p7"``).
        width: the ResNet's width (torchvision's is 64; see :class:`ScaledResNet`).
        weights: a backbone weight file of :mod:`imbalance.train.pretrain` for the ResNet (its
            architecture must be ``name``, ``width`` and ``norm``); ``None``: random weights.
        frozen_stages: freeze the stem and this many stages (see :func:`freeze_stages`).

    Returns:
        torchvision's ``BackboneWithFPN``: ``forward(images: Tensor[B, 3, H, W])`` gives an
        ``OrderedDict`` of ``Tensor[B, fpn_channels, h_i, w_i]``, finest first; ``out_channels``
        is ``fpn_channels``.
    """
    layers = sorted(set(returned_layers))
    if not layers or layers[0] < 1 or layers[-1] > 4 or len(layers) != len(returned_layers):
        raise ValueError(f"returned_layers must be distinct stages in 1..4, got {returned_layers}")
    if fpn_channels < 1:
        raise ValueError(f"fpn_channels must be positive, got {fpn_channels}")
    body = resnet(name, norm, width)
    if weights is not None:
        blob = load_backbone_weights(weights)
        wanted = {"backbone": name, "width": width, "norm": norm}
        have = {k: blob["architecture"].get(k) for k in wanted}
        if have != wanted:
            raise ValueError(f"the weights in {weights} are for {have}, the backbone is {wanted}")
        missing, unexpected = body.load_state_dict(blob["state_dict"], strict=False)
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"the weights in {weights} do not fit {name}: missing {missing}, "
                             f"unexpected {unexpected}")
    freeze_stages(body, frozen_stages)
    channels = _stage_channels(body, width)
    in_channels = [channels[i - 1] for i in layers]
    if extra == "pool":
        extra_block: nn.Module = LastLevelMaxPool()
    elif extra == "p6":
        extra_block = LastLevelP6(in_channels[-1], fpn_channels)
    elif extra == "p6p7":
        extra_block = LastLevelP6P7(in_channels[-1], fpn_channels)
    else:
        raise ValueError(f"unknown extra levels {extra!r}; expected 'pool', 'p6' or 'p6p7'")
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(layers)}
    return BackboneWithFPN(body, return_layers, in_channels, fpn_channels, extra_blocks=extra_block)


class BackboneWithNeck(nn.Module):
    """A feature extractor followed by a neck on its ``OrderedDict`` of maps (e.g. FPN then BFP).

    ``out_channels`` is the backbone's, as torchvision detectors require; the neck must keep the
    keys, shapes and channel count (as :class:`imbalance.necks.BalancedFeaturePyramid` does).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.out_channels: int = backbone.out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.neck(self.backbone(x))
