"""Necks: modules between a backbone's feature pyramid and the detection heads.

:class:`BalancedFeaturePyramid` is Libra R-CNN's balanced feature pyramid; it composes with
the ``OrderedDict`` that :class:`torchvision.ops.FeaturePyramidNetwork` returns.
:class:`NonLocal2d` is its default refinement (an embedded-Gaussian non-local block).
"""

from imbalance.necks.bfp import BalancedFeaturePyramid, NonLocal2d, bfp_gather, bfp_scatter

__all__ = ["BalancedFeaturePyramid", "NonLocal2d", "bfp_gather", "bfp_scatter"]
