"""Forward + backward time of every loss, as a ratio to plain BCE measured in the same run.

    python benchmarks/losses.py [--repeats 7] [--compile] [--device cpu|cuda]

Each loss runs on logits of shape (anchors, classes) with detection-like targets (about
1 % of anchors positive, one class each); regression losses run element-wise on tensors
of the same shape, so every ratio is a cost per element against
``F.binary_cross_entropy_with_logits`` (reduction "sum", then backward). The table gives
the median time over ``--repeats`` runs after a warm-up. ``--compile`` adds the same
rows under ``torch.compile`` (ratios to compiled BCE).

The losses of :mod:`imbalance.losses` run as in training, on the fast path of
:mod:`imbalance.losses._fused`; the rows marked "autograd" or "readable" force the readable
path (the papers' equations differentiated by autograd), and "loop over bins" is the
authors' GHM-C (:mod:`imbalance.losses.reference`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision

from imbalance.losses import (
    GHMC,
    _fused,
    alpha_balanced_bce,
    asl1_loss,
    balanced_l1_loss,
    binary_cross_entropy,
    ghm_c_loss,
    ghm_r_loss,
    sigmoid_focal_loss,
    smooth_l1_loss,
)
from imbalance.losses.reference import ghm_c_loss_loop

SHAPES = [(120_000, 80), (20_000, 10)]


def make_inputs(shape: tuple[int, int], device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, c = shape
    logits = (torch.randn(n, c, generator=g) * 2 - 4.6).to(device)
    targets = torch.zeros(n, c)
    pos = torch.rand(n, generator=g) < 0.01
    targets[pos, torch.randint(0, c, (int(pos.sum()),), generator=g)] = 1
    label_weight = (torch.rand(n, 1, generator=g) > 0.05).float()  # ~5 % ignored anchors
    pred = (torch.randn(n, c, generator=g) * 0.5).to(device)
    target = (torch.randn(n, c, generator=g) * 0.5).to(device)
    return logits, targets.to(device), label_weight.to(device), pred, target


def readable(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` on its readable path: the papers' equations, differentiated by autograd."""

    def run(*args, **kwargs):
        with _fused.disabled():
            return fn(*args, **kwargs)

    return run


def cases(logits, targets, label_weight, pred, target) -> dict[str, tuple[Callable, torch.Tensor]]:
    """name -> (loss function of one tensor, the tensor that gets the gradient)."""
    ghmc = GHMC(bins=30, momentum=0.75).to(logits.device)
    return {
        "BCE (torch, baseline)": (
            lambda x: F.binary_cross_entropy_with_logits(x, targets, reduction="sum"),
            logits,
        ),
        "alpha_balanced_bce": (lambda x: alpha_balanced_bce(x, targets, reduction="sum"), logits),
        "focal (torchvision)": (
            lambda x: torchvision.ops.sigmoid_focal_loss(x, targets, reduction="sum"),
            logits,
        ),
        "focal (ours)": (lambda x: sigmoid_focal_loss(x, targets, reduction="sum"), logits),
        "focal (ours, autograd)": (
            lambda x: readable(sigmoid_focal_loss)(x, targets, reduction="sum"),
            logits,
        ),
        "ghm_c_loss": (lambda x: ghm_c_loss(x, targets), logits),
        "ghm_c_loss + label_weight": (lambda x: ghm_c_loss(x, targets, label_weight), logits),
        "GHMC (momentum 0.75)": (lambda x: ghmc(x, targets, label_weight), logits),
        "GHM-C loop over bins": (lambda x: ghm_c_loss_loop(x, targets, label_weight), logits),
        "smooth_l1_loss": (lambda p: smooth_l1_loss(p, target, reduction="sum"), pred),
        "asl1_loss": (lambda p: asl1_loss(p, target, reduction="sum"), pred),
        "ghm_r_loss": (lambda p: ghm_r_loss(p, target), pred),
        "balanced_l1_loss": (lambda p: balanced_l1_loss(p, target, reduction="sum"), pred),
        "binary_cross_entropy (ours)": (
            lambda x: binary_cross_entropy(x, targets, reduction="sum"),
            logits,
        ),
        "ghm_c_loss (readable)": (lambda x: readable(ghm_c_loss)(x, targets), logits),
        "ghm_r_loss (readable)": (lambda p: readable(ghm_r_loss)(p, target), pred),
    }


BASELINE = "BCE (torch, baseline)"
COMPILED = [BASELINE, "focal (torchvision)", "focal (ours)", "focal (ours, autograd)", "ghm_c_loss"]


def fwd_bwd_timer(fn: Callable, x: torch.Tensor, device: str, inner: int) -> Callable[[], float]:
    """A function that runs ``inner`` forward + backward passes and returns ms per pass."""

    def once() -> float:
        xs = [x.detach().requires_grad_(True) for _ in range(inner)]
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for xx in xs:
            fn(xx).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / inner * 1e3

    return once


def median_times(timers: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Median time of each timer, measured round-robin so that all share the same conditions."""
    for once in timers.values():  # warm-up: allocator, caches, compilation
        once()
        once()
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, once in timers.items():
            samples[name].append(once())
    return {name: statistics.median(v) for name, v in samples.items()}


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    where = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{cpu}, {torch.get_num_threads()} threads"
    )
    return (
        f"{where}; torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Python {platform.python_version()}"
    )


def run(device: str, repeats: int, compile_: bool) -> None:
    print(f"# Loss benchmark: forward + backward, median of {repeats} ({device})")
    print(f"# {machine(device)}\n")
    for shape in SHAPES:
        tensors = make_inputs(shape, device)
        table = cases(*tensors)
        print(f"## {shape[0]:,} anchors x {shape[1]} classes ({shape[0] * shape[1]:,} elements)")
        print(
            f"| {'loss':28} | {'eager ms':>9} | {'× BCE':>6} |"
            + (f" {'compiled ms':>11} | {'× BCE':>6} |" if compile_ else "")
        )
        print(
            "|"
            + "-" * 30
            + "|"
            + "-" * 11
            + "|"
            + "-" * 8
            + "|"
            + ("-" * 13 + "|" + "-" * 8 + "|" if compile_ else "")
        )
        inner = max(1, 2_000_000 // (shape[0] * shape[1]))
        eager = median_times(
            {name: fwd_bwd_timer(fn, x, device, inner) for name, (fn, x) in table.items()}, repeats
        )
        compiled: dict[str, float] = {}
        if compile_:
            compiled = median_times(
                {
                    name: fwd_bwd_timer(
                        torch.compile(table[name][0]), table[name][1], device, inner
                    )
                    for name in COMPILED
                },
                repeats,
            )
        base, base_c = eager[BASELINE], compiled.get(BASELINE)
        for name, ms in eager.items():
            row = f"| {name:28} | {ms:9.2f} | {ms / base:6.2f} |"
            if compile_:
                row += (
                    f" {compiled[name]:11.2f} | {compiled[name] / base_c:6.2f} |"
                    if name in compiled
                    else f" {'':11} | {'':6} |"
                )
            print(row, flush=True)
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also time under torch.compile")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="default: cpu, then cuda as well when it is available",
    )
    args = parser.parse_args()
    devices = (
        [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    for device in devices:
        run(device, args.repeats, args.compile)


if __name__ == "__main__":
    main()
