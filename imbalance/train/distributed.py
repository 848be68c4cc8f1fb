"""Several processes: ``torchrun`` detection, the process group, data sharding, rank-0 I/O.

``torchrun --nproc_per_node N -m imbalance.train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`env_info` reads them and :func:`process_group` starts the group (NCCL on
CUDA, gloo on CPU, the same code path) and ends it. One process is a world of size 1 and every
function here is then a no-op.

The data order is the same in every process: :func:`epoch_order` is a permutation seeded by
``(seed, epoch)``, cut into global batches of ``batch_size * world_size``; :func:`shard_batches`
gives each rank its own ``batch_size`` slice of every global batch. So one process with batch 4
and two with batch 2 see the same four images at each step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from imbalance.train.seeding import generator


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that writes the files and shows the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def env_info() -> DistInfo:
    """The rank, world size and local rank ``torchrun`` put in the environment (else 0, 1, 0)."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name, "")
        try:
            return int(value) if value else default
        except ValueError:
            raise RuntimeError(f"environment variable {name}={value!r} is not an integer") \
                from None

    info = DistInfo(read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_RANK", 0))
    if not 0 <= info.rank < info.world_size:
        raise RuntimeError(f"RANK={info.rank} is outside WORLD_SIZE={info.world_size}")
    return info


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(info: DistInfo, device: torch.device,
                  timeout: timedelta = timedelta(minutes=30)) -> Iterator[None]:
    """Start the process group for a multi-process run (from torchrun's environment) and
    destroy it on exit, after a barrier. Nothing happens for one process, or when the caller
    already started a group."""
    if not info.enabled or dist.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"backend": backend_for(device), "rank": info.rank,
                              "world_size": info.world_size, "timeout": timeout}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)
    ok = False
    try:
        yield
        ok = True
    finally:
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every process (no-op for one)."""
    if active():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over the processes (the tensor itself for one)."""
    if not active():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj``, in every process."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    """The order of the training items in ``epoch``: a permutation seeded by (seed, epoch)."""
    return torch.randperm(num_items, generator=generator(seed, epoch)).tolist()


def shard_batches(order: list[int], batch_size: int, rank: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """Rank ``rank``'s batches: its ``batch_size`` slice of each global batch of
    ``batch_size * world_size`` consecutive items of ``order``; an incomplete last global batch
    is dropped, so every rank takes the same number of steps."""
    global_batch = batch_size * world_size
    steps = len(order) // global_batch
    start = rank * batch_size
    return [order[s * global_batch + start:s * global_batch + start + batch_size]
            for s in range(steps)]


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """The model with every BatchNorm layer a SyncBatchNorm (statistics over all processes)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_ddp(model: nn.Module, device: torch.device,
             find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (on ``device``), gradients averaged over
    the processes at each backward pass."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
