"""The device a run trains on, its mixed-precision dtype and memory format.

``auto`` picks CUDA, then Apple's MPS, then the CPU. Mixed precision runs on CUDA only: ``auto``
is bf16 where the GPU supports it and full precision elsewhere; fp16 comes with a gradient
scaler. Under ``torchrun`` each process takes the GPU of its ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def device_available(name: str) -> bool:
    """Whether a device type (``cpu``, ``cuda``, ``mps``) can be used here."""
    if name == "cpu":
        return True
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return False


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA (GPU ``local_rank``), else MPS, else CPU; otherwise the named device."""
    if name == "auto":
        name = next(n for n in ("cuda", "mps", "cpu") if device_available(n))
    if not device_available(name):
        raise RuntimeError(f"device {name!r} is not available on this machine")
    if name == "cuda":
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(name)


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (``auto``, ``none``, ``bf16``, ``fp16``) on ``device``;
    ``None`` is full precision. ``auto`` is bf16 on CUDA GPUs that support it."""
    if amp == "none":
        return None
    if device.type != "cuda":
        if amp == "auto":
            return None
        raise ValueError(f"amp={amp!r} needs a CUDA device, the device is {device}")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """An autocast context for ``dtype`` (disabled when ``None``)."""
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (bf16 has float32's range)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def to_channels_last(model: nn.Module) -> nn.Module:
    """The model's 4-D parameters and buffers in the channels-last memory format."""
    return model.to(memory_format=torch.channels_last)


def describe_device(device: torch.device) -> str:
    """A human-readable description, e.g. ``"NVIDIA H100 (cuda:0)"`` or ``"x86_64 CPU, 2
    threads"``."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    cpu = platform.processor() or platform.machine() or "unknown"
    threads = torch.get_num_threads()
    return f"{cpu} CPU, {threads} thread{'s' if threads != 1 else ''} of {os.cpu_count()} cores"


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``threads`` while inside (``None``: unchanged)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms (warnings, not errors, where none exists) and cuDNN's
    deterministic mode while inside; the previous settings are restored on exit. When not
    enabled, cuDNN's autotuner is on instead."""
    cudnn = torch.backends.cudnn
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                cudnn.deterministic, cudnn.benchmark)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        cudnn.deterministic, cudnn.benchmark = True, False
    else:
        cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        cudnn.deterministic, cudnn.benchmark = previous[2], previous[3]
