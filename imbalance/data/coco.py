"""Read any COCO-format detection dataset into what torchvision detection models take.

:func:`load_coco` reads and checks an annotation file once, up front; every problem it finds is
an :class:`AnnotationError` naming the file and the image or annotation at fault.
:class:`CocoDetection` serves ``(image, target)`` pairs; :func:`collate` batches them.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

Target = dict[str, Any]
Transform = Callable[[Any, Target], tuple[Any, Target]]


class AnnotationError(ValueError):
    """A COCO annotation file is malformed or disagrees with its images."""


@dataclass
class CocoAnnotations:
    """A checked COCO annotation file.

    Attributes:
        path: the annotation file.
        image_dir: the folder the images' ``file_name`` is relative to.
        images: the ``images`` records, in file order.
        annotations: image id → that image's annotation records (crowd ones included).
        categories: the ``categories`` records, sorted by id.
        info: the file's ``info`` record ({} if absent).
    """

    path: Path
    image_dir: Path
    images: list[dict]
    annotations: dict[int, list[dict]]
    categories: list[dict]
    info: dict = field(default_factory=dict)

    @property
    def category_ids(self) -> list[int]:
        """The COCO category ids, sorted; label ``i + 1`` is ``category_ids[i]``."""
        return [c["id"] for c in self.categories]

    @property
    def category_names(self) -> dict[int, str]:
        """COCO category id → name."""
        return {c["id"]: c["name"] for c in self.categories}


def _fail(path: Path, what: str) -> AnnotationError:
    return AnnotationError(f"{path}: {what}")


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise _fail(path, "annotation file not found") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(path, f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object at the top, found {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"missing or non-list '{key}'")
    return data


def _require(path: Path, record: Any, keys: Sequence[str], what: str) -> None:
    if not isinstance(record, dict):
        raise _fail(path, f"{what} is not a JSON object: {record!r}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise _fail(path, f"{what} lacks {missing}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_coco(annotation_file: str | os.PathLike, image_dir: str | os.PathLike | None = None, *,
              check_files: bool = True, tolerance: float = 1.0,
              strict: bool = True) -> CocoAnnotations:
    """Read and check a COCO annotation file.

    Checks: the file exists and is well-formed JSON with ``images``, ``annotations`` and
    ``categories``; ids are unique; each image's file exists in ``image_dir`` (when
    ``check_files``); each annotation names a known image and a known category, and its
    ``bbox`` [x, y, w, h] has w > 0, h > 0 and lies inside its image, up to ``tolerance`` pixels
    (boxes within the tolerance are clipped to the image). Crowd annotations (``iscrowd`` = 1)
    are checked for their image and category only. Images with no annotations are valid.

    Args:
        annotation_file: the JSON file.
        image_dir: the folder of the images; defaults to the annotation file's folder.
        check_files: whether to check that every image file exists.
        tolerance: how far, in pixels, a box may stick out of its image before it is an error.
        strict: raise on a bad box; if False, drop the annotation and warn once with the count
            (for real-world files with a few degenerate boxes). Other problems always raise.

    Raises:
        AnnotationError: naming the file and the image or annotation at fault.
    """
    path = Path(annotation_file)
    image_dir = Path(image_dir) if image_dir is not None else path.parent
    data = _read_json(path)

    categories = []
    for c in data["categories"]:
        _require(path, c, ("id", "name"), f"category {c.get('id') if isinstance(c, dict) else c}")
        categories.append(c)
    cat_ids = [c["id"] for c in categories]
    for c in categories:
        if isinstance(c["id"], bool) or not isinstance(c["id"], int):
            raise _fail(path, f"category {c['name']!r} has id {c['id']!r}; COCO category ids "
                              f"are integers")
    if not categories:
        raise _fail(path, "has no categories: a detector needs at least one class")
    if len(set(cat_ids)) != len(cat_ids):
        raise _fail(path, f"duplicate category ids in {sorted(cat_ids)}")
    categories.sort(key=lambda c: c["id"])

    if check_files and not image_dir.is_dir():
        raise _fail(path, f"image folder {image_dir} does not exist")
    listing: set[str] | None = None
    images, sizes = [], {}
    for im in data["images"]:
        what = f"image id {im.get('id') if isinstance(im, dict) else im}"
        _require(path, im, ("id", "file_name", "width", "height"), what)
        if im["id"] in sizes:
            raise _fail(path, f"duplicate image id {im['id']}")
        if not (_number(im["width"]) and _number(im["height"]) and im["width"] > 0
                and im["height"] > 0):
            raise _fail(path, f"{what} has invalid size {im['width']}x{im['height']}")
        if check_files:
            name = im["file_name"]
            if "/" in name or os.sep in name:
                exists = (image_dir / name).is_file()
            else:
                if listing is None:
                    listing = set(os.listdir(image_dir))
                exists = name in listing
            if not exists:
                raise _fail(path, f"{what}: image file {image_dir / name} is missing")
        sizes[im["id"]] = (im["width"], im["height"])
        images.append(im)

    known = set(cat_ids)
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in images}
    seen: set[Any] = set()
    dropped: list[str] = []
    for ann in data["annotations"]:
        what = f"annotation id {ann.get('id') if isinstance(ann, dict) else ann}"
        _require(path, ann, ("id", "image_id", "category_id", "bbox"), what)
        if ann["id"] in seen:
            raise _fail(path, f"duplicate annotation id {ann['id']}")
        seen.add(ann["id"])
        if ann["image_id"] not in sizes:
            raise _fail(path, f"{what} refers to unknown image id {ann['image_id']}")
        what += f" (image id {ann['image_id']})"
        if ann["category_id"] not in known:
            raise _fail(path, f"{what} has unknown category id {ann['category_id']}; "
                              f"the categories are {sorted(known)}")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            raise _fail(path, f"{what} has malformed bbox {box!r}; expected [x, y, w, h]")
        if not ann.get("iscrowd", 0):
            x, y, w, h = box
            width, height = sizes[ann["image_id"]]
            problem = None
            if w <= 0 or h <= 0:
                problem = f"{what} has a box with no area: bbox {box}"
            elif x < -tolerance or y < -tolerance or x + w > width + tolerance or (
                    y + h > height + tolerance):
                problem = f"{what}: bbox {box} lies outside its {width}x{height} image"
            if problem is not None:
                if strict:
                    raise _fail(path, problem)
                dropped.append(problem)
                continue
        by_image[ann["image_id"]].append(ann)
    if dropped:
        warnings.warn(f"{path}: dropped {len(dropped)} annotations with bad boxes, the first: "
                      f"{dropped[0]}", stacklevel=2)
    return CocoAnnotations(path, image_dir, images, by_image, categories, data.get("info") or {})


def _split_paths(root: Path, split_or_annotation_file: str | os.PathLike,
                 image_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    spec = Path(split_or_annotation_file)
    if spec.suffix == ".json":
        ann = spec if spec.is_absolute() or spec.exists() else root / spec
        return ann, Path(image_dir) if image_dir is not None else root
    split = str(split_or_annotation_file)
    ann = root / "annotations" / f"instances_{split}.json"
    return ann, Path(image_dir) if image_dir is not None else root / split


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection dataset, as torchvision detection models take it.

    Two layouts:

    * ``CocoDetection(root, "train")``: ``root/annotations/instances_train.json`` with images in
      ``root/train`` (the benchmark's layout, and COCO 2017's with split ``"val2017"``);
    * ``CocoDetection(image_folder, "path/to/instances.json")``: images in ``image_folder``.

    Item ``i`` is ``(image, target)``: the image a float32 tensor (3, H, W) in [0, 1] (unless the
    transforms return something else) and the target a dict with ``boxes`` float32 (N, 4) in
    (x1, y1, x2, y2) pixels, ``labels`` int64 (N,) in 1..K (0 is the background, as torchvision
    detection models expect), ``image_id`` (int) and ``orig_size`` int64 (2,) = (H, W) before any
    transform. Crowd annotations are left out of the targets.

    The annotation file is checked on construction (see :func:`load_coco`).

    Args:
        root: the dataset folder, or the image folder when an annotation file is given.
        split_or_annotation_file: a split name, or the path of a ``.json`` annotation file
            (relative paths are tried as given, then under ``root``).
        transforms: a callable ``(image, target) -> (image, target)``, e.g. from
            :mod:`imbalance.data.transforms`; it gets a PIL image. A PIL image it returns is
            converted to a tensor.
        image_dir: overrides the image folder.
        check_files: check every image file exists on construction.
        strict: raise on bad boxes (the default), or drop them with a warning; see
            :func:`load_coco`.
    """

    def __init__(self, root: str | os.PathLike, split_or_annotation_file: str | os.PathLike,
                 transforms: Transform | None = None, *, image_dir: str | os.PathLike | None = None,
                 check_files: bool = True, strict: bool = True) -> None:
        ann_file, images = _split_paths(Path(root), split_or_annotation_file, image_dir)
        self.coco = load_coco(ann_file, images, check_files=check_files, strict=strict)
        self.transforms = transforms
        self.ids: list[int] = [im["id"] for im in self.coco.images]
        self.cat_id_to_label: dict[int, int] = {
            c: i + 1 for i, c in enumerate(self.coco.category_ids)}
        self.label_to_cat_id: dict[int, int] = {v: k for k, v in self.cat_id_to_label.items()}
        names = self.coco.category_names
        self.class_names: list[str] = ["__background__"]
        self.class_names += [names[c] for c in self.label_to_cat_id.values()]

    @property
    def annotation_file(self) -> Path:
        """The annotation file, for :func:`imbalance.evaluation.coco_evaluate`."""
        return self.coco.path

    @property
    def num_classes(self) -> int:
        """K, the number of categories: labels are 1..K, so a model needs K + 1 classes."""
        return len(self.label_to_cat_id)

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """The file of image ``index``."""
        return self.coco.image_dir / self.coco.images[index]["file_name"]

    def target(self, index: int) -> Target:
        """The target of image ``index`` in original image coordinates, without loading it."""
        info = self.coco.images[index]
        anns = [a for a in self.coco.annotations[info["id"]] if not a.get("iscrowd", 0)]
        width, height = info["width"], info["height"]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(0, width)
        boxes[:, 1::2].clamp_(0, height)
        labels = torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns],
                              dtype=torch.int64)
        return {"boxes": boxes, "labels": labels, "image_id": info["id"],
                "orig_size": torch.tensor([height, width], dtype=torch.int64)}

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        path = self.image_path(index)
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except FileNotFoundError:
            raise _fail(self.coco.path, f"image id {self.ids[index]}: image file {path} is "
                                        "missing") from None
        except (OSError, SyntaxError, ValueError) as e:  # truncated or not an image (PIL)
            raise _fail(self.coco.path, f"image id {self.ids[index]}: image file {path} cannot "
                                        f"be read ({e}); it is truncated or not an image: "
                                        f"make the dataset again") from None
        target = self.target(index)
        if image.size != (self.coco.images[index]["width"], self.coco.images[index]["height"]):
            raise _fail(self.coco.path, f"image id {self.ids[index]}: {path} is "
                                        f"{image.size[0]}x{image.size[1]}, the file says "
                                        f"{self.coco.images[index]['width']}x"
                                        f"{self.coco.images[index]['height']}")
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        if isinstance(image, Image.Image):
            image = TF.to_dtype(TF.pil_to_tensor(image), torch.float32, scale=True)
        return image, target


def collate(batch: Sequence[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Batch ``(image, target)`` pairs as two lists, the form torchvision detection models take."""
    images, targets = [], []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets
