"""The campaign: every grid run in order, shared by workers, resumable from the kept runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from imbalance.lab import campaign, experiments
from imbalance.lab.campaign import Job, Plan
from imbalance.train.weights import load_weights

FAST = ["optim.iterations=2", "optim.warmup_iters=1", "data.min_size=64", "data.max_size=64",
        "model.fpn_channels=16", "run.checkpoint_every=1"]


def _keep(folder, grid, configuration, schedule, factor, seed, ap):
    (v,) = experiments.variants([campaign.experiment(grid, configuration)], (schedule,),
                                (factor,))
    run = experiments.kept_run(folder, v, seed)
    run.mkdir(parents=True)
    (run / "final.json").write_text(json.dumps({"ap": {"AP": ap}}))


def test_the_campaign_covers_every_configuration_of_the_three_grids():
    planned = [(p.grid, p.configuration) for p in campaign.CAMPAIGN]
    assert len(set(planned)) == len(planned)
    wanted = {(g, e.name) for g in ("retinanet", "libra", "outliers")
              for e in experiments.GRIDS[g]}
    assert set(planned) == wanted
    swept = {(p.grid, p.configuration) for p in campaign.CAMPAIGN if p.lr_factors}
    assert all(p.lr_of in swept for p in campaign.CAMPAIGN if p.lr_of)
    assert all(len(p.seeds) >= 5 for p in campaign.CAMPAIGN)
    # the outlier rows at 0 % are the clean rows: same overrides, so their runs are copied
    for label, clean in (("FL", "FL + SL1"), ("GHM-C", "GHM-C + SL1 (level)")):
        assert (set(campaign.experiment("outliers", f"{label}, outliers 0%").overrides)
                == set(campaign.experiment("retinanet", clean).overrides))


def test_plans_are_checked():
    with pytest.raises(ValueError, match="no configuration"):
        Plan("retinanet", "SSD", (1.0,))
    with pytest.raises(ValueError, match="either lr_factors or lr_of"):
        Plan("retinanet", "FL + SL1")
    with pytest.raises(ValueError, match="either lr_factors or lr_of"):
        Plan("outliers", "FL, outliers 10%", (1.0,), lr_of=("retinanet", "FL + SL1"))
    with pytest.raises(ValueError, match="unknown grid"):
        Plan("ssd", "FL + SL1", (1.0,))


def test_a_job_waits_for_its_sweep_and_takes_its_best_rate(tmp_path):
    clean = Plan("retinanet", "FL + SL1", (1.0, 2.0, 4.0))
    noisy = Plan("outliers", "FL, outliers 20%", lr_of=("retinanet", "FL + SL1"))
    plans = [clean, noisy]
    sweeps = campaign.sweep_folder("retinanet", tmp_path)
    run = Job(clean, 3, 4.0, None)
    assert campaign.job_state(run, tmp_path, plans)[0] == "waiting"
    _keep(sweeps, "retinanet", "FL + SL1", 1.0, 1.0, 0, 0.30)
    _keep(sweeps, "retinanet", "FL + SL1", 1.0, 2.0, 0, 0.50)
    assert campaign.best_lr_factor(clean, tmp_path, plans) is None  # 4x not kept yet
    sweep_jobs = [j for j in campaign.jobs(plans) if j.is_sweep]
    states = [campaign.job_state(j, tmp_path, plans)[0] for j in sweep_jobs]
    assert states == ["kept", "kept", "ready"]
    _keep(sweeps, "retinanet", "FL + SL1", 1.0, 4.0, 0, 0.50)  # a tie: the smaller rate
    assert campaign.best_lr_factor(clean, tmp_path, plans) == 2.0
    assert campaign.best_lr_factor(noisy, tmp_path, plans) == 2.0  # the clean one's sweep
    state, variant = campaign.job_state(run, tmp_path, plans)
    assert state == "ready" and variant.name == "FL + SL1 [schedule 4x, lr 2x]"
    _keep(campaign.grid_folder("retinanet", tmp_path), "retinanet", "FL + SL1", 4.0, 2.0, 3,
          0.6)
    assert campaign.job_state(run, tmp_path, plans)[0] == "kept"
    assert "2x 50.0" in campaign.status(tmp_path, plans) and "-> 2x" in campaign.status(
        tmp_path, plans)
    # the order: each plan's sweep first, then its seeds; the outlier plan has no sweep
    order = [(j.plan.configuration, j.is_sweep) for j in campaign.jobs(plans)]
    assert order == [("FL + SL1", True)] * 3 + [("FL + SL1", False)] * 5 + [
        ("FL, outliers 20%", False)] * 5


def test_claims_are_exclusive_and_a_dead_workers_claim_is_taken_over(tmp_path):
    job = Job(Plan("retinanet", "FL + SL1", (1.0,)), 0, 1.0, 1.0)
    claims = tmp_path / "claims"
    assert campaign.claim(claims, job)
    assert not campaign.claim(claims, job)  # ours, and we are alive: not again
    other = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    owner = claims / job.key / "owner"
    owner.write_text(owner.read_text().split()[0] + f" {other.stdout.strip()}\n")
    assert campaign.claim(claims, job)  # its worker has exited
    assert owner.read_text().split()[1] == str(os.getpid())
    campaign.release(claims, job)
    assert not (claims / job.key).exists()


def test_a_worker_trains_the_sweep_then_the_seeds_and_never_twice(tmp_path, monkeypatch):
    plans = [Plan("retinanet", "FL + SL1", (1.0, 2.0), seeds=(0, 1))]
    trained = []
    fit = experiments.fit

    def counting_fit(config, out, **kwargs):
        trained.append((config.optim.lr_factor, config.optim.schedule, config.run.seed))
        return fit(config, out=out, **kwargs)

    monkeypatch.setattr(experiments, "fit", counting_fit)
    kwargs = dict(results=tmp_path / "results", campaign=plans, schedule=2.0, preset="smoke",
                  overrides=FAST, reuse=[], weights=tmp_path / "weights", log=lambda m: None)
    assert campaign.work(tmp_path / "out", **kwargs) == 4
    best = campaign.best_lr_factor(plans[0], tmp_path / "results", plans)
    assert trained == [(1.0, 1.0, 0), (2.0, 1.0, 0), (best, 2.0, 0), (best, 2.0, 1)]
    summary = experiments.read_summary(campaign.grid_folder("retinanet", tmp_path / "results"))
    name = f"FL + SL1 [schedule 2x{'' if best == 1 else f', lr {best:g}x'}]"
    assert summary["rows"][name]["seeds"] == [0, 1]
    # FL + SL1 is a detector the book ships: the first seed trained, with its provenance
    shipped = load_weights(campaign.weights_file("retinanet", "FL + SL1", tmp_path / "weights"))
    assert shipped.config.run.seed == 0 and shipped.config.optim.schedule == 2.0
    kept = experiments.kept_run(campaign.grid_folder("retinanet", tmp_path / "results"), name, 0)
    assert shipped.provenance["ap"] == experiments.read_final(kept)["ap"]
    assert not list((tmp_path / "out" / "claims").iterdir())  # every claim released
    assert campaign.work(tmp_path / "out", **kwargs) == 0  # all kept: nothing trained again
    assert len(trained) == 4


def test_a_worker_starts_no_job_it_cannot_finish_by_the_deadline(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a job started that the deadline does not leave time for")

    monkeypatch.setattr(experiments, "fit", no_training)
    soon = (datetime.now() + timedelta(minutes=2)).strftime("%H:%M")  # a run takes minutes
    plans = [Plan("retinanet", "FL + SL1", (1.0,))]
    assert campaign.work(tmp_path / "out", until=soon, results=tmp_path, campaign=plans,
                         reuse=[], log=lambda m: None) == 0
    with pytest.raises(SystemExit):
        campaign.main(["run", "--until", "25:99"])
