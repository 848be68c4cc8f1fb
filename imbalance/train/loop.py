"""``fit(config)``: train a detector, checkpoint it, evaluate it and record the provenance.

One code path for one process and for several under ``torchrun`` (DDP, gloo on CPU, NCCL on
CUDA). Each step: forward in autocast, the loss terms averaged over the processes and checked
(a non-finite term stops the run with :class:`NonFiniteLossError`, before the weights change),
backward, gradient clipping, the optimiser and learning rate steps. Every ``log_every`` steps a
record goes to ``metrics.jsonl`` (with the model's ``training_statistics()``, e.g. GHM's bins,
under ``statistics``, rank 0's own); every ``checkpoint_every`` steps and at the end
``checkpoints/last.pt`` is written atomically with everything a resume needs (weights, optimiser,
scheduler, scaler, step, the generators' states of every process, the metrics' length); every
``eval_every`` steps and at the end the model is scored with COCO AP; ``final.json`` closes the
run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from imbalance.evaluation import ap_from_json
from imbalance.files import finite_or_none, write_json_atomic
from imbalance.models import build_model
from imbalance.models.backbones import file_sha256
from imbalance.train import distributed
from imbalance.train.checkpoint import load_checkpoint, save_checkpoint
from imbalance.train.config import (
    ConfigError,
    OptimConfig,
    TrainConfig,
    learning_rate,
    load_config,
    model_kwargs,
    validate,
)
from imbalance.train.data import RunData, data_root, load_data, train_loader
from imbalance.train.device import (
    amp_dtype,
    autocast,
    cpu_threads,
    describe_device,
    deterministic_mode,
    grad_scaler,
    resolve_device,
    to_channels_last,
)
from imbalance.train.evaluate import evaluate
from imbalance.train.metrics import LossWindow, MetricsLog, eval_record, train_record
from imbalance.train.provenance import command_line, git_state, utc_now, versions
from imbalance.train.rundir import RunDir
from imbalance.train.schedule import lr_scheduler
from imbalance.train.seeding import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seed_everything,
)

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """A loss term (or the gradient norm) became NaN or infinite; the message names the step,
    the term and the last good checkpoint, which is left as it was."""


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        config: the configuration of the run.
        out: the output folder.
        metrics: the records of ``metrics.jsonl`` (see :mod:`imbalance.train.metrics`).
        ap: the final COCO evaluation: ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``
            and ``per_class``.
        final: the contents of ``final.json``.
        checkpoint: the final checkpoint, ``out/checkpoints/last.pt``.
        model: the trained model (unwrapped from DDP), in eval mode.
    """

    config: TrainConfig
    out: Path
    metrics: list[dict[str, Any]]
    ap: dict[str, Any]
    final: dict[str, Any]
    checkpoint: Path
    model: nn.Module


def fit(config: TrainConfig | str | os.PathLike, *, out: str | os.PathLike | None = None,
        resume: bool = False, overwrite: bool = False) -> FitResult:
    """Train, checkpoint and evaluate the detector of ``config``.

    Args:
        config: a :class:`TrainConfig` (e.g. from :func:`load_config`) or a YAML file.
        out: the output folder; default ``runs/<config.name>``.
        resume: continue the run in ``out`` from its last checkpoint (its configuration must
            match); a finished run is not trained again, its results are read back. Without a
            run in ``out`` the run starts afresh.
        overwrite: delete the run files in ``out`` and start over.

    Returns:
        a :class:`FitResult`: metrics history, final AP dict, ``final.json``, paths, the model.

    Raises:
        ConfigError: the configuration is invalid, or ``out`` holds another run; raised before
            any work. :class:`~imbalance.train.rundir.RunLockedError` (a ``ConfigError``):
            another process is training in ``out``.
        NonFiniteLossError: a loss term became NaN or infinite.
    """
    started = time.perf_counter()
    if not isinstance(config, TrainConfig):
        config = load_config(config)
    validate(config)
    run_dir = RunDir(out if out is not None else Path("runs") / config.name)
    run_dir.check(config, resume=resume, overwrite=overwrite)
    info = distributed.env_info()
    device = resolve_device(config.run.device, info.local_rank)
    dtype = amp_dtype(config.run.amp, device)
    if config.run.sync_bn and info.enabled and device.type != "cuda":
        raise ConfigError(f"run.sync_bn: torch's SyncBatchNorm needs CUDA devices, the device is "
                          f"{device.type}; use model.norm=gn instead")
    locked = run_dir.lock() if info.is_main else contextlib.nullcontext()
    with locked, cpu_threads(config.run.threads), deterministic_mode(config.run.deterministic), \
            distributed.process_group(info, device):
        distributed.barrier()  # every rank has checked the folder before rank 0 changes it
        if info.is_main:
            run_dir.prepare(config, overwrite=overwrite)
        distributed.barrier()
        trainer = Trainer(config, run_dir, info, device, dtype, started)
        return trainer.run(resume=resume)


def _optimizer(o: OptimConfig, lr: float, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if o.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(o.momentum, 0.999),
                                 weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)


def _non_finite(*states: Any, prefix: str = "") -> list[str]:
    """The names of the floating-point tensors in nested ``states`` holding NaN or inf."""
    bad: list[str] = []
    for i, state in enumerate(states):
        items = state.items() if isinstance(state, dict) else (
            enumerate(state) if isinstance(state, list | tuple) else [(i, state)])
        for key, value in items:
            name = f"{prefix}{key}"
            if isinstance(value, torch.Tensor):
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    bad.append(name)
            elif isinstance(value, dict | list | tuple):
                bad += _non_finite(value, prefix=f"{name}.")
    return bad


def _to(target: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in target.items()}


class Trainer:
    """One process's share of a run; :func:`fit` builds it and calls :meth:`run`."""

    def __init__(self, config: TrainConfig, run_dir: RunDir, info: distributed.DistInfo,
                 device: torch.device, dtype: torch.dtype | None, started: float) -> None:
        self.config, self.run_dir, self.info = config, run_dir, info
        self.device, self.dtype, self.started = device, dtype, started
        self.progress = config.run.progress and info.is_main

        self.data: RunData = load_data(config, data_root(config, info, self.progress))
        self.global_batch = config.data.batch_size * info.world_size
        self.steps_per_epoch = len(self.data.train) // self.global_batch
        if self.steps_per_epoch < 1:
            raise ConfigError(f"data.batch_size: the global batch ({config.data.batch_size} x "
                              f"{info.world_size} processes) is larger than the "
                              f"{len(self.data.train)} training images")
        o = config.optim
        steps = o.iterations if o.iterations is not None else o.epochs * self.steps_per_epoch
        self.total = round(steps * o.schedule)

        seed_everything(config.run.seed)  # the same initial weights in every process
        core = build_model(config.model.name, self.data.num_classes, **model_kwargs(config))
        core = core.to(device)
        if config.run.sync_bn and info.enabled:
            core = distributed.convert_sync_batchnorm(core)
        if config.run.channels_last:
            core = to_channels_last(core)
        if config.run.compile:
            getattr(core, "backbone", core).compile()
        self.core = core
        self.model = distributed.wrap_ddp(core, device) if info.enabled else core
        self.params = [p for p in core.parameters() if p.requires_grad]
        self.lr = learning_rate(config, info.world_size)
        self.optimizer = _optimizer(o, self.lr, self.params)
        self.scheduler = lr_scheduler(self.optimizer, self.total, o.warmup_iters,
                                      o.warmup_factor, o.milestones, o.gamma)
        self.scaler = grad_scaler(device, dtype)

        self.log = MetricsLog(run_dir.metrics_file, enabled=info.is_main)
        self.window = LossWindow()
        self.step = 0
        self.checkpoint_step: int | None = None
        self.elapsed_before = 0.0
        self.train_time = 0.0
        self.images_seen = 0
        self.bar: Any = None

    # ---------------------------------------------------------------------------- the run
    def run(self, resume: bool) -> FitResult:
        """Train (from the last checkpoint if ``resume``), evaluate, write ``final.json``."""
        path = self.run_dir.last_checkpoint
        state = load_checkpoint(path) if resume and path.is_file() else None
        if state is not None and state["step"] >= self.total and self.run_dir.final_file.exists():
            return self._finished(state)
        if state is not None:
            self._restore(state)
        else:
            self.log.truncate(0)
            seed_everything(derive_seed(self.config.run.seed, self.info.rank, 1))
        self._train()
        return self._finish()

    def epoch(self) -> float:
        """Epochs done, fractional."""
        return self.step / self.steps_per_epoch

    def elapsed(self) -> float:
        """Seconds of this run so far, over every resumed part."""
        return self.elapsed_before + time.perf_counter() - self.started

    def _train(self) -> None:
        run = self.config.run
        self.bar = tqdm(total=self.total, initial=self.step, desc=self.config.name, unit="step",
                        disable=not self.progress, leave=False, dynamic_ncols=True)
        self.model.train()
        try:
            if self.total == 0:  # nothing to train: the checkpoint holds the initial weights
                self._save()
            while self.step < self.total:
                epoch, skip = divmod(self.step, self.steps_per_epoch)
                loader = train_loader(self.data, self.config, self.info, epoch, skip,
                                      pin_memory=self.device.type == "cuda")
                tick = time.perf_counter()
                for images, targets in loader:
                    terms, lr = self._train_step(images, targets)
                    now = time.perf_counter()
                    seconds, tick = now - tick, now
                    self.window.add(terms, self.global_batch, seconds)
                    statistics = getattr(self.core, "training_statistics", None)
                    if statistics is not None:
                        self.window.add_statistics(statistics())
                    self.train_time += seconds
                    self.images_seen += self.global_batch
                    self.bar.update(1)
                    self.bar.set_postfix(loss=f"{sum(terms.values()):.4f}", lr=f"{lr:.3g}",
                                         img_s=f"{self.window.images / self.window.seconds:.1f}",
                                         refresh=False)
                    if self.step % run.log_every == 0 or self.step == self.total:
                        self.log.append(train_record(self.step, self.epoch(), lr, self.window,
                                                     self.elapsed()))
                        self.window.reset()
                    if run.eval_every and self.step % run.eval_every == 0 \
                            and self.step < self.total:
                        self._evaluate()
                    if (run.checkpoint_every and self.step % run.checkpoint_every == 0) \
                            or self.step == self.total:
                        self._save()
                    tick = time.perf_counter()
                    if self.step >= self.total:
                        break
        finally:
            self.bar.close()

    def _train_step(self, images: list[torch.Tensor],
                    targets: list[dict[str, Any]]) -> tuple[dict[str, float], float]:
        """One optimiser step; returns the loss terms (mean over processes) and the lr used."""
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [_to(t, self.device) for t in targets]
        lr = float(self.optimizer.param_groups[0]["lr"])
        with autocast(self.device, self.dtype):
            losses = self.model(images, targets)
        names = list(losses)
        values = torch.stack([losses[n].detach().float() for n in names])
        values = distributed.all_reduce_mean(values).cpu()
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            self._fail(f"loss term {names[bad]!r} is {values[bad].item()}")
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        clip = self.config.optim.grad_clip
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            if not self.scaler.is_enabled() and not math.isfinite(float(norm)):
                self._fail(f"the gradient norm is {float(norm)}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        return dict(zip(names, values.tolist(), strict=True)), lr

    def _fail(self, what: str) -> None:
        if self.checkpoint_step is not None:
            last = (f"last good checkpoint: {self.run_dir.last_checkpoint} (step "
                    f"{self.checkpoint_step})")
        else:
            last = "no checkpoint was written yet"
        raise NonFiniteLossError(f"step {self.step + 1}: {what}; {last}")

    # ------------------------------------------------------------------- evaluation, state
    def _evaluate(self, bootstrap: int = 0) -> dict[str, Any]:
        if self.bar is not None:
            self.bar.set_description(f"{self.config.name} (eval)")
        batch = self.config.run.eval_batch_size or self.config.data.batch_size
        result = evaluate(self.core, self.data.val, self.data.gt, device=self.device,
                          batch_size=batch, score_threshold=self.config.run.eval_score_threshold,
                          info=self.info, bootstrap=bootstrap)
        self.log.append(eval_record(self.step, self.epoch(), result))
        self.model.train()
        if self.bar is not None:
            self.bar.set_description(self.config.name)
        return result

    def _state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "total": self.total,
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": self.step % self.steps_per_epoch,
            "model": self.core.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "world_size": self.info.world_size,
            "metrics_records": self.log.count,
            "window": self.window.state_dict(),
            "elapsed": self.elapsed(),
            "train_time": self.train_time,
            "images_seen": self.images_seen,
            "config": self.config.to_dict(),
        }

    def _save(self) -> None:
        bad = _non_finite(self.core.state_dict(), self.optimizer.state_dict())
        if bad:  # never write, nor call good, a checkpoint that could not be trained on
            self._fail(f"{len(bad)} tensor(s) of the weights and optimiser state are not "
                       f"finite (e.g. {bad[0]}); no checkpoint was written")
        rng = distributed.all_gather_objects(capture_rng_state())
        if self.info.is_main:
            state = self._state(rng)
            save_checkpoint(state, self.run_dir.last_checkpoint)
            if self.config.run.keep_checkpoints:
                save_checkpoint(state, self.run_dir.iteration_checkpoint(self.step))
        self.checkpoint_step = self.step

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RuntimeError(f"{self.run_dir.last_checkpoint}: unknown checkpoint format "
                               f"{state.get('format')!r}")
        if state["total"] != self.total:
            raise ConfigError(f"--resume: the checkpoint's run has {state['total']} steps, this "
                              f"configuration {self.total}")
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = self.checkpoint_step = state["step"]
        self.log.truncate(state["metrics_records"])
        self.window.load_state_dict(state["window"])
        self.elapsed_before = state["elapsed"]
        self.train_time = state["train_time"]
        self.images_seen = state["images_seen"]
        if state["world_size"] == self.info.world_size:
            restore_rng_state(state["rng"][self.info.rank])
        else:
            warnings.warn(f"resuming a run of {state['world_size']} processes with "
                          f"{self.info.world_size}: the random draws of the models differ from "
                          f"an uninterrupted run", stacklevel=2)
            seed_everything(derive_seed(self.config.run.seed, self.info.rank, self.step + 1))

    def _finished(self, state: dict[str, Any]) -> FitResult:
        """A finished run read back: weights from the checkpoint, results from the files."""
        self.core.load_state_dict(state["model"])
        final = None
        if self.info.is_main:
            final = json.loads(self.run_dir.final_file.read_text(encoding="utf-8"))
        final = distributed.broadcast_object(final)
        metrics = distributed.broadcast_object(self.log.read() if self.info.is_main else None)
        return FitResult(self.config, self.run_dir.path, metrics, ap_from_json(final["ap"]),
                         final, self.run_dir.last_checkpoint, self.core.eval())

    def _finish(self) -> FitResult:
        ap = self._evaluate(self.config.run.eval_bootstrap)
        final: dict[str, Any] = {
            "name": self.config.name,
            "config": self.config.to_dict(),
            "ap": ap,
            "steps": self.total,
            "lr": self.lr,
            "global_batch": self.global_batch,
            "epochs": round(self.total / self.steps_per_epoch, 4),
            "train_images": len(self.data.train),
            "val_images": len(self.data.val),
            "num_classes": self.data.num_classes,
            "data_root": str(self.data.root),
            "device": describe_device(self.device),
            "amp": str(self.dtype).removeprefix("torch.") if self.dtype is not None else None,
            "world_size": self.info.world_size,
            "wall_time_s": round(self.elapsed(), 3),
            "train_time_s": round(self.train_time, 3),
            "images_per_s": round(self.images_seen / self.train_time, 3)
            if self.train_time > 0 else None,
            "versions": versions(),
            "date": utc_now(),
            "command": command_line(),
            "checkpoint": str(self.run_dir.last_checkpoint),
        }
        if self.config.model.pretrained is not None:
            final["pretrained_sha256"] = file_sha256(self.config.model.pretrained)
        git = git_state()
        final["git_commit"], final["git_dirty"] = git["commit"], git["dirty"]
        final = finite_or_none(final)  # as final.json holds it: an undefined metric is null
        metrics = None
        if self.info.is_main:
            write_json_atomic(self.run_dir.final_file, final)
            metrics = self.log.read()
            if self.progress:
                tqdm.write(f"{self.config.name}: {self.total} steps, "
                           f"{final['images_per_s']} img/s, AP {ap['AP']:.3f}, "
                           f"AP50 {ap['AP50']:.3f} -> {self.run_dir.final_file}")
        metrics = distributed.broadcast_object(metrics)
        return FitResult(self.config, self.run_dir.path, metrics, ap, final,
                         self.run_dir.last_checkpoint, self.core.eval())
