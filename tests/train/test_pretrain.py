"""The backbone pretraining: its metric, its schedule, its checks, and a run end to end."""

from __future__ import annotations

import math

import pytest
import torch

from imbalance.models.backbones import load_backbone_weights, resnet_fpn
from imbalance.train.pretrain import (
    PretrainConfig,
    average_precision,
    learning_rate,
    main,
    multi_label_set,
    pretrain,
    synthetic_images,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_average_precision_matches_a_hand_computation() -> None:
    # class 0: ranking 1, 0, 1, 0 -> precisions at the hits 1/1 and 2/3 -> AP 5/6
    # class 1: ranking 0, 1, 1 (the tie keeps the input order) -> 1/2, 2/3 -> AP 7/12
    # class 2: no positive image, skipped
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.7, 0.2], [0.7, 0.7, 0.1], [0.1, 0.9, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert average_precision(scores, labels) == pytest.approx((5 / 6 + 7 / 12) / 2)
    assert math.isnan(average_precision(scores, torch.zeros_like(labels)))


def test_learning_rate_warms_up_linearly_and_decays_to_zero() -> None:
    config = PretrainConfig(steps=110, warmup=10, lr=1.0)
    assert learning_rate(config, 0) == pytest.approx(0.1)
    assert learning_rate(config, 9) == pytest.approx(1.0)
    assert learning_rate(config, 10) == pytest.approx(1.0)
    assert learning_rate(config, 60) == pytest.approx(0.5)
    assert learning_rate(config, 110) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("field", "value"), [("width", 0), ("steps", 0), ("lr", math.nan),
                                               ("warmup", 5), ("backbone", "vgg"),
                                               ("norm", "ln"), ("batch_size", True)])
def test_bad_settings_are_refused_by_name(field: str, value: object) -> None:
    config = PretrainConfig(**{"steps": 5, "warmup": 1, field: value})
    with pytest.raises(ValueError, match=field):
        config.check()


def test_a_short_pretraining_writes_weights_a_detector_loads(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the synthetic cache is under the working directory
    config = PretrainConfig(width=8, image_size=64, train_images=24, val_images=8, steps=4,
                            batch_size=4, warmup=1, seed=7)
    root = synthetic_images(config, progress=False)
    images, labels = multi_label_set(root, "train")
    assert images.shape == (24, 3, 64, 64) and images.dtype == torch.uint8
    assert labels.shape == (24, 6) and set(labels.unique().tolist()) <= {0.0, 1.0}
    provenance = pretrain(config, tmp_path / "w.pt", progress=False)
    assert provenance["config"]["steps"] == 4 and provenance["data"]["generator_seed"] == 7
    assert 0 <= provenance["val_mean_ap"] <= 1 and math.isfinite(provenance["final_train_loss"])
    blob = load_backbone_weights(tmp_path / "w.pt")
    assert blob["architecture"] == {"backbone": "resnet18", "width": 8, "norm": "gn"}
    assert blob["provenance"]["git"] is not None
    fpn = resnet_fpn("resnet18", norm="gn", fpn_channels=8, width=8, weights=tmp_path / "w.pt")
    torch.testing.assert_close(fpn.body.conv1.weight, blob["state_dict"]["conv1.weight"])
    # the command line reports a bad setting as an error, exit status 2
    assert main(["--out", str(tmp_path / "x.pt"), "--steps", "0"]) == 2
