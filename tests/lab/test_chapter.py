"""The training chapters' runs: a bounded preset on every device, files in the cache, a finished
run read back rather than trained again, and the command that trains them all first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imbalance.files import json_text
from imbalance.lab import prepare
from imbalance.lab.cache import CONFIGS, run_key
from imbalance.lab.chapter import (
    CHAPTER_RUNS,
    chapter_config,
    chapter_preset,
    chapter_run_dir,
    live_run_notice,
    train_in_chapter,
)
from tests.train.conftest import fast


def test_chapter_preset_is_bounded_on_every_device(monkeypatch: pytest.MonkeyPatch) -> None:
    for cuda in (False, True):  # a CUDA machine gets the cpu preset too (run on its GPU)
        monkeypatch.setattr("torch.cuda.is_available", lambda cuda=cuda: cuda)
        assert chapter_preset({}) == "cpu"
        assert chapter_preset({"IMBALANCE_SMOKE": "1"}) == "smoke"
        assert chapter_preset({"IMBALANCE_SMOKE": "0"}) == "cpu"
        assert chapter_preset({"IMBALANCE_SMOKE": "1", "IMBALANCE_PRESET": "cpu"}) == "cpu"
        assert chapter_preset({"IMBALANCE_PRESET": "gpu"}) == "gpu"  # only when asked for
    with pytest.raises(ValueError, match="IMBALANCE_PRESET"):
        chapter_preset({"IMBALANCE_PRESET": "tpu"})


def test_chapter_config_puts_the_synthetic_data_in_the_cache(tmp_path: Path) -> None:
    config = chapter_config("retinanet_focal", "smoke", ["data.knobs.outlier_fraction=0.1"],
                            cache=tmp_path)
    assert config.preset == "smoke" and config.model.cls_loss == "focal"
    folder = Path(config.data.cache_dir)
    assert folder.parent == tmp_path / "synthetic" and folder.name.startswith("tiny-seed0-")
    other = chapter_config("retinanet_focal", "smoke", cache=tmp_path)
    assert Path(other.data.cache_dir) == tmp_path / "synthetic" / "tiny-seed0"
    named = chapter_config("libra_rcnn", "cpu", [f"data.cache_dir={tmp_path / 'mine'}"],
                           cache=tmp_path)  # a folder of one's own is kept
    assert named.data.cache_dir == str(tmp_path / "mine") and named.model.name == "libra_rcnn"
    assert all((CONFIGS / f"{b}_{p}.yaml").is_file() for b in ("retinanet_focal", "libra_rcnn")
               for p in ("smoke", "cpu", "gpu"))
    with pytest.raises(FileNotFoundError, match="retinanet_focal"):
        chapter_config("yolo", "smoke", cache=tmp_path)


def test_train_in_chapter_reads_a_finished_run_back(tmp_path: Path, tiny_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = [*fast(tiny_root), "optim.iterations=3"]
    first = train_in_chapter("retinanet_focal", "smoke", overrides, cache=tmp_path)
    config = chapter_config("retinanet_focal", "smoke", overrides, cache=tmp_path)
    assert first.out == chapter_run_dir(config, tmp_path)
    assert first.out.parent == tmp_path / "runs" and first.out.name.endswith(run_key(config))
    assert set(first.ap) >= {"AP", "AP50"} and first.final["steps"] == 3
    stamp = json.loads((first.out / "final.json").read_text())["date"]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished chapter run was trained again")

    monkeypatch.setattr("imbalance.train.loop.Trainer._train", no_training)
    again = train_in_chapter("retinanet_focal", "smoke", overrides, cache=tmp_path)
    assert again.out == first.out and again.final["date"] == stamp
    assert json_text(again.ap) == json_text(first.ap)  # NaN (undefined) compares unequal
    with pytest.raises(AssertionError, match="trained again"):  # another configuration
        train_in_chapter("retinanet_focal", "smoke", [*fast(tiny_root), "optim.iterations=2"],
                         cache=tmp_path)


def test_a_killed_or_unreadable_chapter_run_is_trained_again(tmp_path: Path,
                                                             tiny_root: Path) -> None:
    overrides = [*fast(tiny_root), "optim.iterations=2"]
    first = train_in_chapter("retinanet_focal", "smoke", overrides, cache=tmp_path)
    first.checkpoint.write_bytes(b"cut short")
    (first.out / "final.json").unlink()
    again = train_in_chapter("retinanet_focal", "smoke", overrides, cache=tmp_path)
    assert again.final["steps"] == 2 and (again.out / "final.json").is_file()


def test_prepare_lists_every_run_the_chapters_read() -> None:
    jobs = prepare.chapter_jobs("smoke")
    bases = [j.base for j in jobs if j.base is not None]
    assert bases == list(CHAPTER_RUNS) and all(j.preset == "smoke" for j in jobs if j.base)
    snapshots = [j.kwargs for j in jobs if j.base is None]
    assert {"model": "retinanet"} in snapshots and {"model": "libra_rcnn"} in snapshots
    assert len({j.name for j in jobs}) == len(jobs)
    with pytest.raises(ValueError, match="jobs"):
        prepare.prepare("smoke", jobs=0)


def test_a_chapter_run_another_process_is_training_is_waited_for_not_refused(
        tmp_path: Path, tiny_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two chapters executed side by side (nbval -n 2) need the same snapshot: the second waits
    for the first's lock, then reads its run (it failed with RunLockedError before)."""
    import subprocess
    import sys
    import time

    from imbalance.lab.cache import fit_cached
    from imbalance.train import RunLockedError
    from imbalance.train.rundir import RunDir

    overrides = [*fast(tiny_root), "optim.iterations=2"]
    config = chapter_config("retinanet_focal", "smoke", overrides, cache=tmp_path)
    out = chapter_run_dir(config, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from imbalance.train.rundir import RunDir\n"
         f"with RunDir({str(out)!r}).lock():\n    print('locked', flush=True)\n"
         "    time.sleep(3)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    result = fit_cached(config, out)
    holder.wait(timeout=30)
    holder.stdout.close()
    assert time.monotonic() - started > 1.0 and result.final["steps"] == 2
    assert "waiting for the run another process is training" in capsys.readouterr().err
    with RunDir(out).lock(), pytest.raises(RunLockedError):  # no time to wait: refused
        fit_cached(config, out, wait_s=0.0)


def test_the_live_run_notice_says_a_smoke_run_is_one_and_where_the_results_come_from(
        tmp_path: Path) -> None:
    grid = tmp_path / "retinanet"
    grid.mkdir()
    summary = {"grid": "retinanet", "preset": "protocol", "seeds": [0, 1, 2, 3, 4],
               "schedules": [1.0], "lr_factors": [1.0], "metrics": ["AP"], "rows": {},
               "missing": [], "provenance": {"runs": 55}}
    (grid / "summary.json").write_text(json.dumps(summary))
    smoke = live_run_notice("smoke", grid)
    assert smoke.startswith("**A smoke run.**") and "IMBALANCE_SMOKE=1" in smoke
    assert "55 runs of the `protocol` preset, seeds 0, 1, 2, 3, 4" in smoke
    cpu = live_run_notice("cpu", grid)
    assert "smoke" not in cpu and "`cpu` preset" in cpu and "not from this run" in cpu
    with pytest.raises(FileNotFoundError):
        live_run_notice("cpu", tmp_path / "nothing")
