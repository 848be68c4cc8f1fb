"""The cost of a training step under the book's presets, measured side by side.

    python benchmarks/protocol_step.py [--presets cpu protocol_scratch protocol] [--rounds 5]

For each preset and model (RetinaNet with focal loss and smooth L1; the Faster R-CNN baseline)
the model is built from ``configs/<model>_<preset>.yaml`` exactly as a run builds it (backbone,
FPN width, image size, RoI and proposal counts), and a step (forward, loss, backward, SGD
update) on a batch of the preset's size and resolution is timed; the presets take turns,
``--steps`` steps per turn for ``--rounds`` turns, and the table gives the median step, the
images per second, and each step's cost relative to the first preset's. ``--threads 1`` is how
the protocol runs (one core per run, two runs side by side).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import make_batch  # noqa: E402

from imbalance.models import build_model  # noqa: E402
from imbalance.train import load_config  # noqa: E402
from imbalance.train.config import model_kwargs  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {"RetinaNet, focal + smooth L1": ("retinanet_focal", []),
          "Faster R-CNN (beta 1)": ("libra_rcnn", ["model.iou_balanced=false", "model.bfp=false",
                                                   "model.balanced_l1=false"])}
NUM_CLASSES = 6


def step_fn(base: str, preset: str, overrides: list[str]) -> tuple[Callable[[], None], str]:
    config = load_config(CONFIGS / f"{base}_{preset}.yaml", overrides)
    torch.manual_seed(0)
    model = build_model(config.model.name, NUM_CLASSES, **model_kwargs(config)).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images, targets = make_batch(config.data.batch_size, config.data.min_size, "cpu")

    def step() -> None:
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    o = config.model.options
    m = config.model
    backbone = m.backbone + (f" width {m.backbone_width}" if m.backbone_width != 64 else "")
    if m.frozen_stages:
        backbone += f" (stem + {m.frozen_stages} stage(s) frozen)"
    what = (f"{backbone}, FPN {config.model.fpn_channels}, "
            f"{config.data.batch_size} x {config.data.min_size} px")
    if config.model.name == "libra_rcnn":
        what += (f", {o.get('box_batch_size_per_image', 512)} RoIs, "
                 f"{o.get('rpn_post_nms_top_n_train', 2000)} proposals, box head "
                 f"{o.get('representation_size', 1024)}")
    return step, what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu", "protocol_scratch", "protocol"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps, what = {}, {}
    for label, (base, overrides) in MODELS.items():
        for preset in args.presets:
            steps[(label, preset)], what[(label, preset)] = step_fn(base, preset, overrides)
    for step in steps.values():
        for _ in range(2):
            step()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[key].append((time.perf_counter() - t0) / args.steps)
    med = {key: statistics.median(t) for key, t in times.items()}
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s); "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}; median of "
          f"{args.rounds} rounds x {args.steps} steps")
    print("| model | preset | setting | step (ms) | images/s | × the first preset's step |")
    print("|---|---|---|---|---|---|")
    for (label, preset), t in med.items():
        first = med[(label, args.presets[0])]
        batch = int(what[(label, preset)].split(", ")[2].split(" x ")[0])
        print(f"| {label} | {preset} | {what[(label, preset)]} | {t * 1e3:.0f} | "
              f"{batch / t:.1f} | {t / first:.2f} |")


if __name__ == "__main__":
    main()
