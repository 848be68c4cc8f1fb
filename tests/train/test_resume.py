"""Kill and resume: a run killed with SIGKILL after a checkpoint and resumed ends with weights
identical to an uninterrupted run's (deterministic mode, CPU), and logs no step twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imbalance.files import json_text
from imbalance.files import read_jsonl as read_metrics
from imbalance.train import fit

STEPS = 12
# 6 training images, 2 a step: 3 steps an epoch, so the checkpoints (every 2 steps) fall in the
# middle of epochs and the resumed run must skip the batches its epoch already consumed.
RUN = ["run.deterministic=true", f"optim.iterations={STEPS}", "run.checkpoint_every=2",
       "data.max_train_images=6", "data.hflip=0.5", "optim.warmup_iters=4", "run.log_every=1"]
TIMING = ("time", "images_per_s")


def _checkpoint_step(path) -> int:
    return torch.load(path, weights_only=False)["step"]


def test_a_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(smoke_config,
                                                                                tmp_path):
    config = smoke_config(*RUN)
    uninterrupted = fit(config, out=tmp_path / "a")

    config_file = tmp_path / "run.yaml"
    config_file.write_text(config.to_yaml())
    out = tmp_path / "b"
    last = out / "checkpoints" / "last.pt"
    process = subprocess.Popen(
        [sys.executable, "-m", "imbalance.train", "--config", str(config_file), "--out",
         str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not last.exists():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    killed_at = _checkpoint_step(last)
    assert 2 <= killed_at < STEPS
    assert not (out / "final.json").exists()

    resumed = fit(config, out=out, resume=True)

    a = torch.load(uninterrupted.checkpoint, weights_only=False)
    b = torch.load(resumed.checkpoint, weights_only=False)
    assert a["step"] == b["step"] == STEPS
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for state_a, state_b in zip(a["optimizer"]["state"].values(),
                                b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(state_a["momentum_buffer"], state_b["momentum_buffer"])

    records_a = read_metrics(uninterrupted.out / "metrics.jsonl")
    records_b = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records_b] == [*range(1, STEPS + 1), STEPS]  # + the evaluation
    for ra, rb in zip(records_a, records_b, strict=True):
        assert {k: v for k, v in ra.items() if k not in TIMING} == \
            {k: v for k, v in rb.items() if k not in TIMING}
    assert json_text(resumed.ap) == json_text(uninterrupted.ap)  # NaN: undefined


def test_a_second_process_on_the_same_folder_is_refused_at_once(smoke_config, tmp_path, capsys):
    """Issue 13, item 2: two processes on one --out interleaved their metrics; now the second
    fails before it changes anything, naming the holder."""
    from imbalance.train import RunLockedError
    from imbalance.train.__main__ import main
    from imbalance.train.rundir import RunDir

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from imbalance.train.rundir import RunDir\n"
         f"with RunDir({str(out)!r}).lock():\n    print('locked', flush=True)\n"
         "    sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        (out / "metrics.jsonl").write_text('{"step": 1}\n')
        with pytest.raises(RunLockedError, match=f"in use by pid {holder.pid} on "):
            fit(smoke_config(), out=out, overwrite=True)
        assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'  # nothing deleted
        config = Path(__file__).resolve().parents[2] / "configs" / "retinanet_focal_smoke.yaml"
        assert main(["--config", str(config), "--out", str(out), "--overwrite",
                     "run.device=cpu"]) == 3  # its own exit code
        assert f"in use by pid {holder.pid}" in capsys.readouterr().err
        assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'
    finally:
        holder.communicate("\n", timeout=30)
    with RunDir(out).lock():  # the holder is gone, and its lock with it
        assert f"pid {os.getpid()} on " in (out / ".lock").read_text()


def test_resuming_without_the_checkpoint_is_refused_not_restarted(smoke_config, tmp_path):
    """Issue 13, item 8: --resume with last.pt deleted silently restarted the run and truncated
    its metrics."""
    from imbalance.train import ConfigError

    config = smoke_config("run.checkpoint_every=2", "optim.iterations=4",
                          "run.keep_checkpoints=true")
    fit(config, out=tmp_path)
    metrics = (tmp_path / "metrics.jsonl").read_text()
    (tmp_path / "checkpoints" / "last.pt").unlink()
    with pytest.raises(ConfigError, match=r"last.pt is missing.*logged 4 steps.*iter_000004.pt"):
        fit(config, out=tmp_path, resume=True)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics
    # killed before its first checkpoint: nothing to lose, the run starts over
    (tmp_path / "final.json").unlink()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    result = fit(config, out=tmp_path, resume=True)
    assert result.final["steps"] == 4


def _cli(smoke_config, tmp_path, out, *extra):
    from imbalance.train.__main__ import main

    config_file = tmp_path / "c.yaml"
    config_file.write_text(smoke_config("run.checkpoint_every=2", "optim.iterations=4").to_yaml())
    return main(["--config", str(config_file), "--out", str(out), *extra])


def test_damaged_files_are_named_with_their_own_exit_codes(smoke_config, tmp_path, capsys):
    """Issue 13, items 9 and 10: a truncated or garbage last.pt, a truncated image, an --out
    under a file ended in tracebacks naming no file, with exit 1 (the non-finite loss's)."""
    from imbalance.train.__main__ import EXIT_CODES

    out = tmp_path / "run"
    assert _cli(smoke_config, tmp_path, out) == 0
    last = out / "checkpoints" / "last.pt"
    data = last.read_bytes()
    for damaged in (data[: len(data) // 2], b"garbage" * 10):
        last.write_bytes(damaged)
        (out / "final.json").unlink(missing_ok=True)
        capsys.readouterr()
        assert _cli(smoke_config, tmp_path, out, "--resume") == 4
        err = capsys.readouterr().err
        assert str(last) in err and "cannot be read" in err and "Traceback" not in err
    (tmp_path / "a_file").write_text("x")
    assert _cli(smoke_config, tmp_path, tmp_path / "a_file" / "run") == 6
    assert "a_file" in capsys.readouterr().err
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 6, 130}


def test_a_truncated_image_is_named(smoke_config, tiny_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    image = root / "train" / "000001.png"
    image.write_bytes(image.read_bytes()[:100])
    from imbalance.train.__main__ import main

    config_file = tmp_path / "c.yaml"
    config_file.write_text(smoke_config(f"data.root={root}", "data.max_train_images=4",
                                        "optim.iterations=4").to_yaml())
    assert main(["--config", str(config_file), "--out", str(tmp_path / "run")]) == 5
    err = capsys.readouterr().err
    assert str(image) in err and "truncated" in err and "Traceback" not in err


def _logged(out: Path) -> int:
    """Lines of a run's metrics.jsonl so far (a line being written may be cut: not counted)."""
    path = out / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def test_killed_at_random_points_and_mid_checkpoint_the_run_still_ends_the_same(smoke_config,
                                                                                 tmp_path):
    """Issue 13's fault injection: SIGKILL several times at random steps, one of them while a
    checkpoint is being written (its temporary file exists), resuming each time; the weights and
    the metrics end as an uninterrupted run's."""
    import random

    config = smoke_config(*RUN)
    uninterrupted = fit(config, out=tmp_path / "a")
    config_file = tmp_path / "run.yaml"
    config_file.write_text(config.to_yaml())
    out = tmp_path / "b"
    rng = random.Random(0)
    kills, mid_write = 0, False
    for attempt in range(6):
        command = [sys.executable, "-m", "imbalance.train", "--config", str(config_file),
                   "--out", str(out), *(["--resume"] if attempt else [])]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 300
            if attempt == 1:  # mid-checkpoint: kill as soon as a temporary file appears
                while process.poll() is None and time.monotonic() < deadline:
                    if any(out.glob("checkpoints/.*.tmp")):
                        mid_write = True
                        break
                    time.sleep(0.0005)
            else:  # at a random step: after 1 to 3 more logged steps, whatever the speed
                target = min(_logged(out) + rng.randint(1, 3), STEPS - 1)
                while process.poll() is None and time.monotonic() < deadline:
                    if _logged(out) >= target:
                        break
                    time.sleep(0.002)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
        finally:
            process.wait()
            stderr = process.stderr.read().decode()
            process.stderr.close()
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, stderr[-3000:]
    assert kills >= 3 and mid_write
    resumed = fit(config, out=out, resume=True)
    a = torch.load(uninterrupted.checkpoint, weights_only=False)
    b = torch.load(resumed.checkpoint, weights_only=False)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    records_a = read_metrics(uninterrupted.out / "metrics.jsonl")
    records_b = read_metrics(out / "metrics.jsonl")
    for ra, rb in zip(records_a, records_b, strict=True):
        assert {k: v for k, v in ra.items() if k not in TIMING} == \
            {k: v for k, v in rb.items() if k not in TIMING}
    assert not list(out.glob("checkpoints/.*.tmp"))  # a resumed run clears a killed write's
