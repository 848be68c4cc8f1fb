"""A deterministic synthetic detection benchmark with a knob for every imbalance of the book.

Each image is a textured background with coloured shapes on it. Every class is one shape in one
colour of the Okabe–Ito palette; unlabelled distractors borrow either the shape or the colour of a
class. The knobs of :class:`SyntheticConfig` set

* foreground / background: ``objects_per_image``, ``small_fraction`` and ``image_size``;
* class imbalance: ``num_classes`` and ``class_exponent`` (Zipf: p(k) ∝ k^-exponent);
* easy / hard examples: ``distractors``, ``texture``, ``noise``, ``contrast`` and ``occlusion``;
* outliers: ``outlier_fraction`` of the train annotations get a wrong class or a badly shifted box.

Determinism: image ``i`` of split ``s`` is drawn from ``np.random.default_rng`` seeded with
``(seed, crc32(s), i)`` only, so the number of worker processes never changes the output, and the
same seed gives byte-identical PNG and JSON files.

Boxes: shapes are drawn at :data:`SUPERSAMPLE` times the resolution and downsampled with a Lanczos
filter. Each object's own alpha mask is kept, multiplied by the transparency of the objects drawn
after it (occlusion), and its box is the tight box of the pixels where that *visible* alpha is at
least :data:`VISIBLE_ALPHA`: the pixels whose colour is at least half the object's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

GENERATOR_VERSION = "1.0"
SUPERSAMPLE = 4
VISIBLE_ALPHA = 0.5
MIN_VISIBLE_FRACTION = 0.4  # an occluded object keeps at least this much of its alpha
SMALL_SIZE = (0.05, 0.12)  # object diameter as a fraction of the image side
LARGE_SIZE = (0.18, 0.40)
MIN_OBJECT_PIXELS = 6.0
MAX_PLACEMENT_TRIES = 30
SPLITS = ("train", "val")
_FILE_PATTERN = re.compile(r"^\d{6}\.png$")


@dataclass(frozen=True)
class ShapeClass:
    """One class of the benchmark: a shape drawn in one colour (RGB, 0..255)."""

    name: str
    colour: tuple[int, int, int]


# Okabe & Ito (2008), the colour-blind-safe palette; one shape and one colour per class.
CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("circle", (230, 159, 0)),
    ShapeClass("square", (86, 180, 233)),
    ShapeClass("triangle", (0, 158, 115)),
    ShapeClass("ring", (240, 228, 66)),
    ShapeClass("cross", (0, 114, 178)),
    ShapeClass("star", (213, 94, 0)),
    ShapeClass("hexagon", (204, 121, 167)),
    ShapeClass("crescent", (0, 0, 0)),
)
# Distractors: a class shape in one of these colours, or a class colour in one of these shapes.
DISTRACTOR_COLOURS: tuple[tuple[int, int, int], ...] = (
    (245, 245, 245),
    (128, 85, 60),
    (110, 110, 45),
    (150, 150, 205),
)
DISTRACTOR_SHAPES: tuple[str, ...] = ("bar", "arc")


@dataclass(frozen=True)
class SyntheticConfig:
    """The knobs of the benchmark. Every field is a CLI option: ``image_size`` is ``--image-size``.

    Attributes:
        image_size: side of the square images, in pixels.
        train_images: number of images in the ``train`` split.
        val_images: number of images in the ``val`` split.
        num_classes: K, the number of classes (shapes), 1..8.
        objects_per_image: mean of the Poisson number of objects per image.
        small_fraction: probability that an object is small (diameter ``SMALL_SIZE`` of the
            image side) rather than large (``LARGE_SIZE``).
        class_exponent: Zipf exponent s of the class frequencies, p(k) ∝ k^-s; 0 is balanced.
        distractors: mean of the Poisson number of unlabelled look-alike shapes per image.
        texture: amplitude of the smooth background texture (0 is a flat background).
        noise: standard deviation of the Gaussian pixel noise, on a 0..1 intensity scale.
        contrast: each object's colour is blended towards the background with a weight drawn
            uniformly from [contrast, 1]; 1 is full contrast for every object.
        occlusion: probability that an object is placed to partly cover an earlier one.
        outlier_fraction: fraction of the train annotations given a wrong class or a box shifted
            by at least half its size. The val split never has outliers.
    """

    image_size: int = 128
    train_images: int = 32
    val_images: int = 16
    num_classes: int = 6
    objects_per_image: float = 4.0
    small_fraction: float = 0.5
    class_exponent: float = 1.0
    distractors: float = 1.0
    texture: float = 0.1
    noise: float = 0.02
    contrast: float = 0.5
    occlusion: float = 0.2
    outlier_fraction: float = 0.0

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"knob {name}={getattr(self, name)!r} is invalid: must be {rule}")

        def is_int(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int | np.integer) and not isinstance(value, bool)

        def is_real(name: str) -> bool:
            value = getattr(self, name)
            return isinstance(value, int | float | np.number) and math.isfinite(value)

        for name in ("image_size", "train_images", "val_images", "num_classes"):
            need(is_int(name), name, "an integer")
        for name in ("objects_per_image", "small_fraction", "class_exponent", "distractors",
                     "texture", "noise", "contrast", "occlusion", "outlier_fraction"):
            need(is_real(name), name, "a finite number")
        need(32 <= self.image_size <= 4096, "image_size", "in [32, 4096]")
        need(self.train_images >= 0, "train_images", ">= 0")
        need(self.val_images >= 0, "val_images", ">= 0")
        need(1 <= self.num_classes <= len(CLASSES), "num_classes", f"in [1, {len(CLASSES)}]")
        need(0 <= self.objects_per_image <= 100, "objects_per_image", "in [0, 100]")
        need(0 <= self.small_fraction <= 1, "small_fraction", "in [0, 1]")
        need(0 <= self.class_exponent <= 10, "class_exponent", "in [0, 10]")
        need(0 <= self.distractors <= 100, "distractors", "in [0, 100]")
        need(0 <= self.texture <= 1, "texture", "in [0, 1]")
        need(0 <= self.noise <= 1, "noise", "in [0, 1]")
        need(0 < self.contrast <= 1, "contrast", "in (0, 1]")
        need(0 <= self.occlusion <= 1, "occlusion", "in [0, 1]")
        need(0 <= self.outlier_fraction <= 1, "outlier_fraction", "in [0, 1]")

    @property
    def class_probabilities(self) -> np.ndarray:
        """The Zipf class frequencies, float64 of shape (K,), summing to 1."""
        p = np.arange(1, self.num_classes + 1, dtype=np.float64) ** -float(self.class_exponent)
        return p / p.sum()


BENCHMARKS: dict[str, SyntheticConfig] = {
    # tests and smoke runs: under a second
    "tiny": SyntheticConfig(image_size=128, train_images=32, val_images=16, objects_per_image=4.0),
    # the book's CPU runs: ~20 s on 2 cores
    "small": SyntheticConfig(image_size=256, train_images=800, val_images=200,
                             objects_per_image=6.0),
    # GPU runs: about 5 GB of PNG, ~20 min on 2 cores, ~2 min on 16
    "full": SyntheticConfig(image_size=512, train_images=10000, val_images=1000,
                            objects_per_image=8.0),
}


def knob_names() -> tuple[str, ...]:
    """The names of the knobs, the fields of :class:`SyntheticConfig`."""
    return tuple(f.name for f in dataclasses.fields(SyntheticConfig))


def config_for(preset: str = "tiny", **knobs: float) -> SyntheticConfig:
    """The configuration of ``preset`` with the given knobs changed; clear errors for bad names."""
    if preset not in BENCHMARKS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(BENCHMARKS)}")
    unknown = sorted(set(knobs) - set(knob_names()))
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; the knobs are {list(knob_names())}")
    return dataclasses.replace(BENCHMARKS[preset], **knobs)


# --------------------------------------------------------------------------------------------
# Shapes


def _circle(n: int = 48, radius: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)


def _regular(n: int, radius: float = 1.0, start: float = -np.pi / 2) -> np.ndarray:
    t = start + np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def shape_polygons(shape: str) -> list[tuple[np.ndarray, int]]:
    """The polygons of a shape of radius 1 centred at 0, drawn in order.

    Returns:
        A list of ``(points, fill)``: points are float64 of shape (P, 2) in (x, y) with y down;
        fill 255 adds to the mask, 0 cuts a hole.
    """
    if shape == "circle":
        return [(_circle(), 255)]
    if shape == "square":
        s = 0.85
        return [(np.array([[-s, -s], [s, -s], [s, s], [-s, s]]), 255)]
    if shape == "triangle":
        return [(_regular(3), 255)]
    if shape == "ring":
        return [(_circle(), 255), (_circle(radius=0.55), 0)]
    if shape == "cross":
        w = 0.3
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
               (-1, w), (-1, -w), (-w, -w)]
        return [(np.array(pts, dtype=np.float64), 255)]
    if shape == "star":
        outer, inner = _regular(5), _regular(5, 0.45, start=-np.pi / 2 + np.pi / 5)
        return [(np.stack([outer, inner], axis=1).reshape(10, 2), 255)]
    if shape == "hexagon":
        return [(_regular(6, start=0.0), 255)]
    if shape == "crescent":
        return [(_circle(), 255), (_circle(radius=0.8, cx=0.45, cy=-0.15), 0)]
    if shape == "bar":
        return [(np.array([[-1, -0.22], [1, -0.22], [1, 0.22], [-1, 0.22]]), 255)]
    if shape == "arc":
        t = np.linspace(np.pi, 2 * np.pi, 24)
        outer = np.stack([np.cos(t), np.sin(t) + 0.5], axis=1)
        inner = 0.7 * outer[::-1] + [0.0, 0.15]
        return [(np.concatenate([outer, inner]), 255)]
    raise ValueError(f"unknown shape {shape!r}")


@dataclass
class _Layer:
    """A shape's alpha on a patch of the image: pixels [y0, y0 + h) x [x0, x0 + w)."""

    x0: int
    y0: int
    alpha: np.ndarray  # float32 (h, w) in [0, 1]
    colour: np.ndarray  # float32 (3,) in [0, 1]
    visible: np.ndarray | None = None  # float32 (h, w): alpha times the cover left by later layers
    class_index: int = -1
    contrast: float = 1.0
    extent: np.ndarray | None = None  # float64 (4,): the polygons' box (x0, y0, x1, y1)

    @property
    def x1(self) -> int:
        return self.x0 + self.alpha.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.alpha.shape[0]


def _transformed(shape: str, cx: float, cy: float, radius: float, aspect: float,
                 angle: float) -> list[tuple[np.ndarray, int]]:
    """Shape polygons scaled to ``radius`` (pixels), stretched by ``aspect`` = w / h, rotated."""
    scale = radius * np.array([math.sqrt(aspect), 1.0 / math.sqrt(aspect)])
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    return [(pts * scale @ rot + [cx, cy], fill) for pts, fill in shape_polygons(shape)]


def _rasterise(polygons: list[tuple[np.ndarray, int]], size: int) -> tuple[int, int, np.ndarray]:
    """Antialiased alpha of polygons (image pixel coordinates) on the patch that holds them.

    Returns ``(x0, y0, alpha)`` with alpha float32 of shape (h, w), clipped to the image.
    """
    pts = np.concatenate([p for p, _ in polygons])
    margin = 3  # the Lanczos support, so the patch border never touches the shape
    x0 = max(int(math.floor(pts[:, 0].min())) - margin, 0)
    y0 = max(int(math.floor(pts[:, 1].min())) - margin, 0)
    x1 = min(int(math.ceil(pts[:, 0].max())) + margin, size)
    y1 = min(int(math.ceil(pts[:, 1].max())) + margin, size)
    big = Image.new("L", ((x1 - x0) * SUPERSAMPLE, (y1 - y0) * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    for p, fill in polygons:
        q = (p - [x0, y0]) * SUPERSAMPLE
        draw.polygon([(float(x), float(y)) for x, y in q], fill=fill)
    small = big.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
    return x0, y0, np.asarray(small, dtype=np.float32) / 255.0


def _overlap(a: _Layer, b: _Layer) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """The slices of a's and b's patches where they overlap, or None."""
    x0, y0 = max(a.x0, b.x0), max(a.y0, b.y0)
    x1, y1 = min(a.x1, b.x1), min(a.y1, b.y1)
    if x0 >= x1 or y0 >= y1:
        return None
    sa = (slice(y0 - a.y0, y1 - a.y0), slice(x0 - a.x0, x1 - a.x0))
    sb = (slice(y0 - b.y0, y1 - b.y0), slice(x0 - b.x0, x1 - b.x0))
    return sa, sb


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1), end exclusive, of a boolean (h, w) mask, or None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class RenderedObject:
    """One labelled object of a rendered image.

    Attributes:
        category_id: the COCO category id, class index + 1.
        bbox: tight box [x, y, w, h] of the visible pixels, integers in pixels.
        visible: float32 (H, W), the object's visible alpha in the final image.
        occluded: the fraction of the object's alpha covered by later objects, in [0, 1).
        contrast: the weight of the class colour against the background, in [contrast knob, 1].
    """

    category_id: int
    bbox: tuple[int, int, int, int]
    visible: np.ndarray
    occluded: float
    contrast: float


@dataclass(frozen=True)
class RenderedImage:
    """An image of the benchmark: ``image`` is uint8 (H, W, 3); ``background`` the base colour."""

    image: np.ndarray
    objects: list[RenderedObject]
    background: np.ndarray


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of one image; it depends on (seed, split, index) only."""
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def _background(rng: np.random.Generator, size: int, texture: float) -> tuple[np.ndarray, ...]:
    """A grey-ish base colour (3,) and the textured background, float32 (size, size, 3)."""
    base = rng.uniform(0.3, 0.6) + rng.uniform(-0.04, 0.04, size=3)
    canvas = np.broadcast_to(base.astype(np.float32), (size, size, 3)).copy()
    for cells, weight in ((6, 1.0), (24, 0.5)):
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        field = Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC)
        canvas += (texture * weight) * np.asarray(field)[:, :, None]
    return base.astype(np.float32), canvas


def _object_radius(rng: np.random.Generator, config: SyntheticConfig) -> float:
    lo, hi = SMALL_SIZE if rng.random() < config.small_fraction else LARGE_SIZE
    return max(rng.uniform(lo, hi) * config.image_size, MIN_OBJECT_PIXELS) / 2


def _place_shape(rng: np.random.Generator, shape: str, radius: float, size: int,
                 centre: tuple[float, float] | None) -> list[tuple[np.ndarray, int]]:
    """Polygons of a shape of random aspect and rotation, centred at ``centre`` or at random,
    moved if needed so that the whole shape lies one pixel inside the image."""
    aspect = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    angle = rng.uniform(-math.pi / 12, math.pi / 12)
    polys = _transformed(shape, 0.0, 0.0, radius, aspect, angle)
    pts = np.concatenate([p for p, _ in polys])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    cmin, cmax = 1.0 - lo, size - 1.0 - hi
    if centre is None:
        centre = (rng.uniform(cmin[0], max(cmin[0], cmax[0])),
                  rng.uniform(cmin[1], max(cmin[1], cmax[1])))
    c = np.clip(np.asarray(centre), cmin, np.maximum(cmin, cmax))
    return [(p + c, fill) for p, fill in polys]


def _extent(polygons: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """The box (x0, y0, x1, y1), float64 (4,), of the polygons' points."""
    pts = np.concatenate([p for p, _ in polygons])
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def _apart(a: np.ndarray, b: np.ndarray, gap: float) -> bool:
    """Whether boxes a and b (x0, y0, x1, y1) are at least ``gap`` pixels apart."""
    return bool(a[0] >= b[2] + gap or b[0] >= a[2] + gap or a[1] >= b[3] + gap
                or b[1] >= a[3] + gap)


def _composite(canvas: np.ndarray, layer: _Layer) -> None:
    region = canvas[layer.y0:layer.y1, layer.x0:layer.x1]
    a = layer.alpha[:, :, None]
    region *= 1.0 - a
    region += a * layer.colour


def _try_place(layer: _Layer, placed: list[_Layer], occluding: bool) -> bool:
    """Whether ``layer`` may go on top of ``placed``; if so, update their visible alphas.

    Without occlusion the shapes may not touch; with it, every earlier object keeps at least
    :data:`MIN_VISIBLE_FRACTION` of its alpha and a non-empty visible box.
    """
    updates = []
    for other in placed:
        ov = _overlap(other, layer)
        if ov is None:
            continue
        so, sl = ov
        cover = layer.alpha[sl]
        if not occluding:
            if np.any(other.alpha[so] * cover > 0):
                return False
            continue
        visible = other.visible.copy()
        visible[so] *= 1.0 - cover
        if visible.sum() < MIN_VISIBLE_FRACTION * other.alpha.sum():
            return False
        if _tight_box(visible >= VISIBLE_ALPHA) is None:
            return False
        updates.append((other, visible))
    for other, visible in updates:
        other.visible = visible
    return True


def render_image(config: SyntheticConfig, seed: int, split: str, index: int) -> RenderedImage:
    """Render image ``index`` of ``split``: the pixels and each object's visible alpha and box."""
    size = config.image_size
    rng = image_rng(seed, split, index)
    base, canvas = _background(rng, size, config.texture)

    for _ in range(rng.poisson(config.distractors)):
        cls = CLASSES[rng.integers(config.num_classes)]
        if rng.random() < 0.5:  # a class shape in an off colour
            shape, colour = cls.name, DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
        else:  # a class colour in a shape of no class
            shape, colour = DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))], cls.colour
        polys = _place_shape(rng, shape, _object_radius(rng, config), size, None)
        x0, y0, alpha = _rasterise(polys, size)
        _composite(canvas, _Layer(x0, y0, alpha, np.asarray(colour, np.float32) / 255))

    probabilities = config.class_probabilities
    placed: list[_Layer] = []
    for _ in range(rng.poisson(config.objects_per_image)):
        k = int(rng.choice(config.num_classes, p=probabilities))
        radius = _object_radius(rng, config)
        strength = rng.uniform(config.contrast, 1.0)
        colour = base + strength * (np.asarray(CLASSES[k].colour, np.float32) / 255 - base)
        occluding = bool(placed) and rng.random() < config.occlusion
        for _attempt in range(MAX_PLACEMENT_TRIES):
            centre = None
            if occluding:  # next to an earlier object, overlapping its edge
                target = placed[rng.integers(len(placed))]
                h, w = target.alpha.shape
                reach = (max(h, w) / 2 + radius) * rng.uniform(0.45, 0.85)
                t = rng.uniform(0, 2 * np.pi)
                centre = (target.x0 + w / 2 + reach * math.cos(t),
                          target.y0 + h / 2 + reach * math.sin(t))
            polys = _place_shape(rng, CLASSES[k].name, radius, size, centre)
            extent = _extent(polys)
            if not occluding and not all(_apart(extent, p.extent, 2.0) for p in placed):
                continue  # cheap rejection before rasterising
            x0, y0, alpha = _rasterise(polys, size)
            layer = _Layer(x0, y0, alpha, colour.astype(np.float32), alpha.copy(), k,
                           float(strength), extent)
            if _tight_box(alpha >= VISIBLE_ALPHA) and _try_place(layer, placed, occluding):
                placed.append(layer)
                break

    objects = []
    for layer in placed:
        _composite(canvas, layer)
        x0, y0, x1, y1 = _tight_box(layer.visible >= VISIBLE_ALPHA)
        visible = np.zeros((size, size), np.float32)
        visible[layer.y0:layer.y1, layer.x0:layer.x1] = layer.visible
        bbox = (layer.x0 + x0, layer.y0 + y0, x1 - x0, y1 - y0)
        occluded = 1.0 - float(layer.visible.sum()) / float(layer.alpha.sum())
        objects.append(RenderedObject(layer.class_index + 1, bbox, visible, max(occluded, 0.0),
                                      layer.contrast))

    if config.noise > 0:
        canvas += np.float32(config.noise) * rng.standard_normal(canvas.shape, dtype=np.float32)
    image = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    return RenderedImage(image, objects, base)


# --------------------------------------------------------------------------------------------
# Outliers


def _inject_outliers(annotations: list[dict], config: SyntheticConfig, seed: int) -> int:
    """Turn exactly round(fraction * N) annotations into outliers, in place; return how many.

    An outlier gets ``"outlier": "class"`` and a wrong ``category_id`` (the true one is kept in
    ``true_category_id``), or ``"outlier": "box"`` and a box shifted by at least half its width or
    height, still inside the image (the true box is kept in ``true_bbox``). A box too large to
    move that far gets a wrong class instead (and stays clean when there is one class only).
    """
    count = round(config.outlier_fraction * len(annotations))
    if count == 0:
        return 0
    rng = np.random.default_rng([int(seed), zlib.crc32(b"outliers")])
    size = config.image_size
    for i in np.sort(rng.choice(len(annotations), size=count, replace=False)):
        ann = annotations[int(i)]
        x, y, w, h = ann["bbox"]
        shifted = None
        if rng.random() < 0.5 or config.num_classes == 1:
            for axis in rng.permutation(2):
                pos, extent = (x, w) if axis == 0 else (y, h)
                step = math.ceil(rng.uniform(0.5, 1.0) * extent)
                options = [p for p in (pos - step, pos + step) if 0 <= p <= size - extent]
                if options:
                    new = options[int(rng.integers(len(options)))]
                    shifted = [new, y, w, h] if axis == 0 else [x, new, w, h]
                    break
        if shifted is not None:
            ann.update(outlier="box", true_bbox=ann["bbox"], bbox=shifted)
        elif config.num_classes > 1:
            true = ann["category_id"]
            wrong = [c for c in range(1, config.num_classes + 1) if c != true]
            ann.update(outlier="class", true_category_id=true,
                       category_id=int(wrong[int(rng.integers(len(wrong)))]))
    return sum("outlier" in a for a in annotations)


# --------------------------------------------------------------------------------------------
# Writing a dataset


def _render_and_save(task: tuple[SyntheticConfig, int, str, int, str]) -> list[tuple]:
    config, seed, split, index, path = task
    rendered = render_image(config, seed, split, index)
    Image.fromarray(rendered.image).save(path, format="PNG")
    return [(o.category_id, o.bbox, round(o.occluded, 4), round(o.contrast, 4))
            for o in rendered.objects]


def _categories(config: SyntheticConfig) -> list[dict]:
    return [{"id": k + 1, "name": c.name, "supercategory": "shape",
             "colour": "#{:02X}{:02X}{:02X}".format(*c.colour)}
            for k, c in enumerate(CLASSES[:config.num_classes])]


#: The file :func:`make_dataset` writes first into its folder: a folder holding it (or the
#: generator's own annotation files) is the generator's to rewrite.
MARKER = ".imbalance-synthetic"


def _is_ours(out: Path) -> bool:
    """Whether ``out`` holds a dataset this generator wrote (its marker, or annotation files
    whose ``info`` names the generator)."""
    if (out / MARKER).is_file():
        return True
    for split in ("train", "val"):
        path = out / "annotations" / f"instances_{split}.json"
        if path.is_file():
            try:
                with open(path, encoding="utf-8") as f:
                    head = f.read(300)
            except OSError:
                return False
            if '"generator":"imbalance.data.synthetic"' in head:
                return True
    return False


def make_dataset(out: str | os.PathLike, preset: str = "tiny", *, seed: int = 0,
                 workers: int | None = None, progress: bool = True, overwrite: bool = False,
                 **knobs: float) -> Path:
    """Generate the benchmark as a COCO dataset and return ``out``.

    Writes ``out/annotations/instances_{train,val}.json`` and ``out/{train,val}/NNNNNN.png``.
    The JSON ``info`` records the generator version, preset, seed, every knob and the number of
    outliers. Besides the COCO fields, each annotation has ``occluded`` (the fraction of the
    object hidden by later ones) and ``contrast`` (see :class:`RenderedObject`), and an outlier
    has ``outlier`` and its true value (see :func:`_inject_outliers`).

    ``out`` must be missing, empty, or a dataset this generator wrote (it writes the marker file
    :data:`MARKER` first); then stale ``NNNNNN.png`` files of an earlier, larger run in the split
    folders are removed. Any other folder is refused unless ``overwrite``, and even then nothing
    the generator did not write is deleted (files of the same names are replaced).

    Args:
        out: the output folder, created if missing.
        preset: ``"tiny"``, ``"small"`` or ``"full"``; see :data:`BENCHMARKS`.
        seed: the dataset seed; the same seed gives byte-identical files.
        workers: worker processes; None picks min(cpu count, 8), or 1 for fewer than 64 images.
        progress: show a tqdm progress bar.
        overwrite: write into a non-empty folder that is not one of the generator's.
        **knobs: fields of :class:`SyntheticConfig` overriding the preset.

    Raises:
        ValueError: a bad knob, seed or worker count; ``out`` is not a folder; or ``out`` holds
            files the generator did not write and ``overwrite`` is False.
    """
    config = config_for(preset, **knobs)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid: must be a non-negative integer")
    out = Path(out)
    counts = {"train": config.train_images, "val": config.val_images}
    total = sum(counts.values())
    if workers is None:
        workers = 1 if total < 64 else min(os.cpu_count() or 1, 8)
    if workers < 1:
        raise ValueError(f"workers={workers!r} is invalid: must be >= 1")

    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder; give --out a folder")
    ours = out.is_dir() and _is_ours(out)
    if out.is_dir() and not ours and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} holds files that this generator did not write; choose an empty "
                         f"or new folder, or pass --overwrite (overwrite=True) to write into it "
                         f"(files of the same names are replaced, none is deleted)")
    out.mkdir(parents=True, exist_ok=True)
    if ours or not any(out.iterdir()):
        (out / MARKER).write_text(f"imbalance.data.synthetic {GENERATOR_VERSION}\n")
        ours = True
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    tasks = []
    for split, n in counts.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.iterdir() if ours else ():
            if _FILE_PATTERN.match(stale.name) and int(stale.name[:6]) >= n:
                stale.unlink()
        tasks += [(config, seed, split, i, str(folder / f"{i:06d}.png")) for i in range(n)]

    bar = tqdm(total=total, desc=f"synthetic {preset}", unit="img", disable=not progress)
    if workers == 1:
        results = []
        for task in tasks:
            results.append(_render_and_save(task))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for objects in pool.map(_render_and_save, tasks, chunksize=8):
                results.append(objects)
                bar.update()
    bar.close()

    start = 0
    for split, n in counts.items():
        images, annotations = [], []
        for i, objects in enumerate(results[start:start + n]):
            images.append({"id": i + 1, "file_name": f"{i:06d}.png",
                           "width": config.image_size, "height": config.image_size})
            for category_id, bbox, occluded, contrast in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                    "category_id": category_id, "bbox": list(bbox),
                                    "area": bbox[2] * bbox[3], "iscrowd": 0,
                                    "occluded": occluded, "contrast": contrast})
        start += n
        outliers = _inject_outliers(annotations, config, seed) if split == "train" else 0
        info = {"description": "imbalance synthetic detection benchmark",
                "generator": "imbalance.data.synthetic", "version": GENERATOR_VERSION,
                "preset": preset, "seed": int(seed), "split": split,
                "knobs": dataclasses.asdict(config), "outliers": outliers}
        dataset = {"info": info, "licenses": [], "categories": _categories(config),
                   "images": images, "annotations": annotations}
        path = out / "annotations" / f"instances_{split}.json"
        path.write_text(json.dumps(dataset, separators=(",", ":")) + "\n")
    return out

