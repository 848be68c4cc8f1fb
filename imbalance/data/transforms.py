"""Detection transforms: each takes and returns ``(image, target)`` and keeps the boxes right.

The image is a PIL image or a tensor (C, H, W); ``target["boxes"]`` is float32 (N, 4) in
(x1, y1, x2, y2) pixels. Targets are copied, never changed in place; keys a transform does not
know pass through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from imbalance.data.coco import Target, Transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_size(image: Image.Image | Tensor) -> tuple[int, int]:
    """(height, width) of a PIL image or a tensor (..., H, W)."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    return int(image.shape[-2]), int(image.shape[-1])


def resize_scale(height: int, width: int, min_size: float, max_size: float | None = None) -> float:
    """The scale of torchvision's detection transform: the short side to ``min_size``, unless that
    takes the long side past ``max_size``."""
    scale = min_size / min(height, width)
    if max_size is not None:
        scale = min(scale, max_size / max(height, width))
    return scale


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: Target) -> tuple[Any, Target]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class ToTensor:
    """PIL image (or uint8 tensor) → float32 tensor (3, H, W) in [0, 1]; boxes unchanged."""

    def __call__(self, image: Image.Image | Tensor, target: Target) -> tuple[Tensor, Target]:
        if isinstance(image, Image.Image):
            image = TF.pil_to_tensor(image.convert("RGB"))
        return TF.to_dtype(image, torch.float32, scale=True), dict(target)

    def __repr__(self) -> str:
        return "ToTensor()"


class Resize:
    """Resize the image and scale its boxes by the same factors.

    Give either ``size`` (an int for a square, or (height, width)) for a fixed size, or
    ``min_size`` (and optionally ``max_size``) for torchvision's detection rule (see
    :func:`resize_scale`; the output size is floor(side * scale), as in
    ``GeneralizedRCNNTransform``). Boxes are scaled by new / old size on each axis.
    """

    def __init__(self, size: int | tuple[int, int] | None = None, *, min_size: int | None = None,
                 max_size: int | None = None) -> None:
        if (size is None) == (min_size is None):
            raise ValueError("Resize takes either size or min_size (with optional max_size)")
        if size is not None and max_size is not None:
            raise ValueError("max_size only goes with min_size")
        self.size = (size, size) if isinstance(size, int) else size
        self.min_size, self.max_size = min_size, max_size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the resized image."""
        if self.size is not None:
            return int(self.size[0]), int(self.size[1])
        scale = resize_scale(height, width, self.min_size, self.max_size)
        return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))

    def __call__(self, image: Image.Image | Tensor, target: Target) -> tuple[Any, Target]:
        height, width = image_size(image)
        new_h, new_w = self.output_size(height, width)
        target = dict(target)
        if (new_h, new_w) != (height, width):
            image = TF.resize(image, [new_h, new_w], antialias=True)
            if "boxes" in target:
                factors = torch.tensor([new_w / width, new_h / height] * 2, dtype=torch.float32)
                target["boxes"] = target["boxes"] * factors
        return image, target

    def __repr__(self) -> str:
        if self.size is not None:
            return f"Resize(size={self.size})"
        return f"Resize(min_size={self.min_size}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Flip the image left-right with probability ``p``; x1' = W - x2, x2' = W - x1.

    Args:
        p: the flip probability.
        generator: a torch.Generator for reproducible flips (the global one if None).
    """

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p={p} must be in [0, 1]")
        self.p = p
        self.generator = generator

    def __call__(self, image: Image.Image | Tensor, target: Target) -> tuple[Any, Target]:
        target = dict(target)
        if torch.rand((), generator=self.generator).item() < self.p:
            _, width = image_size(image)
            image = TF.horizontal_flip(image)
            if "boxes" in target:
                boxes = target["boxes"].clone()
                boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
                target["boxes"] = boxes
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """(image - mean) / std per channel, on a float tensor (3, H, W); boxes unchanged."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        self.mean, self.std = list(mean), list(std)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        if not isinstance(image, Tensor) or not image.is_floating_point():
            raise TypeError("Normalize needs a float tensor image; put ToTensor() before it")
        return TF.normalize(image, self.mean, self.std), dict(target)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def detection_transforms(train: bool, *, min_size: int | None = None,
                         max_size: int | None = None, flip: float = 0.5,
                         normalize: bool = False,
                         generator: torch.Generator | None = None) -> Compose:
    """The usual pipeline: [Resize] → [RandomHorizontalFlip when training] → ToTensor →
    [Normalize]. torchvision's detection models resize and normalise by themselves, so both are
    off unless asked for."""
    steps: list[Transform] = []
    if min_size is not None:
        steps.append(Resize(min_size=min_size, max_size=max_size))
    if train and flip > 0:
        steps.append(RandomHorizontalFlip(flip, generator))
    steps.append(ToTensor())
    if normalize:
        steps.append(Normalize())
    return Compose(steps)
