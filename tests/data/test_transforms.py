"""Transforms keep boxes right: known boxes, and boxes drawn into the image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from imbalance.data.coco import CocoDetection
from imbalance.data.transforms import (
    Compose,
    Normalize,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    detection_transforms,
    resize_scale,
)

BOX = [40.0, 20.0, 100.0, 60.0]  # x1, y1, x2, y2 in a 200 (wide) x 100 (high) image


def boxed_image(box: list[float] = BOX, height: int = 100, width: int = 200) -> Image.Image:
    """A black image with a white rectangle filling exactly ``box``'s pixels."""
    arr = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    arr[y1:y2, x1:x2] = 255
    return Image.fromarray(arr)


def target(box: list[float] = BOX) -> dict:
    return {"boxes": torch.tensor([box]), "labels": torch.tensor([3]), "image_id": 7}


def bright_box(image: torch.Tensor | Image.Image) -> list[float]:
    """x1, y1, x2, y2 of the pixels brighter than half."""
    arr = image.mean(0).numpy() if isinstance(image, torch.Tensor) else np.asarray(image).mean(2)
    if arr.max() > 1.5:
        arr = arr / 255
    ys, xs = np.nonzero(arr > 0.5)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_resize_to_a_fixed_size_scales_a_known_box() -> None:
    image, out = Resize((50, 100))(boxed_image(), target())
    assert image.size == (100, 50)
    assert out["boxes"].tolist() == [[20.0, 10.0, 50.0, 30.0]]
    assert bright_box(image) == pytest.approx(out["boxes"][0].tolist(), abs=1)
    assert out["labels"].tolist() == [3] and out["image_id"] == 7


@pytest.mark.parametrize(("min_size", "max_size"), [(50, 80), (150, 1000), (64, None)])
def test_min_max_resize_matches_torchvision(min_size: int, max_size: int | None) -> None:
    tensor, t = ToTensor()(boxed_image(), target())
    ours_image, ours = Resize(min_size=min_size, max_size=max_size)(tensor, t)
    tv = GeneralizedRCNNTransform(min_size, max_size or 10**6, [0.0] * 3, [1.0] * 3).eval()
    tv_image, tv_target = tv.resize(tensor, {"boxes": t["boxes"].clone()})
    assert ours_image.shape == tv_image.shape
    assert torch.allclose(ours["boxes"], tv_target["boxes"], atol=1e-4)
    scale = resize_scale(100, 200, min_size, max_size)
    assert ours_image.shape[-2:] == (int(100 * scale), int(200 * scale))
    assert bright_box(ours_image) == pytest.approx(ours["boxes"][0].tolist(), abs=1)


def test_flip_mirrors_a_known_box() -> None:
    image, out = RandomHorizontalFlip(p=1.0)(boxed_image(), target())
    assert out["boxes"].tolist() == [[100.0, 20.0, 160.0, 60.0]]
    assert bright_box(image) == out["boxes"][0].tolist()
    tensor, t = ToTensor()(boxed_image(), target())
    flipped, out = RandomHorizontalFlip(p=1.0)(tensor, t)
    assert bright_box(flipped) == out["boxes"][0].tolist() == [100.0, 20.0, 160.0, 60.0]
    _, same = RandomHorizontalFlip(p=0.0)(tensor, t)
    assert same["boxes"].tolist() == [BOX]


def test_flips_are_reproducible_with_a_generator() -> None:
    def flips(seed: int) -> list[bool]:
        flip = RandomHorizontalFlip(0.5, torch.Generator().manual_seed(seed))
        return [flip(boxed_image(), target())[1]["boxes"][0, 0].item() != BOX[0]
                for _ in range(32)]

    assert flips(1) == flips(1)
    assert 0 < sum(flips(1)) < 32


def test_transforms_do_not_change_their_input() -> None:
    t = target()
    Compose([Resize(50), RandomHorizontalFlip(1.0)])(boxed_image(), t)
    assert t["boxes"].tolist() == [BOX]


def test_to_tensor_and_normalize() -> None:
    image, out = ToTensor()(boxed_image(), target())
    assert image.dtype == torch.float32 and image.shape == (3, 100, 200)
    assert image.min() == 0.0 and image.max() == 1.0
    norm, out2 = Normalize([0.5] * 3, [0.25] * 3)(image, out)
    assert torch.allclose(norm, (image - 0.5) / 0.25)
    assert out2["boxes"].tolist() == [BOX]
    with pytest.raises(TypeError, match="ToTensor"):
        Normalize()(boxed_image(), target())


def test_resize_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Resize()
    with pytest.raises(ValueError):
        Resize(64, min_size=32)


def test_a_pipeline_on_the_dataset_keeps_boxes_on_the_objects(tiny_root: Path) -> None:
    plain = CocoDetection(tiny_root, "val")
    pipeline = detection_transforms(train=True, min_size=200, max_size=400, flip=1.0)
    resized = CocoDetection(tiny_root, "val", transforms=pipeline)
    image, t = plain[0]
    big, tb = resized[0]
    assert big.shape[-2:] == (200, 200)
    scale = 200 / image.shape[-1]
    expected = t["boxes"] * scale
    expected[:, [0, 2]] = 200 - expected[:, [2, 0]]
    assert torch.allclose(tb["boxes"], expected, atol=1e-4)
    assert tb["orig_size"].tolist() == t["orig_size"].tolist()
