"""Pretrain a backbone, the package's stand-in for ImageNet weights.

The three papers start their detectors from an ImageNet-pretrained ResNet; no such weights can be
downloaded here, and a detector trained from scratch needs a far longer schedule (He et al.,
"Rethinking ImageNet Pre-training", 2019), longer than the book's one-core runs can afford. This
module pretrains the ResNet on a classification task of its own and writes its weights for
:func:`imbalance.models.resnet_fpn` (``weights=``, the training config's ``model.pretrained``):

* the data are synthetic images drawn by the benchmark's generator with a **different seed**
  (:data:`PRETRAIN_SEED`) than the detection benchmark, so no detection image, train or val, is
  seen in pretraining (ImageNet and COCO share classes, not images; so do these);
* the task is multi-label classification: which classes appear in the image (a sigmoid per class
  on the globally pooled last stage, binary cross-entropy); the labels are image-level, the boxes
  are never used;
* the images are normalised as the detectors normalise theirs (ImageNet's mean and std) and
  flipped at random; AdamW with a linear warm-up and a cosine decay.

The weight file records its architecture and provenance (command, commit, date, device, the data,
the schedule and the held-out mean AP of the classifier)::

    python -m imbalance.train.pretrain --out weights/resnet18-w32-gn.pt --width 32 --steps 3000
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm.auto import tqdm

from imbalance.models.backbones import NORMS, RESNETS, resnet, save_backbone_weights
from imbalance.train.config import load_config
from imbalance.train.data import ensure_synthetic
from imbalance.train.provenance import command_line, git_state, utc_now, versions

PRETRAIN_SEED = 1000  # the detection benchmark's seed is 0; these images are other images
IMAGE_MEAN = (0.485, 0.456, 0.406)  # torchvision's GeneralizedRCNNTransform defaults
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainConfig:
    """What :func:`pretrain` does.

    Attributes:
        backbone, width, norm: the ResNet (:func:`imbalance.models.backbones.resnet`).
        image_size: side of the synthetic images (the detection protocol's 128).
        train_images, val_images: images drawn for training and for the held-out mean AP.
        steps, batch_size: the schedule.
        lr, weight_decay, warmup: AdamW's rate (peak, after a linear warm-up of ``warmup`` steps,
            then a cosine decay to 0) and decoupled weight decay.
        seed: the synthetic data's seed (:data:`PRETRAIN_SEED`) and, plus one, the model's.
        threads: CPU threads (``torch.set_num_threads``).
    """

    backbone: str = "resnet18"
    width: int = 32
    norm: str = "gn"
    image_size: int = 128
    train_images: int = 8000
    val_images: int = 500
    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 100
    seed: int = PRETRAIN_SEED
    threads: int = 1

    def check(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.backbone not in RESNETS:
            raise ValueError(f"backbone must be one of {RESNETS}, got {self.backbone!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        for name in ("width", "image_size", "train_images", "val_images", "steps",
                     "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup must be in [0, steps), got {self.warmup!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed!r}")


def synthetic_images(config: PretrainConfig, progress: bool = True) -> Path:
    """Draw (once, into the synthetic cache) the images of the pretraining task."""
    knobs = {"image_size": config.image_size, "train_images": config.train_images,
             "val_images": config.val_images}
    train_config = load_config({"preset": "protocol", "model": {"pretrained": None},
                                "data": {"synthetic_seed": config.seed, "knobs": knobs}})
    return ensure_synthetic(train_config, progress=progress)


def multi_label_set(root: Path, split: str, num_classes: int | None = None
                    ) -> tuple[Tensor, Tensor]:
    """The images of ``split`` as ``uint8[N, 3, H, W]`` and their labels as ``float32[N, K]``:
    1 where the class has at least one (labelled) object in the image."""
    coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text("utf-8"))
    categories = sorted(c["id"] for c in coco["categories"])
    if num_classes is not None and len(categories) != num_classes:
        raise ValueError(f"{root} has {len(categories)} classes, expected {num_classes}")
    column = {c: i for i, c in enumerate(categories)}
    images = sorted(coco["images"], key=lambda im: im["id"])
    row = {im["id"]: i for i, im in enumerate(images)}
    labels = torch.zeros(len(images), len(categories))
    for ann in coco["annotations"]:
        labels[row[ann["image_id"]], column[ann["category_id"]]] = 1.0
    pixels = np.stack([np.asarray(Image.open(root / split / im["file_name"]).convert("RGB"))
                       for im in images])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels


def normalise(images: Tensor) -> Tensor:
    """``uint8[B, 3, H, W]`` to float, normalised as the detectors normalise their input."""
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Mean over classes of the average precision of ranking images by score (classes with no
    positive image are skipped); ``scores`` and ``labels`` are ``[N, K]``."""
    aps = []
    for k in range(labels.shape[1]):
        y = labels[:, k][torch.argsort(scores[:, k], descending=True, stable=True)]
        if y.sum() == 0:
            continue
        hits = torch.cumsum(y, 0)
        precision = hits / torch.arange(1, len(y) + 1)
        aps.append(float((precision * y).sum() / y.sum()))
    return float(np.mean(aps)) if aps else float("nan")


def learning_rate(config: PretrainConfig, step: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then a cosine decay to 0 at ``steps``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    t = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 64) -> float:
    """The classifier's mean AP on ``images`` (see :func:`average_precision`)."""
    model.eval()
    scores = torch.cat([model(normalise(images[i:i + batch_size]))
                        for i in range(0, len(images), batch_size)])
    model.train()
    return average_precision(scores, labels)


def pretrain(config: PretrainConfig, out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Pretrain the backbone and write its weights to ``out``; returns their provenance."""
    config.check()
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    root = synthetic_images(config, progress=progress)
    train_x, train_y = multi_label_set(root, "train")
    val_x, val_y = multi_label_set(root, "val", train_y.shape[1])
    torch.manual_seed(config.seed + 1)
    model = resnet(config.backbone, config.norm, config.width)
    model.fc = nn.Linear(model.fc.in_features, train_y.shape[1])
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    order = torch.Generator().manual_seed(config.seed + 2)
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc="pretrain", disable=not progress, mininterval=5)
    for step in bar:
        index = torch.randint(len(train_x), (config.batch_size,), generator=order)
        x = normalise(train_x[index])
        flip = torch.rand(config.batch_size, generator=order) < 0.5
        x[flip] = x[flip].flip(-1)
        loss = F.binary_cross_entropy_with_logits(model(x), train_y[index])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the pretraining loss is {loss.item()} at step {step}")
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    val_ap = evaluate(model, val_x, val_y)
    provenance = {"command": command_line(), "git": git_state(), "date": utc_now(),
                  "versions": versions(), "device": f"cpu ({platform.processor() or 'cpu'}), "
                  f"{config.threads} thread(s)", "config": asdict(config),
                  "data": {"generator_seed": config.seed, "root": str(root)},
                  "final_train_loss": float(np.mean(losses[-100:])), "val_mean_ap": val_ap,
                  "wall_s": round(time.perf_counter() - start, 1)}
    architecture = {"backbone": config.backbone, "width": config.width, "norm": config.norm}
    save_backbone_weights(out, model, architecture, provenance)
    return provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imbalance.train.pretrain",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the weight file to write")
    defaults = PretrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    fields = {k: getattr(args, k) for k in asdict(defaults)}
    try:
        provenance = pretrain(PretrainConfig(**fields), args.out, progress=not args.no_progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: provenance[k] for k in ("val_mean_ap", "final_train_loss", "wall_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
