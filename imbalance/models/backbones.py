"""Backbones trained from scratch: torchvision's ResNet and FPN, with a choice of normalisation.

No pretrained weights can be downloaded here, so every backbone starts from random weights and
every layer trains. That rules out torchvision's default ``FrozenBatchNorm2d``: frozen at its
initial statistics it is an identity, i.e. no normalisation at all. :func:`resnet_fpn` therefore
uses ``BatchNorm2d`` (``norm="bn"``, statistics per batch; ``SyncBatchNorm`` under DDP is an
option of the training pipeline) or ``GroupNorm`` (``norm="gn"``, independent of the batch size,
the better choice for the small batches of CPU runs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

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


def resnet(name: str = "resnet18", norm: Norm = "bn") -> tv_resnet.ResNet:
    """A randomly initialised torchvision ResNet (``resnet18/34/50/101``) with ``norm`` layers."""
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; expected one of {RESNETS}")
    return getattr(tv_resnet, name)(weights=None, norm_layer=norm_layer(norm))


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


def _stage_channels(body: tv_resnet.ResNet) -> list[int]:
    """Output channels of C2..C5."""
    expansion = type(body.layer1[-1]).expansion
    return [64 * 2 ** (i - 1) * expansion for i in range(1, 5)]


def resnet_fpn(
    name: str = "resnet18",
    *,
    norm: Norm = "bn",
    fpn_channels: int = 256,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    extra: Extra = "pool",
) -> BackboneWithFPN:
    """ResNet + FPN from scratch, every layer trainable.

    Args:
        name: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        norm: ``"bn"`` (BatchNorm) or ``"gn"`` (GroupNorm, 32 groups) in the ResNet.
        fpn_channels: width of every FPN output.
        returned_layers: the ResNet stages (1..4, i.e. C2..C5) the FPN takes.
        extra: ``"pool"`` adds a max-pooled level after the last (Faster R-CNN's P6, key
            ``"pool"``); ``"p6"`` adds P6 by a stride-2 3x3 conv on C5 (key ``"p6"``);
            ``"p6p7"`` adds P6 and P7 by stride-2 3x3 convs from C5, as in the RetinaNet paper
            (keys ``"p6"``, ``"p7"``).

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
    body = resnet(name, norm)
    channels = _stage_channels(body)
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
