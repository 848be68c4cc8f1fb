"""One default per loss parameter: the detectors read the loss functions' own defaults."""

from __future__ import annotations

import pytest

from imbalance.losses import GHMC, GHMR, balanced_l1_loss, sigmoid_focal_loss
from imbalance.models.libra_rcnn import BALANCED_L1_DEFAULTS
from imbalance.models.loss_defaults import signature_defaults
from imbalance.models.retinanet import BOX_DEFAULTS, CLS_DEFAULTS


def test_signature_defaults_reads_functions_and_module_classes() -> None:
    assert signature_defaults(sigmoid_focal_loss, "alpha", "gamma") == {"alpha": 0.25,
                                                                         "gamma": 2.0}
    assert signature_defaults(GHMR, "mu") == {"mu": 0.02}
    with pytest.raises(ValueError, match="no default for \\['inputs'\\]"):
        signature_defaults(sigmoid_focal_loss, "inputs")
    with pytest.raises(ValueError, match="delta"):
        signature_defaults(balanced_l1_loss, "delta")


def test_detectors_take_the_loss_defaults_except_where_the_configs_differ() -> None:
    focal = signature_defaults(sigmoid_focal_loss, "alpha", "gamma")
    assert {k: CLS_DEFAULTS["focal"][k] for k in focal} == focal
    assert CLS_DEFAULTS["ghm_c"]["bins"] == signature_defaults(GHMC, "bins")["bins"]
    assert BALANCED_L1_DEFAULTS == signature_defaults(balanced_l1_loss, "alpha", "gamma", "beta")
    # RetinaNet's released configs use beta 0.11 for its box losses; the function's is Libra's 1
    assert BOX_DEFAULTS["balanced_l1"]["beta"] == 0.11 != BALANCED_L1_DEFAULTS["beta"]
