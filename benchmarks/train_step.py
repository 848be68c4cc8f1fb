"""Training-step throughput of our detectors against torchvision's, measured side by side.

    python benchmarks/train_step.py [--device cpu|cuda] [--amp] [--channels-last]
                                    [--batch 2] [--size 256] [--backbone resnet18] [--rounds 5]
                                    [--threads N]

Rows (images/s of a full step: forward, loss, backward, SGD update):

* torchvision's stock ``RetinaNet`` (its focal loss, per-image normalisation, K + 1 outputs) on
  the same backbone, FPN, head, anchors, input size and batch as ours;
* our RetinaNet with focal + L1 (the same losses as the stock one), focal + smooth L1, and
  GHM-C + GHM-R;
* the Faster R-CNN + FPN baseline (``libra_rcnn`` with every part off) and Libra R-CNN.

On a shared or busy CPU, ``--threads 1`` keeps the threads of one step from fighting over the
cores (and the ratios from measuring that fight). Each model runs two warm-up steps, then the
models take turns, ``--steps`` steps per turn for ``--rounds`` turns; the table gives the median
step time. Targets: our focal RetinaNet at least 1.0x torchvision's, the GHM variant at least
0.9x our focal, Libra's step at most 1.15x the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torchvision.models.detection import retinanet as tv_retinanet

from imbalance.models import libra_rcnn, retinanet
from imbalance.models.backbones import norm_layer

NUM_CLASSES = 6


def make_batch(batch: int, size: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, size, size, generator=g).to(device))
        n = int(torch.randint(3, 9, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * size * 0.7
        wh = (0.05 + torch.rand(n, 2, generator=g) * 0.25) * size
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1)
        labels = torch.randint(1, NUM_CLASSES + 1, (n,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def stock_retinanet(ours: torch.nn.Module) -> torch.nn.Module:
    """torchvision's RetinaNet with our model's backbone, anchors and head layout, K + 1 classes."""
    head = tv_retinanet.RetinaNetHead(
        ours.backbone.out_channels, ours.anchor_generator.num_anchors_per_location()[0],
        NUM_CLASSES + 1, norm_layer=norm_layer("gn", 32))
    head.regression_head._loss_type = "l1"
    return tv_retinanet.RetinaNet(
        ours.backbone, NUM_CLASSES + 1, min_size=ours.transform.min_size[0],
        max_size=ours.transform.max_size, anchor_generator=ours.anchor_generator, head=head)


def models(args) -> dict[str, torch.nn.Module]:
    common = {"backbone": args.backbone, "min_size": args.size, "max_size": args.size}
    torch.manual_seed(0)
    focal_l1 = retinanet(NUM_CLASSES, **common, cls_loss="focal", box_loss="l1")
    stock = stock_retinanet(retinanet(NUM_CLASSES, **common, cls_loss="focal", box_loss="l1"))
    small = {"rpn_post_nms_top_n_train": 500, "box_batch_size_per_image": 128}
    return {
        "RetinaNet, torchvision (focal + L1)": stock,
        "RetinaNet, ours: focal + L1": focal_l1,
        "RetinaNet, ours: focal + smooth L1": retinanet(NUM_CLASSES, **common),
        "RetinaNet, ours: GHM-C + GHM-R": retinanet(NUM_CLASSES, **common, cls_loss="ghm_c",
                                                    box_loss="ghm_r"),
        "Faster R-CNN + FPN (baseline)": libra_rcnn(NUM_CLASSES, **common, iou_balanced=False,
                                                    bfp=False, balanced_l1=False, **small),
        "Libra R-CNN (all three)": libra_rcnn(NUM_CLASSES, **common, **small),
    }


def step_fn(model: torch.nn.Module, batch, args) -> Callable[[], None]:
    device = torch.device(args.device)
    model.to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images, targets = batch
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if args.amp
           else contextlib.nullcontext())

    def step() -> None:
        with amp:
            loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    batch = make_batch(args.batch, args.size, args.device)
    steps = {name: step_fn(m, batch, args) for name, m in models(args).items()}
    for step in steps.values():
        for _ in range(2):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)

    med = {name: statistics.median(t) for name, t in times.items()}
    device = (torch.cuda.get_device_name() if args.device == "cuda"
              else f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} threads")
    print(f"# {device}; torch {torch.__version__}, torchvision {torchvision.__version__}; "
          f"batch {args.batch} x {args.size}px, {args.backbone}, amp={args.amp}, "
          f"channels_last={args.channels_last}; median of {args.rounds} rounds x "
          f"{args.steps} steps")
    names = list(med)
    stock, focal, ghm = med[names[0]], med[names[1]], med[names[3]]
    base, libra = med[names[4]], med[names[5]]
    print("| model | step (ms) | images/s | ratio |")
    print("|---|---|---|---|")
    ratios = {names[1]: ("× torchvision's speed", stock / focal),
              names[2]: ("× torchvision's speed", stock / med[names[2]]),
              names[3]: ("× our focal + L1 speed", focal / ghm),
              names[5]: ("× baseline step time", libra / base)}
    for name, t in med.items():
        what, r = ratios.get(name, ("", None))
        ratio = f"{r:.2f} {what}" if r is not None else ""
        print(f"| {name} | {t * 1e3:.0f} | {args.batch / t:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
