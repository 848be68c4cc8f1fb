r"""Measures of how a neck mixes information across the levels of a feature pyramid.

They take the stages that :meth:`imbalance.necks.BalancedFeaturePyramid.forward_with_stages`
returns (or any pyramid ``[N, C, H_l, W_l]``, finest first) and answer three questions:

* :func:`level_correlation`: how alike are the levels, once brought to one grid?
* :func:`integration_shares`: how much does each input level contribute to the balanced
  semantic feature :math:`B = \frac{1}{L}\sum_l G_l`?
* :func:`residual_share`: how much of each output level :math:`P_l = S_l + C_l` is the added
  (rescaled, refined) balanced feature :math:`S_l` rather than the input :math:`C_l`?
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from imbalance.necks.bfp import bfp_gather


def level_correlation(features: Sequence[Tensor], refine_level: int) -> Tensor:
    r"""Pearson correlation between every pair of levels, on the refine level's grid.

    Each level is first brought to the size of ``features[refine_level]`` exactly as the
    Balanced Feature Pyramid gathers it (:func:`imbalance.necks.bfp_gather`: adaptive max
    pooling for finer levels, nearest interpolation otherwise), giving :math:`G_l`. Each
    channel of each image is then centred over the positions,
    :math:`\tilde G_{l,nci} = G_{l,nci} - \frac{1}{H_r W_r}\sum_j G_{l,ncj}`, and

    .. math::
        \rho_{lm} = \frac{\sum_{n,c,i} \tilde G_{l,nci}\, \tilde G_{m,nci}}
                         {\lVert \tilde G_l \rVert_F \, \lVert \tilde G_m \rVert_F}.

    Centring per channel measures whether the levels vary *alike over the image*; a channel
    offset shared by two levels does not count.

    Args:
        features: ``L`` tensors ``[N, C, H_l, W_l]`` (the same ``N`` and ``C``), finest first.
        refine_level: index of the level whose grid is used.

    Returns:
        ``Tensor[L, L]`` float32, symmetric, ones on the diagonal (0 for a constant level).
    """
    if not 0 <= refine_level < len(features):
        raise ValueError(f"refine_level must be in [0, {len(features) - 1}], got {refine_level}")
    gathered = bfp_gather([f.detach().float() for f in features], refine_level)
    centred = torch.stack([g - g.mean(dim=(-2, -1), keepdim=True) for g in gathered]).flatten(1)
    norms = centred.norm(dim=1)
    unit = centred / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    corr = unit @ unit.T
    corr = (corr + corr.T) / 2  # exactly symmetric, not just up to rounding
    corr.diagonal().copy_((norms > 0).float())
    return corr


def integration_shares(gathered: Sequence[Tensor]) -> Tensor:
    r"""Each input level's share of the balanced semantic feature :math:`B`.

    With :math:`G_m` the gathered levels and :math:`B = \frac{1}{L}\sum_m G_m`,

    .. math::
        q_m = \frac{\langle G_m / L,\; B \rangle}{\lVert B \rVert_F^2},
        \qquad \sum_m q_m = 1,

    the projection of level :math:`m`'s term on :math:`B`: an exact decomposition of
    :math:`\lVert B \rVert_F^2` (a share is negative when a level points against the rest).

    Args:
        gathered: ``L`` tensors of one shape ``[N, C, H_r, W_r]``, e.g. the ``"gathered"`` stage.

    Returns:
        ``Tensor[L]`` float32 summing to 1 (all zeros when :math:`B = 0`).
    """
    terms = torch.stack([g.detach().float() for g in gathered]) / len(gathered)
    bsf = terms.sum(0)
    energy = bsf.pow(2).sum()
    if energy == 0:
        return torch.zeros(len(gathered))
    return (terms * bsf).flatten(1).sum(1) / energy


def residual_share(inputs: Sequence[Tensor], added: Sequence[Tensor]) -> Tensor:
    r"""The share of each output level's energy that the Balanced Feature Pyramid added.

    With inputs :math:`C_l` and added residuals :math:`S_l` (the ``"scattered"`` stage),
    :math:`P_l = S_l + C_l` and

    .. math::
        s_l = \frac{\lVert S_l \rVert_F^2}{\lVert S_l \rVert_F^2 + \lVert C_l \rVert_F^2}
        \in [0, 1],

    0 when nothing was added, 1/2 when the two parts are equally strong.

    Args:
        inputs: ``L`` tensors ``[N, C, H_l, W_l]``.
        added: ``L`` tensors of the same shapes.

    Returns:
        ``Tensor[L]`` float32 (0 where both parts are zero).
    """
    if len(inputs) != len(added):
        raise ValueError(f"got {len(inputs)} inputs and {len(added)} residuals")
    shares = []
    for c, s in zip(inputs, added, strict=True):
        if c.shape != s.shape:
            raise ValueError(f"input {tuple(c.shape)} and residual {tuple(s.shape)} differ")
        e_s, e_c = s.detach().float().pow(2).sum(), c.detach().float().pow(2).sum()
        shares.append(e_s / (e_s + e_c) if e_s + e_c > 0 else e_s * 0)
    return torch.stack(shares)
