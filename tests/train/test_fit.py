"""Smoke training: every loss of RetinaNet and Libra R-CNN on and off lower the loss; four images
trained to overfit lift AP50 above a floor; a run's files; a non-finite loss stops the run."""

from __future__ import annotations

import json
from statistics import fmean
from typing import Any

import pytest
import torch
import yaml

import imbalance.train.loop as loop
from imbalance.files import json_text
from imbalance.files import read_jsonl as read_metrics
from imbalance.models import BOX_LOSSES, CLS_LOSSES, build_model
from imbalance.plotting import plot_training_curves
from imbalance.train import FitResult, NonFiniteLossError, TrainConfig, fit
from imbalance.train.__main__ import main
from imbalance.train.config import validate
from imbalance.train.metrics import loss_terms

# Measured: 4 images, 40 steps give AP50 = 1.0 (AP 0.83); the untrained model scores 0.0.
AP50_FLOOR = 0.5
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def assert_loss_falls(metrics: list[dict[str, Any]], factor: float = 0.9) -> None:
    """The mean of the last quarter of the logged losses is below ``factor`` times the first's
    (measured: 0.5 for most losses, 0.76 for GHM-R)."""
    values = [r["loss"] for r in metrics if "loss" in r]
    k = max(2, len(values) // 4)
    first, last = fmean(values[:k]), fmean(values[-k:])
    assert last < factor * first, f"loss did not fall: {first:.4f} -> {last:.4f} ({values})"


def assert_finished(result: FitResult) -> None:
    final = json.loads((result.out / "final.json").read_text())
    assert set(METRICS) <= set(final["ap"]) and "per_class" in final["ap"]
    assert 0.0 <= final["ap"]["AP"] <= 1.0
    assert all(final["ap"][m] is None or 0.0 <= final["ap"][m] <= 1.0 for m in METRICS)
    assert json.loads(json_text(result.ap)) == final["ap"]  # NaN in memory, null on disk


@pytest.fixture(scope="module")
def focal_run(smoke_config, tmp_path_factory) -> FitResult:
    """The smoke run of RetinaNet with focal loss and smooth L1, shared by several tests."""
    return fit(smoke_config(), out=tmp_path_factory.mktemp("focal"))


RETINANET = [(c, "smooth_l1") for c in CLS_LOSSES if c != "focal"]
RETINANET += [("focal", b) for b in BOX_LOSSES if b != "smooth_l1"]


def test_focal_smooth_l1_smoke_training_lowers_the_loss(focal_run):
    assert_loss_falls(focal_run.metrics)
    assert_finished(focal_run)


@pytest.mark.parametrize(("cls_loss", "box_loss"), RETINANET)
def test_retinanet_smoke_training_lowers_the_loss(smoke_config, tmp_path, cls_loss, box_loss):
    # GHM-R's box term is a histogram-weighted mean that moves with the histogram: over the
    # smoke run's 15 steps it can end on a rise (the total's last quarter at 1.08 times its
    # first on one CPU, 0.83 on another); over 30 steps the total falls to about half
    steps = ["optim.iterations=30"] if box_loss == "ghm_r" else []
    result = fit(smoke_config(f"model.cls_loss={cls_loss}", f"model.box_loss={box_loss}",
                              *steps), out=tmp_path)
    assert {"classification", "bbox_regression"} <= set(result.metrics[0])
    assert_loss_falls(result.metrics)
    assert_finished(result)


@pytest.mark.parametrize("on", [True, False], ids=["libra", "faster_rcnn"])
def test_libra_rcnn_smoke_training_lowers_the_loss(smoke_config, tmp_path, on):
    parts = [f"model.{p}={str(on).lower()}" for p in ("iou_balanced", "bfp", "balanced_l1")]
    result = fit(smoke_config(*parts, config="libra_rcnn_smoke.yaml"), out=tmp_path)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness"} <= set(result.metrics[0])
    assert_loss_falls(result.metrics)
    assert_finished(result)


def test_overfitting_four_images_lifts_ap50_above_the_floor(smoke_config, tmp_path):
    four = ["data.train_split=val", "data.max_train_images=4", "data.max_val_images=4",
            "data.batch_size=4", "data.hflip=0", "run.log_every=10"]
    trained = fit(smoke_config(*four, "optim.iterations=40", "optim.warmup_iters=5"),
                  out=tmp_path / "trained")
    untrained = fit(smoke_config(*four, "optim.iterations=1", "optim.lr=1e-9"),
                    out=tmp_path / "untrained")
    assert untrained.ap["AP50"] < AP50_FLOOR < trained.ap["AP50"]


def test_a_run_writes_its_files_and_where_its_result_comes_from(focal_run):
    out = focal_run.out
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "final.json",
                                               "checkpoints", ".lock"}
    assert (out / ".lock").read_text() == ""  # released: it names no holder
    assert TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text())) \
        == focal_run.config
    final = focal_run.final
    assert final == json.loads((out / "final.json").read_text())
    assert final["config"] == focal_run.config.to_dict()
    for key in ("git_commit", "git_dirty", "device", "world_size", "versions", "wall_time_s",
                "images_per_s", "date", "command"):
        assert key in final, key
    assert final["world_size"] == 1 and final["images_per_s"] > 0
    assert set(final["versions"]) >= {"python", "torch", "torchvision", "numpy", "imbalance"}
    assert final["git_commit"] is None or len(final["git_commit"]) == 40

    records = read_metrics(out / "metrics.jsonl")
    assert records == focal_run.metrics
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 16))
    assert {"epoch", "lr", "images_per_s", "time", "iteration"} <= set(train[0])
    assert records[-1]["step"] == 15
    assert records[-1]["eval"] == json.loads(json_text(focal_run.ap))
    plot_training_curves(records, keys=("loss", "classification"))
    plot_training_curves(records, keys=("AP50",))

    state = torch.load(focal_run.checkpoint, weights_only=False)
    assert state["step"] == 15
    assert not focal_run.model.training
    for name, tensor in focal_run.model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name


def test_resuming_a_finished_run_reads_it_back(focal_run, monkeypatch):
    monkeypatch.setattr(loop.Trainer, "_train", lambda self: pytest.fail("trained again"))
    again = fit(focal_run.config, out=focal_run.out, resume=True)
    assert json_text(again.ap) == json_text(focal_run.ap) and again.metrics == focal_run.metrics
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, focal_run.model.state_dict()[name]), name


def _poisoned(at_call: int, term: str = "bbox_regression"):
    """``build_model`` whose model returns a NaN ``term`` at its ``at_call``-th training call."""
    def build(name, num_classes, **kwargs):
        model = build_model(name, num_classes, **kwargs)
        forward, calls = model.forward, [0]

        def poisoned(images, targets=None):
            out = forward(images, targets)
            if model.training:
                calls[0] += 1
                if calls[0] == at_call:
                    out[term] = out[term] * float("nan")
            return out

        model.forward = poisoned
        return model

    return build


def test_a_non_finite_loss_stops_the_run_naming_step_and_term(smoke_config, tmp_path,
                                                              monkeypatch, capsys):
    monkeypatch.setattr(loop, "build_model", _poisoned(5))
    config = smoke_config("run.checkpoint_every=2", "optim.iterations=10")
    with pytest.raises(NonFiniteLossError) as info:
        fit(config, out=tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    assert str(info.value) == (f"step 5: loss term 'bbox_regression' is nan; last good "
                               f"checkpoint: {last} (step 4)")
    state = torch.load(last, weights_only=False)
    assert state["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / "final.json").exists()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]

    monkeypatch.setattr(loop, "build_model", _poisoned(2, "classification"))
    config_file = tmp_path / "c.yaml"
    config_file.write_text(config.to_yaml())
    status = main(["--config", str(config_file), "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert err.strip() == ("error: step 2: loss term 'classification' is nan; no checkpoint "
                           "was written yet")


def test_the_learning_rate_scales_with_the_batch_and_the_schedule_with_its_factor(
        smoke_config, tmp_path):
    """The authors' 0.01 per 16 images for RetinaNet gives 0.00125 for 2 images, times the
    factor; the schedule multiplies the steps; GHM runs log their bins and positive share."""
    config = smoke_config("optim.lr=null", "optim.lr_factor=2", "optim.schedule=2",
                          "optim.iterations=3", "optim.milestones=[]", "optim.warmup_iters=0",
                          "model.cls_loss=ghm_c")
    result = fit(config, out=tmp_path)
    assert result.final["steps"] == 6 and result.final["global_batch"] == 2
    assert result.final["lr"] == pytest.approx(0.01 * 2 / 16 * 2)
    train = [r for r in result.metrics if "loss" in r]
    assert len(train) == 6 and all(r["lr"] == pytest.approx(0.0025) for r in train)
    stats = [r["statistics"] for r in train]
    assert all(1 <= s["ghm_c_bins"] <= 30 and 0 < s["ghm_c_positive_grad"] < 1 for s in stats)
    assert set(loss_terms(train[0])) == {"classification", "bbox_regression"}
    assert "bootstrap" not in result.ap  # run.eval_bootstrap is 0
    assert all(r["loss"] == pytest.approx(r["classification"] + r["bbox_regression"])
               for r in train)


def test_the_final_evaluation_measures_its_noise_by_bootstrap(smoke_config, tmp_path):
    result = fit(smoke_config("optim.iterations=4", "run.eval_bootstrap=20",
                              "data.max_val_images=8", "model.options.score_thresh=0.0"),
                 out=tmp_path)
    b = result.ap["bootstrap"]
    assert b["resamples"] == 20 and b["AP"] == pytest.approx(result.ap["AP"], abs=1e-9)
    assert b["low"] <= b["high"] and b["std"] >= 0
    assert json.loads((tmp_path / "final.json").read_text())["ap"]["bootstrap"] == b


def test_a_checkpoint_with_non_finite_state_is_never_written_nor_called_good(
        smoke_config, tmp_path, monkeypatch):
    """Issue 13, item 3: NaN settings ran until a non-finite loss and then called a checkpoint
    with 106 NaN tensors "the last good one"."""
    real = loop._optimizer

    def poisoned(o, lr, params):
        opt = real(o, lr, params)
        calls = []

        def hook(optimizer, args, kwargs):
            calls.append(1)
            if len(calls) == 4:  # after the 4th step its momentum holds a NaN
                state = optimizer.state[optimizer.param_groups[0]["params"][0]]
                state["momentum_buffer"].view(-1)[0] = float("nan")

        opt.register_step_post_hook(hook)
        return opt

    monkeypatch.setattr(loop, "_optimizer", poisoned)
    with pytest.raises(NonFiniteLossError) as info:
        fit(smoke_config("run.checkpoint_every=2", "optim.iterations=10"), out=tmp_path)
    assert "not finite" in str(info.value) and "no checkpoint was written" in str(info.value)
    assert "last good checkpoint" in str(info.value) and "(step 2)" in str(info.value)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 2


@pytest.mark.parametrize("override", ["optim.momentum=.nan", "optim.lr=.inf",
                                      "optim.weight_decay=.nan", "optim.grad_clip=.nan",
                                      "run.eval_score_threshold=.nan", "optim.lr_factor=.inf"])
def test_non_finite_settings_are_refused(smoke_config, override):
    from imbalance.train import ConfigError

    with pytest.raises(ConfigError, match=f"{override.split('=')[0]}.*finite"):
        smoke_config(override)
    config = smoke_config()
    section, key = override.split("=")[0].split(".")
    setattr(getattr(config, section), key, float("nan"))
    with pytest.raises(ConfigError, match="finite"):
        validate(config)
