"""The losses the book teaches, functional first (like ``torchvision.ops``).

Classification (logits and one-vs-all binary targets of the same shape):
:func:`binary_cross_entropy`, :func:`alpha_balanced_bce`, :func:`sigmoid_focal_loss`,
:func:`ghm_c_loss` and its stateful module :class:`GHMC`.

Box regression (predicted and target deltas of the same shape): :func:`smooth_l1_loss`,
:func:`asl1_loss`, :func:`ghm_r_loss` and :class:`GHMR`, :func:`balanced_l1_loss`.

The modules :mod:`.cross_entropy`, :mod:`.focal`, :mod:`.ghm` and :mod:`.ghm_r` are the papers'
equations; when only the logits need a gradient (a training step), they hand over to the
private :mod:`._fused`, which computes the same values with a closed-form backward.
:mod:`imbalance.losses.analysis` measures gradient norms, densities and shares.
"""

from imbalance.losses import analysis
from imbalance.losses.balanced_l1 import balanced_l1_b, balanced_l1_loss
from imbalance.losses.cross_entropy import alpha_balanced_bce, binary_cross_entropy
from imbalance.losses.focal import sigmoid_focal_loss
from imbalance.losses.ghm import GHMC, ghm_c_loss, ghm_c_weights
from imbalance.losses.ghm_r import GHMR, ghm_r_loss
from imbalance.losses.smooth_l1 import asl1_loss, smooth_l1_loss

__all__ = [
    "GHMC",
    "GHMR",
    "alpha_balanced_bce",
    "analysis",
    "asl1_loss",
    "balanced_l1_b",
    "balanced_l1_loss",
    "binary_cross_entropy",
    "ghm_c_loss",
    "ghm_c_weights",
    "ghm_r_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
]
