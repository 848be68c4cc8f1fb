"""A briefly trained detector, for the chapters that measure one.

The concept chapters measure what a detector's loss sees (the scores of easy negatives, the
gradient-norm histogram, the regression errors, the proposals' IoU). A detector at initialisation
would mislead them, and a full run is too slow for a chapter, so :func:`briefly_trained` trains
one for a short while on the ``tiny`` benchmark (well under a minute on two CPU cores) and caches
the weights on disk, keyed by every setting, so that the chapters share it. :func:`dense_outputs`
then collects the per-anchor outputs of a RetinaNet over a few images.

The cache lives in ``$IMBALANCE_CACHE`` (default ``~/.cache/imbalance``); files are written
atomically, so concurrent notebooks may train the same snapshot without harm.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from imbalance import __version__
from imbalance.data import CocoDetection, collate, make_dataset
from imbalance.models import build_model

SNAPSHOT_VERSION = 1
DEFAULT_MODEL_OPTIONS: dict[str, Any] = {
    "backbone": "resnet18", "norm": "gn", "fpn_channels": 64, "min_size": 128, "max_size": 128,
}


def cache_dir() -> Path:
    """``$IMBALANCE_CACHE`` or ``~/.cache/imbalance``."""
    return Path(os.environ.get("IMBALANCE_CACHE", Path.home() / ".cache" / "imbalance"))


@dataclass
class Snapshot:
    """A briefly trained detector.

    Attributes:
        model: the detector, in eval mode, on the CPU.
        data_root: the ``tiny`` benchmark it was trained on (``train`` split; ``val`` unseen).
        losses: per iteration, the loss terms (floats).
        settings: everything that determined the weights (the cache key).
    """

    model: nn.Module
    data_root: Path
    losses: list[dict[str, float]]
    settings: dict[str, Any]


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> dict[str, Any] | None:
    """A cached snapshot, or None if missing or unreadable (then it is trained again)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None


def _fits(net: nn.Module, state: dict[str, Tensor]) -> bool:
    """Whether ``state`` has exactly the model's keys and shapes (the code may have changed)."""
    own = net.state_dict()
    return own.keys() == state.keys() and all(own[k].shape == state[k].shape for k in own)


def _data(seed: int, knobs: dict[str, float]) -> Path:
    key = hashlib.sha256(json.dumps([seed, knobs], sort_keys=True).encode()).hexdigest()[:12]
    root = cache_dir() / "data" / f"tiny-{key}"
    if not (root / "annotations" / "instances_val.json").exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".tmp-"))
        make_dataset(tmp, "tiny", seed=seed, progress=False, **knobs)
        try:
            os.replace(tmp, root)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _train(model: nn.Module, data: CocoDetection, iterations: int, batch_size: int, lr: float,
           seed: int, progress: bool) -> list[dict[str, float]]:
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, iterations // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))
    history = []
    model.train()
    for _ in tqdm(range(iterations), desc="brief training", disable=not progress, leave=False):
        idx = torch.randperm(len(data), generator=gen)[:batch_size].tolist()
        images, targets = collate([data[i] for i in idx])
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 35.0)
        opt.step()
        sched.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    return history


def briefly_trained(model: str = "retinanet", iterations: int = 150, *, seed: int = 0,
                    data_seed: int = 0, batch_size: int = 4, lr: float = 0.01,
                    knobs: dict[str, float] | None = None, cache: bool = True,
                    progress: bool = True, **model_options: Any) -> Snapshot:
    """A ``model`` (``"retinanet"`` or ``"libra_rcnn"``) trained ``iterations`` steps on ``tiny``.

    SGD (momentum 0.9, weight decay 1e-4, linear warm-up over the first tenth, gradient clipping
    at 35 as in the GHM and Libra configs), batches of ``batch_size`` train images drawn with a
    generator seeded by ``seed``. ``model_options`` go to :func:`imbalance.models.build_model`
    over :data:`DEFAULT_MODEL_OPTIONS`; ``knobs`` to :func:`imbalance.data.make_dataset`.
    Deterministic for a given setting on a given machine; cached on disk unless ``cache=False``.
    """
    if iterations < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need iterations >= 0, batch_size >= 1 and lr > 0; got {iterations}, "
                         f"{batch_size}, {lr}")
    knobs = dict(knobs or {})
    root = _data(data_seed, knobs)
    data = CocoDetection(root, "train")
    options = {**DEFAULT_MODEL_OPTIONS, **model_options}
    settings = {"version": SNAPSHOT_VERSION, "imbalance": __version__, "model": model,
                "iterations": iterations, "seed": seed, "data_seed": data_seed,
                "batch_size": batch_size, "lr": lr,
                "knobs": knobs, "options": options, "torch": str(torch.__version__)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    path = cache_dir() / "snapshots" / f"{model}-{key[:16]}.pt"
    torch.manual_seed(seed)
    net = build_model(model, data.num_classes, **options)
    state = _load(path) if cache else None
    if state is not None and _fits(net, state["model"]):
        net.load_state_dict(state["model"])
        history = state["losses"]
    else:
        history = _train(net, data, iterations, batch_size, lr, seed, progress)
        if cache:
            _atomic_save({"model": net.state_dict(), "losses": history, "settings": settings},
                         path)
    return Snapshot(net.eval(), root, history, settings)


class DenseOutputs(NamedTuple):
    """A RetinaNet's outputs on the anchors of a set of images, concatenated over images.

    Attributes:
        logits (Tensor[N, K]): classification logits of the N valid (not ignored) anchors.
        targets (Tensor[N, K]): their one-hot targets (all-zero rows are negatives).
        deltas (Tensor[P, 4]): predicted box offsets of the P positive anchors.
        box_targets (Tensor[P, 4]): their target offsets (the box coder's encoding).
        positives, negatives, ignored (Tensor[I], int64): anchors per image in each role.
    """

    logits: Tensor
    targets: Tensor
    deltas: Tensor
    box_targets: Tensor
    positives: Tensor
    negatives: Tensor
    ignored: Tensor


@torch.no_grad()
def dense_outputs(model: nn.Module, dataset: CocoDetection, num_images: int = 8,
                  batch_size: int = 4) -> DenseOutputs:
    """Collect :meth:`RetinaNet.anchor_outputs` over the first ``num_images`` of ``dataset``."""
    if not hasattr(model, "anchor_outputs"):
        raise TypeError("dense_outputs needs an imbalance.models.retinanet model")
    num_images = min(num_images, len(dataset))
    parts: dict[str, list[Tensor]] = {f: [] for f in DenseOutputs._fields}
    for start in range(0, num_images, batch_size):
        images, targets = collate([dataset[i] for i in
                                   range(start, min(start + batch_size, num_images))])
        out = model.anchor_outputs(images, targets)
        t = out.targets
        parts["logits"].append(out.logits[t.valid])
        parts["targets"].append(t.cls_targets[t.valid])
        parts["deltas"].append(out.deltas[t.positive])
        parts["box_targets"].append(out.box_targets)
        parts["positives"].append(t.positive.sum(1))
        parts["negatives"].append((t.matched == -1).sum(1))
        parts["ignored"].append((~t.valid).sum(1))
    return DenseOutputs(*(torch.cat(parts[f]) for f in DenseOutputs._fields))


class Proposals(NamedTuple):
    """A two-stage detector's RPN proposals for one image, with its ground truth.

    Attributes:
        boxes (Tensor[R, 4], float): the proposals (x1, y1, x2, y2) after the RPN's NMS.
        gt_boxes (Tensor[G, 4], float): the image's boxes, in the same (resized) frame.
        gt_labels (Tensor[G], int64): their labels, 1..K.
    """

    boxes: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor


@torch.no_grad()
def rpn_proposals(model: nn.Module, dataset: CocoDetection, num_images: int = 8) -> list[Proposals]:
    """The RPN proposals a Faster R-CNN-style ``model`` makes for the first ``num_images``.

    The model's transform resizes the images and boxes first, as in ``forward``; the proposals
    are those the second stage would see at test time (``rpn_post_nms_top_n_test`` per image),
    before the ground-truth boxes are added in training.
    """
    if not hasattr(model, "rpn"):
        raise TypeError("rpn_proposals needs a two-stage model such as imbalance.models.libra_rcnn")
    return [Proposals(boxes, target["boxes"], target["labels"])
            for _, target, _, boxes in rpn_forward(model, dataset, num_images)]


@torch.no_grad()
def rpn_forward(model: nn.Module, dataset: CocoDetection, num_images: int = 8
                ) -> list[tuple[Any, dict[str, Tensor], dict[str, Tensor], Tensor]]:
    """The first stage of a Faster R-CNN-style ``model`` on the first ``num_images``, in eval
    mode (the model's mode is restored afterwards).

    Returns, per image, ``(images, target, features, proposals)``: the transformed
    ``ImageList`` of that one image, its target resized as the model resizes it, the backbone's
    feature maps and the RPN's proposals (Tensor[R, 4], ``rpn_post_nms_top_n_test`` of them).
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(min(num_images, len(dataset))):
            image, target = dataset[i]
            images_t, targets_t = model.transform([image], [dict(target)])
            features = model.backbone(images_t.tensors)
            boxes, _ = model.rpn(images_t, features)
            out.append((images_t, targets_t[0], features, boxes[0]))
    finally:
        model.train(was_training)
    return out


def main() -> None:
    """``python -m imbalance.snapshot``: train (or find) the default snapshots the chapters share.

    Run before executing the chapters in parallel (``make nbval`` does), so that they read the
    cache instead of training the same detector side by side.
    """
    for model in ("retinanet", "libra_rcnn"):
        snap = briefly_trained(model, progress=sys.stderr.isatty())  # no bar in CI logs
        last = snap.losses[-1] if snap.losses else {}
        print(f"{model}: {len(snap.losses)} iterations, last loss "
              f"{sum(last.values()):.3f}; cache {cache_dir()}")


if __name__ == "__main__":
    main()
