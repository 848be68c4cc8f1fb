r"""Libra R-CNN's Balanced Feature Pyramid (Pang et al., CVPR 2019), in ``torchvision.ops`` style.

A feature pyramid :math:`\{C_0, \dots, C_{L-1}\}` (finest first, all with ``C`` channels)
is balanced in four steps, following the authors' released code (mmdetection's ``BFP``):

1. **Gather**: every level is rescaled to the size :math:`(H_r, W_r)` of the refine level
   :math:`r`; finer levels (:math:`l < r`) by adaptive max pooling, the others
   (:math:`l \ge r`) by nearest-neighbour interpolation.
2. **Integrate**: the balanced semantic feature is their average,
   :math:`B = \frac{1}{L} \sum_{l=0}^{L-1} \mathrm{resize}_{r}(C_l)`, shape ``[N, C, H_r, W_r]``.
3. **Refine**: :math:`B' = \mathrm{refine}(B)`, an embedded-Gaussian non-local block
   (:class:`NonLocal2d`), a 3x3 convolution + ReLU, or nothing.
4. **Scatter**: :math:`B'` is rescaled back to every level's size, coarser levels
   (:math:`l \ge r`) by adaptive max pooling and finer ones (:math:`l < r`) by nearest
   interpolation, and added as a residual: :math:`P_l = \mathrm{resize}_{l}(B') + C_l`.

The pyramid keeps its keys and shapes; the module strengthens each level with the balanced
semantic feature, which carries information from every resolution.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REFINE_TYPES = ("non_local", "conv", None)


class NonLocal2d(nn.Module):
    r"""Embedded-Gaussian non-local block (Wang et al., CVPR 2018), as Libra R-CNN uses it.

    For an input :math:`x` of shape ``[N, C, H, W]`` with positions :math:`i, j` over
    the :math:`HW` grid:

    .. math::
        f_{ij} = \mathrm{softmax}_j\big(\theta(x_i)^\top \phi(x_j)\big), \qquad
        y_i = \sum_j f_{ij}\, g(x_j), \qquad
        z = x + W_z(y),

    where :math:`\theta, \phi, g` are 1x1 convolutions (with bias) to ``inter_channels``
    (``in_channels // reduction``) and :math:`W_z` is a 1x1 convolution (with bias) back to
    ``in_channels``. With ``use_scale=True`` the logits are divided by
    :math:`\sqrt{\text{inter\_channels}}`. :math:`W_z` is zero-initialised, so the block is the
    identity at initialisation; :math:`\theta, \phi, g` are drawn from
    :math:`\mathcal{N}(0, 0.01^2)` with zero bias (mmcv's defaults).

    Args:
        in_channels: number of channels ``C`` of the input.
        reduction: channel reduction of the embeddings; 1 keeps ``C`` channels.
        use_scale: divide the pairwise logits by the square root of the embedding width.

    Shape:
        input ``[N, C, H, W]``; output of the same shape. Memory grows as :math:`(HW)^2`.
    """

    def __init__(self, in_channels: int, reduction: int = 1, use_scale: bool = False) -> None:
        super().__init__()
        if in_channels < 1 or reduction < 1:
            raise ValueError(
                f"in_channels and reduction must be >= 1, got {in_channels} and {reduction}"
            )
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // reduction, 1)
        self.use_scale = use_scale
        self.g = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.theta = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, self.inter_channels, kernel_size=1)
        self.conv_out = nn.Conv2d(self.inter_channels, in_channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Embeddings ``N(0, 0.01^2)`` with zero bias; ``conv_out`` all zeros (identity block)."""
        for conv in (self.g, self.theta, self.phi):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        theta_x = self.theta(x).flatten(2).transpose(1, 2)  # [N, HW, C']
        phi_x = self.phi(x).flatten(2)  # [N, C', HW]
        pairwise = torch.bmm(theta_x, phi_x)  # [N, HW, HW]
        if self.use_scale:
            pairwise = pairwise / math.sqrt(self.inter_channels)
        pairwise = pairwise.softmax(dim=-1)
        y = torch.bmm(pairwise, g_x)  # [N, HW, C']
        y = y.transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return x + self.conv_out(y)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, inter_channels={self.inter_channels}, " \
            f"use_scale={self.use_scale}"


def bfp_gather(features: Sequence[Tensor], refine_level: int) -> list[Tensor]:
    """Rescale every level to the size of ``features[refine_level]``.

    Levels finer than the refine level are adaptive-max-pooled, the refine level and coarser
    ones are nearest-interpolated (the authors' code). Returns one ``[N, C, H_r, W_r]`` tensor
    per level; their mean is the balanced semantic feature.
    """
    size = features[refine_level].shape[-2:]
    return [
        F.adaptive_max_pool2d(x, output_size=size)
        if i < refine_level
        else F.interpolate(x, size=size, mode="nearest")
        for i, x in enumerate(features)
    ]


def bfp_scatter(
    bsf: Tensor, sizes: Sequence[tuple[int, int]], refine_level: int
) -> list[Tensor]:
    """Rescale the (refined) balanced semantic feature to every level's ``(H_l, W_l)``.

    Levels finer than the refine level get nearest interpolation, the refine level and
    coarser ones adaptive max pooling (the authors' code). Returns ``[N, C, H_l, W_l]``
    tensors, one per size; the residual is added by the caller.
    """
    return [
        F.interpolate(bsf, size=tuple(size), mode="nearest")
        if i < refine_level
        else F.adaptive_max_pool2d(bsf, output_size=tuple(size))
        for i, size in enumerate(sizes)
    ]


class BalancedFeaturePyramid(nn.Module):
    r"""Libra R-CNN's Balanced Feature Pyramid: strengthens each level with the balanced
    semantic feature.

    With levels :math:`C_0, \dots, C_{L-1}` (finest first) and refine level :math:`r`:

    .. math::
        B = \frac{1}{L} \sum_{l=0}^{L-1} \mathrm{gather}_{l \to r}(C_l), \qquad
        B' = \mathrm{refine}(B), \qquad
        P_l = \mathrm{scatter}_{r \to l}(B') + C_l,

    where gather is adaptive max pooling for :math:`l < r` and nearest interpolation for
    :math:`l \ge r`, and scatter is nearest interpolation for :math:`l < r` and adaptive
    max pooling for :math:`l \ge r`, always to the exact target size (odd and non-square
    sizes are fine).

    Args:
        in_channels: channels ``C`` of every level (``out_channels`` of the FPN).
        num_levels: number of levels ``L`` the module accepts, e.g. 5 for torchvision's
            FPN with ``LastLevelMaxPool`` (keys ``"0"`` to ``"3"`` and ``"pool"``).
        refine_level: index ``r`` (in the finest-first order) of the level whose size the
            balanced semantic feature takes; 2 in the paper (``C_4`` of ``C_2..C_6``).
        refine: ``"non_local"`` (embedded Gaussian :class:`NonLocal2d`, reduction 1, no
            scaling, zero-initialised output so it starts as the identity), ``"conv"``
            (3x3 convolution with bias + ReLU, Xavier-uniform init) or ``None``.

    Shape:
        input: ``OrderedDict[str, Tensor]`` of exactly ``num_levels`` maps
        ``[N, in_channels, H_l, W_l]``, finest first. Output: an ``OrderedDict`` with the same
        keys, in the same order, and the same shapes.
    """

    def __init__(
        self,
        in_channels: int,
        num_levels: int,
        refine_level: int = 2,
        refine: str | None = "non_local",
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        if not 0 <= refine_level < num_levels:
            raise ValueError(
                f"refine_level must be in [0, {num_levels - 1}] for {num_levels} levels, "
                f"got {refine_level}"
            )
        if refine not in REFINE_TYPES:
            raise ValueError(f"refine must be one of {REFINE_TYPES}, got {refine!r}")
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.refine_level = refine_level
        self.refine_type = refine
        self.refine: nn.Module
        if refine == "non_local":
            self.refine = NonLocal2d(in_channels, reduction=1, use_scale=False)
        elif refine == "conv":
            conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
            self.refine = nn.Sequential(conv, nn.ReLU(inplace=True))
        else:
            self.refine = nn.Identity()

    def _check(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features must be a mapping of name -> Tensor (e.g. an OrderedDict from "
                f"FeaturePyramidNetwork), got {type(features).__name__}"
            )
        if len(features) != self.num_levels:
            raise ValueError(
                f"BalancedFeaturePyramid expects {self.num_levels} feature maps, "
                f"got {len(features)} (keys {list(features)})"
            )
        xs = list(features.values())
        for name, x in features.items():
            if x.dim() != 4:
                raise ValueError(f"feature {name!r} must be [N, C, H, W], got {tuple(x.shape)}")
            if x.shape[1] != self.in_channels:
                raise ValueError(
                    f"feature {name!r} has {x.shape[1]} channels, expected "
                    f"in_channels={self.in_channels}"
                )
            if x.shape[0] != xs[0].shape[0]:
                raise ValueError(
                    f"feature {name!r} has batch size {x.shape[0]}, expected {xs[0].shape[0]}"
                )
        return xs

    def forward_with_stages(self, features: Mapping[str, Tensor]) -> dict[str, object]:
        """Run the module and return every intermediate tensor (for plots and analysis).

        Returns a dict with
        ``"gathered"``: ``OrderedDict`` of each level rescaled to the refine size;
        ``"integrated"``: their mean :math:`B`, ``[N, C, H_r, W_r]``;
        ``"refined"``: :math:`B'`, same shape;
        ``"scattered"``: ``OrderedDict`` of :math:`B'` rescaled to each level;
        ``"outputs"``: ``OrderedDict`` of the outputs :math:`P_l` (what :meth:`forward` returns).
        """
        xs = self._check(features)
        names = list(features)
        gathered = bfp_gather(xs, self.refine_level)
        integrated = sum(gathered) / self.num_levels
        refined = self.refine(integrated)
        sizes = [(x.shape[-2], x.shape[-1]) for x in xs]
        scattered = bfp_scatter(refined, sizes, self.refine_level)
        outputs = OrderedDict((k, s + x) for k, s, x in zip(names, scattered, xs, strict=True))
        return {
            "gathered": OrderedDict(zip(names, gathered, strict=True)),
            "integrated": integrated,
            "refined": refined,
            "scattered": OrderedDict(zip(names, scattered, strict=True)),
            "outputs": outputs,
        }

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        return self.forward_with_stages(features)["outputs"]  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_levels={self.num_levels}, "
            f"refine_level={self.refine_level}, refine={self.refine_type!r}"
        )
