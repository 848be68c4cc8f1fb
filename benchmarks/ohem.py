"""OHEM's choice of one image's minibatch: NMS on a prefix against NMS over every anchor.

    python benchmarks/ohem.py [--repeats 7] [--anchors 12276 120000]

:func:`imbalance.ohem.hard_examples` runs greedy NMS on the highest-loss examples only, doubling
the prefix until it yields the minibatch (exact: the result equals NMS over all, which the
tests check). This measures both side by side, in one run, on detection-like anchors (a grid
of boxes of several sizes and aspect ratios, as RetinaNet's) with random losses, and prints the
median times and their ratio, per minibatch size and setting. The anchor counts are the
protocol's 128-pixel images (12,276) and a COCO-sized image (about 120,000).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from functools import partial

import torch
from torchvision.ops import nms

from imbalance.ohem import hard_examples


def anchors(n: int, seed: int = 0) -> torch.Tensor:
    """About ``n`` anchor boxes on a square grid: 9 shapes per location."""
    side = max(1, round((n / 9) ** 0.5))
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    centres = torch.stack([xs, ys], -1).reshape(-1, 1, 2).float() * 8 + 4
    sizes = torch.tensor([16.0, 20.2, 25.4])
    ratios = torch.tensor([0.5, 1.0, 2.0])
    w = (sizes[:, None] / ratios.sqrt()[None]).reshape(-1)
    h = (sizes[:, None] * ratios.sqrt()[None]).reshape(-1)
    half = torch.stack([w, h], -1)[None] / 2
    return torch.cat([centres - half, centres + half], -1).reshape(-1, 4)


def full_nms(loss, boxes, candidate, batch_size, threshold):
    order = candidate.nonzero().squeeze(1)
    order = order[torch.sort(loss[order], descending=True, stable=True).indices]
    ranks = torch.arange(order.numel(), 0, -1, dtype=torch.float32)
    return order[nms(boxes[order], ranks, threshold)][:batch_size].sort().values


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--anchors", type=int, nargs="+", default=[12_276, 120_000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{platform.processor() or platform.machine()}, 1 thread, torch {torch.__version__}")
    print(f"{'anchors':>8} {'B':>5} {'NMS':>4} {'prefix (ms)':>12} {'all (ms)':>10} {'ratio':>7}")
    for n in args.anchors:
        boxes = anchors(n)
        g = torch.Generator().manual_seed(0)
        loss = torch.rand(boxes.shape[0], generator=g) ** 8  # a few high losses, many low
        candidate = torch.rand(boxes.shape[0], generator=g) > 0.05
        positive = torch.zeros(boxes.shape[0], dtype=torch.bool)
        for batch_size in (128, 512):
            for threshold in (0.5, 0.7):
                mine = partial(hard_examples, loss, boxes, candidate, positive, batch_size,
                               threshold)
                reference = partial(full_nms, loss, boxes, candidate, batch_size, threshold)
                prefix = median_time(mine, args.repeats)
                every = median_time(reference, args.repeats)
                assert torch.equal(mine(), reference())  # the same minibatch
                print(f"{boxes.shape[0]:8d} {batch_size:5d} {threshold:4.1f} "
                      f"{1e3 * prefix:12.2f} {1e3 * every:10.2f} {every / prefix:7.1f}")


if __name__ == "__main__":
    main()
