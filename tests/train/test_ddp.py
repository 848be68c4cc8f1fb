"""Two processes under torchrun (gloo, CPU) compute the gradient one process computes on the
same global batch, through the command line's code path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from imbalance.files import read_jsonl as read_metrics
from imbalance.models import retinanet
from imbalance.train import fit
from imbalance.train.seeding import seed_everything


def test_two_gloo_processes_give_the_gradient_of_one(smoke_config, tmp_path: Path) -> None:
    """The book's RetinaNet divides by the positives of the batch, averaged over processes."""
    # GroupNorm: BatchNorm would normalise each process's half batch by its own statistics.
    # One SGD step with lr 1 and nothing else (no momentum, decay, warm-up or clipping) moves
    # each weight by exactly minus its gradient.
    step = ["model.norm=gn", "model.fpn_channels=32", "model.cls_loss=focal",
            "model.box_loss=smooth_l1", "data.max_train_images=8", "optim.iterations=1",
            "optim.lr=1", "optim.momentum=0", "optim.weight_decay=0", "optim.warmup_iters=0",
            "optim.grad_clip=null", "run.log_every=1"]
    one = fit(smoke_config(*step, "data.batch_size=4"), out=tmp_path / "one")

    two = smoke_config(*step, "data.batch_size=2")
    config_file = tmp_path / "two.yaml"
    config_file.write_text(two.to_yaml())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "imbalance.train", "--config", str(config_file), "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    seed_everything(two.run.seed)  # the initial weights, as fit builds them
    size = two.data.min_size
    initial = retinanet(6, "resnet18", "focal", "smooth_l1", norm="gn", fpn_channels=32,
                        min_size=size, max_size=size).state_dict()
    after_one = torch.load(one.checkpoint, weights_only=False)["model"]
    after_two = torch.load(tmp_path / "two" / "checkpoints" / "last.pt",
                           weights_only=False)["model"]
    grad_one = torch.cat([(initial[k] - after_one[k]).flatten() for k in initial
                          if initial[k].is_floating_point()])
    grad_two = torch.cat([(initial[k] - after_two[k]).flatten() for k in initial
                          if initial[k].is_floating_point()])
    assert grad_one.abs().sum() > 0
    relative = (grad_two - grad_one).norm() / grad_one.norm()
    assert relative < 1e-5, f"relative gradient difference {relative:.2e}"

    loss_one = read_metrics(tmp_path / "one" / "metrics.jsonl")[0]
    loss_two = read_metrics(tmp_path / "two" / "metrics.jsonl")[0]
    for term in ("loss", "classification", "bbox_regression"):
        assert abs(loss_two[term] - loss_one[term]) <= 1e-5 * abs(loss_one[term]), term
    final = json.loads((tmp_path / "two" / "final.json").read_text())
    assert final["world_size"] == 2 and "AP50" in final["ap"]
