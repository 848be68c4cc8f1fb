"""The experiment runner: resumable grids and honest summaries."""

from __future__ import annotations

import json
import shutil

import pytest

from imbalance.lab import experiments

FAST = ["optim.iterations=2", "optim.warmup_iters=1", "data.min_size=64", "data.max_size=64",
        "model.fpn_channels=16", "run.checkpoint_every=1"]


def test_every_grid_configuration_has_its_config_files():
    assert experiments.grid_presets() == ("smoke", "cpu", "protocol", "protocol_scratch", "gpu")
    for grid in experiments.GRIDS.values():
        slugs = [e.slug for e in grid]
        assert len(set(slugs)) == len(slugs)
        for e in grid:
            for preset in experiments.grid_presets():
                assert e.config_file(preset).exists(), e.config_file(preset)


def test_grids_hold_the_issue_configurations():
    names = {g: [e.name for e in v] for g, v in experiments.GRIDS.items()}
    assert len(names["retinanet"]) == 11 and len(names["libra"]) == 6
    assert {"GHM-C + SL1 (level)", "GHM-C + SL1 (batch)", "GHM-C + GHM-R (batch)",
            "CE + OHEM"} <= set(names["retinanet"])
    assert {"+ IoU-balanced sampling (paper)", "+ IoU-balanced sampling (authors)"} <= set(
        names["libra"])
    assert len(names["outliers"]) == 2 * len(experiments.OUTLIER_FRACTIONS)
    assert any("outlier_fraction=0.4" in o for e in experiments.GRIDS["outliers"]
               for o in e.overrides)


def test_run_is_resumable_and_summarised(tmp_path, monkeypatch):
    out = tmp_path / "grid"
    only = ["fl_sl1", "ghm_c_sl1_level"]
    s = experiments.run_grid("retinanet", "smoke", [0, 1], out, only=only, overrides=FAST)
    assert list(s["rows"]) == ["FL + SL1", "GHM-C + SL1 (level)"]
    row = s["rows"]["FL + SL1"]
    assert row["seeds"] == [0, 1] and len(row["AP"]["values"]) == 2
    values = row["AP50"]["values"]
    mean = sum(values) / 2
    assert row["AP50"]["mean"] == pytest.approx(mean)
    assert row["AP50"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    prov = s["provenance"]
    assert prov["runs"] == 4 and prov["devices"] and prov["versions"]["torch"]
    assert json.loads((out / "summary.json").read_text())["rows"].keys() == s["rows"].keys()
    assert (out / "summary.csv").read_text().count("\n") == 3

    finals = {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/final.json")}
    assert len(finals) == 4
    s2 = experiments.run_grid("retinanet", "smoke", [0, 1], out, only=only, overrides=FAST)
    assert {p: p.stat().st_mtime_ns for p in finals} == finals  # nothing redone
    assert s2["rows"]["FL + SL1"]["AP"] == row["AP"]


def test_kept_runs_outlive_the_training_folder(tmp_path, monkeypatch):
    work, results = tmp_path / "work", tmp_path / "results"
    s = experiments.run_grid("retinanet", "smoke", [0], work, results=results, only=["fl_sl1"],
                             overrides=FAST)
    kept = results / "runs" / "fl_sl1" / "seed0"
    assert sorted(p.name for p in kept.iterdir()) == sorted(experiments.KEPT_FILES)
    assert (kept / "final.json").read_bytes() == (work / "fl_sl1" / "seed0" / "final.json"
                                                  ).read_bytes()
    assert (results / "summary.json").is_file() and not (work / "summary.json").exists()
    assert not list(results.rglob("*.pt"))  # small text files only: what gets committed

    def no_training(*args, **kwargs):
        raise AssertionError("a kept run was trained again")

    monkeypatch.setattr(experiments, "fit", no_training)
    shutil.rmtree(work)  # a new session: the checkpoints are gone, the committed files are not
    again = experiments.run_grid("retinanet", "smoke", [0], work, results=results,
                                 only=["fl_sl1"], overrides=FAST)
    assert again["rows"]["FL + SL1"]["AP"] == s["rows"]["FL + SL1"]["AP"]
    with pytest.raises(AssertionError, match="trained again"):  # seed 1 is not kept: it trains
        experiments.run_grid("retinanet", "smoke", [1], work, results=results, only=["fl_sl1"],
                             overrides=FAST)
    with pytest.raises(FileNotFoundError, match="no finished run"):
        experiments.keep_run(tmp_path / "nothing", tmp_path / "kept")
    # a kept run of another configuration is refused, not silently averaged in
    with pytest.raises(ValueError, match="another configuration.*optim.lr"):
        experiments.run_grid("retinanet", "smoke", [0], work, results=results, only=["fl_sl1"],
                             overrides=[*FAST, "optim.lr=0.5"])


def test_summarize_does_not_drop_the_rows_of_an_older_summary(tmp_path):
    out = tmp_path / "grid"
    _fake_run(out / "fl_sl1" / "seed0", 0.30, "2026-12-01T10:00:00+00:00")
    _fake_run(out / "ghm_c_sl1_level" / "seed0", 0.20, "2026-12-01T11:00:00+00:00")
    experiments.summarize(out, grid="retinanet", preset="cpu", seeds=[0])
    shutil.rmtree(out / "runs" / "ghm_c_sl1_level")
    before = (out / "summary.json").read_text()
    with pytest.raises(ValueError, match="GHM-C \\+ SL1"):
        experiments.summarize(out)
    assert (out / "summary.json").read_text() == before
    assert list(experiments.summarize(out, force=True)["rows"]) == ["FL + SL1"]


def test_identical_runs_of_another_grid_are_copied_not_trained(tmp_path, monkeypatch):
    retina = tmp_path / "retinanet"
    experiments.run_grid("retinanet", "smoke", [0], retina, only=["fl_sl1"], overrides=FAST)
    source = retina / "runs" / "fl_sl1" / "seed0"
    def no_training(*args, **kwargs):
        raise AssertionError("a run that was finished elsewhere was trained again")

    monkeypatch.setattr(experiments, "fit", no_training)
    out = tmp_path / "outliers"
    s = experiments.run_grid("outliers", "smoke", [0], out, only=["fl_outliers_0"],
                             overrides=FAST, reuse=[retina])
    copied = out / "runs" / "fl_outliers_0" / "seed0"
    assert (copied / "final.json").read_bytes() == (source / "final.json").read_bytes()
    assert (copied / "metrics.jsonl").read_bytes() == (source / "metrics.jsonl").read_bytes()
    ap = json.loads((source / "final.json").read_text())["ap"]["AP"]
    assert s["rows"]["FL, outliers 0%"]["AP"]["values"] == [ap]
    # another outlier fraction or seed is another run: nothing to copy, so it would train
    base = experiments.GRIDS["outliers"][2]
    assert base.slug == "fl_outliers_10"
    other = experiments.load_config(base.config_file("smoke"),
                                    [*base.overrides, *FAST, "run.seed=0"])
    assert experiments.find_same_run(other, [retina]) is None
    with pytest.raises(AssertionError, match="trained again"):
        experiments.run_grid("outliers", "smoke", [1], out, only=["fl_outliers_0"],
                             overrides=FAST, reuse=[retina])


def test_bad_requests_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown grid"):
        experiments.run_grid("ssd", "cpu", [0], tmp_path)
    with pytest.raises(ValueError, match="preset"):
        experiments.run_grid("libra", "tpu", [0], tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        experiments.run_grid("libra", "cpu", [1, 1], tmp_path)
    with pytest.raises(ValueError, match="unknown configuration"):
        experiments.run_grid("libra", "smoke", [0], tmp_path, only=["yolo"])
    with pytest.raises(ValueError, match="overrides go before --only"):
        experiments.run_grid("libra", "smoke", [0], tmp_path, only=["run.threads=1"])
    assert not any(tmp_path.iterdir())
    assert experiments.main(["run", "--grid", "libra", "--preset", "smoke", "--seeds", "-1",
                             "--out", str(tmp_path / "x")]) == 2


def _fake_run(folder, ap: float, date: str, commit: str = "abc1234def5678") -> None:
    folder = folder.parent.parent / "runs" / folder.parent.name / folder.name  # the kept layout
    folder.mkdir(parents=True)
    final = {"ap": {m: ap / (i + 1) for i, m in enumerate(experiments.METRICS)},
             "git_commit": commit, "git_dirty": False, "device": "cpu (2 threads)",
             "versions": {"torch": "2.x", "torchvision": "0.y"}, "date": date,
             "wall_time_s": 1800.0,
             "command": "/opt/venv/bin/python3 -m imbalance.experiments run --grid retinanet"}
    (folder / "final.json").write_text(json.dumps(final))


def test_summaries_read_back_as_tables_with_their_provenance(tmp_path):
    out = tmp_path / "grid"
    _fake_run(out / "fl_sl1" / "seed0", 0.30, "2026-12-01T10:00:00+00:00")
    _fake_run(out / "fl_sl1" / "seed1", 0.34, "2026-12-02T10:00:00+00:00")
    _fake_run(out / "ghm_c_sl1_level" / "seed0", 0.20, "2026-12-01T11:00:00+00:00")
    experiments.summarize(out, grid="retinanet", preset="cpu", seeds=[0, 1])
    s = experiments.read_summary(out)
    assert s == experiments.read_summary(out / "summary.json")
    assert s["missing"] == ["ghm_c_sl1_level/seed1"]
    table = experiments.summary_table(s, ["AP", "AP50"])
    assert list(table) == ["FL + SL1", "GHM-C + SL1 (level)"]
    mean, std = table["FL + SL1"]["AP"]
    assert mean == pytest.approx(32.0) and std == pytest.approx(100 * 0.04 / 2 ** 0.5)
    assert table["GHM-C + SL1 (level)"]["AP50"] == pytest.approx((10.0, 0.0))
    text = experiments.describe_provenance(s)
    assert "3 runs" in text and "1.5 h" in text and "abc1234def" in text
    assert "2026-12-01 to 2026-12-02" in text and "torch 2.x" in text
    command = "python -m imbalance.experiments run --grid retinanet"
    assert s["provenance"]["run_commands"] == [command]
    assert text.endswith(f"Command(s): {command}")
    with pytest.raises(FileNotFoundError, match="imbalance.lab.experiments run"):
        experiments.read_summary(tmp_path / "nothing")
    (tmp_path / "bad.json").write_text(json.dumps({"grid": "retinanet"}))
    with pytest.raises(ValueError, match="not a grid summary"):
        experiments.read_summary(tmp_path / "bad.json")


def test_compare_tells_a_difference_from_seed_noise(tmp_path):
    out = tmp_path / "grid"
    for seed, (fl, ghm, ce) in enumerate([(0.30, 0.31, 0.10), (0.32, 0.29, 0.11),
                                          (0.34, 0.33, 0.12)]):
        _fake_run(out / "fl_sl1" / f"seed{seed}", fl, "2026-12-01T10:00:00+00:00")
        _fake_run(out / "ghm_c_sl1_level" / f"seed{seed}", ghm, "2026-12-01T10:00:00+00:00")
        _fake_run(out / "ce_prior_init_sl1" / f"seed{seed}", ce, "2026-12-01T10:00:00+00:00")
    s = experiments.summarize(out, grid="retinanet", preset="cpu", seeds=[0, 1, 2])
    c = experiments.compare(s, "FL + SL1", "CE (prior init) + SL1")
    assert c.difference == pytest.approx(0.21)
    assert c.stderr == pytest.approx((0.02 ** 2 / 3 + 0.01 ** 2 / 3) ** 0.5)
    # Welch: nu = s^4 / ((0.02^2/3)^2 / 2 + (0.01^2/3)^2 / 2) = 2.94..., t_0.975 from a table
    assert c.df == pytest.approx(2.9412, rel=1e-4)
    assert c.verdict == "higher" and c.low > 0
    assert str(c).startswith("FL + SL1 vs CE (prior init) + SL1: AP +21.0 points, 95 % interval")
    near = experiments.compare(s, "GHM-C + SL1 (level)", "FL + SL1")
    assert near.difference == pytest.approx(-0.01) and near.verdict == "inconclusive"
    assert experiments.compare(s, "CE (prior init) + SL1", "FL + SL1").verdict == "lower"
    with pytest.raises(KeyError, match="SSD"):
        experiments.compare(s, "SSD", "FL + SL1")
    # a summary keeps the seeds it had: summarising seed 0 again still covers 0, 1 and 2
    assert experiments.summarize(out, seeds=[0])["seeds"] == [0, 1, 2]
    one = experiments.summarize(tmp_path / "one", grid="retinanet", preset="cpu", seeds=[0])
    _fake_run(tmp_path / "one" / "fl_sl1" / "seed0", 0.3, "2026-12-01T10:00:00+00:00")
    _fake_run(tmp_path / "one" / "ghm_c_sl1_level" / "seed0", 0.3, "2026-12-01T10:00:00+00:00")
    one = experiments.summarize(tmp_path / "one", seeds=[0])
    with pytest.raises(ValueError, match="two seeds"):
        experiments.compare(one, "FL + SL1", "GHM-C + SL1 (level)")


def test_overrides_written_after_only_or_reuse_still_apply(monkeypatch, tmp_path):
    seen = {}

    def fake_run_grid(grid, preset, seeds, out, *, results, only, overrides, reuse, schedules,
                      lr_factors):
        assert (schedules, lr_factors) == ([1.0], [1.0])
        seen.update(only=only, overrides=list(overrides), reuse=list(reuse))
        return {"rows": {}}

    monkeypatch.setattr(experiments, "run_grid", fake_run_grid)
    argv = ["run", "--grid", "outliers", "--preset", "smoke", "--out", str(tmp_path),
            "optim.lr=0.02", "--reuse", "results/retinanet", "run.threads=1",
            "--only", "fl_outliers_0", "data.knobs.noise=0.1"]
    assert experiments.main(argv) == 0
    assert seen == {"only": ["fl_outliers_0"], "reuse": ["results/retinanet"],
                    "overrides": ["optim.lr=0.02", "run.threads=1", "data.knobs.noise=0.1"]}
    assert experiments.main([*argv[:-3], "--only", "run.threads=1"]) == 2  # names no configuration


def test_variants_name_and_override_the_ladder_and_the_sweep():
    base = [experiments.Experiment("FL + SL1", "retinanet_focal", ("model.cls_loss=focal",))]
    v = experiments.variants(base, schedules=(1, 0.5), lr_factors=(1, 2))
    assert [e.name for e in v] == ["FL + SL1", "FL + SL1 [lr 2x]", "FL + SL1 [schedule 0.5x]",
                                   "FL + SL1 [schedule 0.5x, lr 2x]"]
    assert v[3].overrides == ("model.cls_loss=focal", "optim.schedule=0.5", "optim.lr_factor=2")
    assert len({e.slug for e in v}) == 4
    for bad in ((), (1, 1), (0,), (float("nan"),)):
        with pytest.raises(ValueError, match="schedules"):
            experiments.variants(base, schedules=bad)
    names = [e.name for e in experiments.GRIDS["pilot"]]
    assert names[:2] == ["FL + SL1", "Faster R-CNN (beta 1)"]
    assert {"GHM-C + SL1 (level)", "GHM-C + SL1 (batch)", "FL + GHM-R (level)",
            "FL + GHM-R (batch)"} <= set(names)


def test_the_ladder_reads_schedules_and_intervals_from_the_kept_runs(tmp_path):
    out = tmp_path / "ladder"
    aps = {"fl_sl1": [0.50, 0.52, 0.54], "fl_sl1_schedule_2x": [0.55, 0.56, 0.57]}
    for slug, values in aps.items():
        for seed, ap in enumerate(values):
            _fake_run(out / slug / f"seed{seed}", ap, "2026-12-01T10:00:00+00:00")
    s = experiments.summarize(out, grid="pilot", preset="protocol", seeds=[0, 1, 2],
                              schedules=[1, 2])
    assert s["rows"]["FL + SL1 [schedule 2x]"]["schedule"] == 2.0
    assert s["rows"]["FL + SL1"]["configuration"] == "FL + SL1"
    steps = experiments.ladder(s)["FL + SL1"]
    assert list(steps) == [1.0, 2.0]
    mean, low, high = steps[2.0]
    assert mean == pytest.approx(0.56) and low < 0.55 and high > 0.57
    assert experiments.compare(s, "FL + SL1 [schedule 2x]", "FL + SL1").difference == \
        pytest.approx(0.04)


def test_learning_curves_average_the_seeds_evaluations(tmp_path):
    results = tmp_path / "res"
    for seed, values in enumerate([(0.2, 0.4), (0.3, 0.5), (0.25, 0.45)]):
        folder = results / "runs" / "fl_sl1_lr_2x" / f"seed{seed}"
        folder.mkdir(parents=True)
        records = [{"step": 10, "loss": 1.0}]
        records += [{"step": 100 * (i + 1), "AP": v, "eval": {"AP": v}}
                    for i, v in enumerate(values)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    curve = experiments.learning_curves(results, "FL + SL1 [lr 2x]")
    assert list(curve) == [100, 200]
    mean, low, high = curve[200]
    assert mean == pytest.approx(0.45) and low < 0.4 < 0.5 < high
    with pytest.raises(FileNotFoundError, match="no kept runs"):
        experiments.learning_curves(results, "GHM-C + SL1 (level)")


def test_a_kept_run_made_with_other_pretrained_weights_is_another_run(tmp_path):
    from imbalance.models.backbones import file_sha256, resnet, save_backbone_weights
    from imbalance.train import load_config

    weights = save_backbone_weights(tmp_path / "w.pt", resnet("resnet18", "gn", 8),
                                    {"backbone": "resnet18", "width": 8, "norm": "gn"}, {})
    config = load_config(None, ["preset=smoke", "model.backbone_width=8",
                                f"model.pretrained={weights}"])
    run = tmp_path / "kept"
    run.mkdir()
    (run / "config.yaml").write_text(config.to_yaml(), encoding="utf-8")
    (run / "final.json").write_text(json.dumps({"pretrained_sha256": file_sha256(weights)}))
    assert experiments._differences(run, config) == []
    (run / "final.json").write_text(json.dumps({"pretrained_sha256": "0" * 64}))
    assert experiments._differences(run, config) == [
        "model.pretrained (the weight file has changed)"]


def test_kept_run_takes_an_experiment_or_a_summary_name(tmp_path):
    experiment = experiments.Experiment("FL + SL1 [lr 2x]", "retinanet_focal")
    assert (experiments.kept_run(tmp_path, experiment, 3)
            == experiments.kept_run(tmp_path, "FL + SL1 [lr 2x]", 3)
            == tmp_path / "runs" / "fl_sl1_lr_2x" / "seed3")
    run = experiments.kept_run(tmp_path, experiment, 0)
    assert experiments.read_final(run) is None  # not finished
    run.mkdir(parents=True)
    (run / "final.json").write_text('{"wall_time_s": 12.5}')
    assert experiments.read_final(run) == {"wall_time_s": 12.5}
