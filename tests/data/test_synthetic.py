"""The synthetic benchmark: determinism, COCO files, tight boxes, knobs, outliers, CLI."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from imbalance.data.stats import anchor_statistics, class_counts, object_size_histogram
from imbalance.data.synthetic import (
    CLASSES,
    GENERATOR_VERSION,
    VISIBLE_ALPHA,
    SyntheticConfig,
    config_for,
    make_dataset,
    render_image,
)

SMALL = {"train_images": 12, "val_images": 4}


def load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def mask_box(mask: np.ndarray) -> list[int]:
    """[x, y, w, h] of a boolean mask, computed independently of the generator."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]


# ------------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    knobs = {**SMALL, "outlier_fraction": 0.3}
    a = make_dataset(tmp_path / "a", "tiny", seed=7, workers=1, progress=False, **knobs)
    b = make_dataset(tmp_path / "b", "tiny", seed=7, workers=2, progress=False, **knobs)
    fa, fb = files(a), files(b)
    assert len(fa) == 1 + 2 + 12 + 4  # the marker, the annotations, the images
    assert fa.keys() == fb.keys()
    assert all(fa[k] == fb[k] for k in fa)

    c = make_dataset(tmp_path / "c", "tiny", seed=8, workers=1, progress=False, **knobs)
    fc = files(c)
    assert fa["train/000000.png"] != fc["train/000000.png"]


def test_regenerating_into_the_same_folder_removes_stale_images(tmp_path: Path) -> None:
    make_dataset(tmp_path, "tiny", progress=False, train_images=5, val_images=2)
    make_dataset(tmp_path, "tiny", progress=False, train_images=3, val_images=2)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "000000.png", "000001.png", "000002.png"]


# ------------------------------------------------------------------------------- COCO files


def test_pycocotools_loads_both_splits(tiny_root: Path) -> None:
    config = config_for("tiny")
    for split, n in (("train", config.train_images), ("val", config.val_images)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(tiny_root / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [
            c.name for c in CLASSES[:config.num_classes]]
        assert len(coco.getAnnIds()) > 0
        info = coco.dataset["info"]
        assert info["version"] == GENERATOR_VERSION and info["split"] == split
        assert SyntheticConfig(**info["knobs"]) == config_for("tiny", outlier_fraction=0.25)
        for image_id in coco.getImgIds():
            im = coco.loadImgs(image_id)[0]
            with Image.open(tiny_root / split / im["file_name"]) as png:
                assert png.size == (im["width"], im["height"]) and png.mode == "RGB"


def test_every_box_lies_inside_its_image(tiny_root: Path) -> None:
    for split in ("train", "val"):
        data = load(tiny_root, split)
        sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
        for ann in data["annotations"]:
            x, y, w, h = ann["bbox"]
            width, height = sizes[ann["image_id"]]
            assert w > 0 and h > 0, ann
            assert 0 <= x and x + w <= width and 0 <= y and y + h <= height, ann
            assert ann["area"] == w * h and ann["iscrowd"] == 0


def test_boxes_are_tight_to_each_objects_visible_pixels(tiny_root: Path) -> None:
    """Re-render every image: the PNG holds exactly those pixels, and each annotation (its true
    value, for an outlier) is the tight box of that object's visible alpha."""
    for split in ("train", "val"):
        data = load(tiny_root, split)
        config = SyntheticConfig(**data["info"]["knobs"])
        by_image: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        checked = 0
        for index, im in enumerate(data["images"]):
            rendered = render_image(config, data["info"]["seed"], split, index)
            png = np.asarray(Image.open(tiny_root / split / im["file_name"]))
            assert np.array_equal(png, rendered.image)
            anns = by_image.get(im["id"], [])
            assert len(anns) == len(rendered.objects)
            for ann, obj in zip(anns, rendered.objects, strict=True):
                box = ann.get("true_bbox", ann["bbox"])
                category = ann.get("true_category_id", ann["category_id"])
                assert box == mask_box(obj.visible >= VISIBLE_ALPHA)
                assert category == obj.category_id
                checked += 1
        assert checked > 0


def test_boxes_match_the_pixels_of_the_png_on_a_clean_image(tmp_path: Path) -> None:
    """No texture, noise, distractors or occlusion and full contrast: a pixel's weight, how far
    it lies from the background colour towards the class colour, is the object's alpha. The box
    of the pixels surely above half (≥ 0.52, allowing for 8-bit rounding) lies inside the
    annotation, and the annotation inside the box of those not surely below (≥ 0.48)."""
    root = make_dataset(tmp_path, "tiny", progress=False, train_images=40, val_images=0,
                        objects_per_image=1.0, texture=0.0, noise=0.0, distractors=0.0,
                        contrast=1.0, occlusion=0.0)
    data = load(root, "train")
    counts = Counter(a["image_id"] for a in data["annotations"])
    checked = 0
    for ann in data["annotations"]:
        if counts[ann["image_id"]] != 1:
            continue
        image = np.asarray(Image.open(root / "train" / f"{ann['image_id'] - 1:06d}.png"))
        image = image.astype(np.float64)
        background = image[0, 0]  # objects stay a pixel inside the image
        colour = np.asarray(CLASSES[ann["category_id"] - 1].colour, dtype=np.float64)
        c = int(np.argmax(np.abs(colour - background)))  # the channel that moves the most
        weight = (image[:, :, c] - background[c]) / (colour[c] - background[c])
        x, y, w, h = ann["bbox"]
        ix, iy, iw, ih = mask_box(weight >= 0.52)
        ox, oy, ow, oh = mask_box(weight >= 0.48)
        assert ox <= x <= ix and oy <= y <= iy, (ann, weight[y - 1:y + h + 1, x - 1:x + w + 1])
        assert ix + iw <= x + w <= ox + ow and iy + ih <= y + h <= oy + oh, ann
        checked += 1
    assert checked >= 8


# ------------------------------------------------------------------------------- knobs


def stats_of(tmp_path: Path, name: str, **knobs: float) -> Path:
    return make_dataset(tmp_path / name, "tiny", seed=3, progress=False, **{**SMALL, **knobs})


def annotations_file(root: Path, split: str = "train") -> Path:
    return root / "annotations" / f"instances_{split}.json"


def test_more_small_objects_lower_the_fg_bg_ratio(tmp_path: Path) -> None:
    many_small = stats_of(tmp_path, "small", small_fraction=0.9)
    few_small = stats_of(tmp_path, "large", small_fraction=0.1)
    small, large = (anchor_statistics(annotations_file(r)) for r in (many_small, few_small))
    assert small.fg_bg_ratio < large.fg_bg_ratio
    sizes = [np.median(object_size_histogram(annotations_file(r)).sizes)
             for r in (many_small, few_small)]
    assert sizes[0] < sizes[1]


def test_more_objects_raise_the_fg_bg_ratio(tmp_path: Path) -> None:
    few = anchor_statistics(annotations_file(stats_of(tmp_path, "few", objects_per_image=1.0)))
    many = anchor_statistics(annotations_file(stats_of(tmp_path, "many", objects_per_image=8.0)))
    assert few.objects.sum() < many.objects.sum()
    assert few.fg_bg_ratio < many.fg_bg_ratio


def normalised_entropy(counts: dict[str, int]) -> float:
    p = np.asarray(list(counts.values()), dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(counts)))


def test_a_larger_exponent_skews_the_class_counts(tmp_path: Path) -> None:
    flat = class_counts(annotations_file(stats_of(tmp_path, "flat", class_exponent=0.0)))
    steep = class_counts(annotations_file(stats_of(tmp_path, "steep", class_exponent=2.0)))
    assert normalised_entropy(steep) < normalised_entropy(flat)
    assert max(steep.values()) / sum(steep.values()) > max(flat.values()) / sum(flat.values())
    assert list(steep) == [c.name for c in CLASSES[:6]]
    assert steep["circle"] == max(steep.values())  # class 1 is the head of the tail


def test_outlier_fraction_gives_that_fraction_of_wrong_train_annotations(tmp_path: Path) -> None:
    fraction = 0.3
    noisy = stats_of(tmp_path, "noisy", outlier_fraction=fraction)
    clean = stats_of(tmp_path, "clean", outlier_fraction=0.0)
    train, truth = load(noisy, "train"), load(clean, "train")
    assert len(train["annotations"]) == len(truth["annotations"]) > 10
    wrong = 0
    for ann, true in zip(train["annotations"], truth["annotations"], strict=True):
        differs = ann["bbox"] != true["bbox"] or ann["category_id"] != true["category_id"]
        assert differs == ("outlier" in ann)
        if ann.get("outlier") == "class":
            assert ann["category_id"] != true["category_id"] == ann["true_category_id"]
            assert ann["bbox"] == true["bbox"]
        elif ann.get("outlier") == "box":
            (x, y, w, h), (tx, ty, tw, th) = ann["bbox"], true["bbox"]
            assert (w, h) == (tw, th) and ann["true_bbox"] == true["bbox"]
            assert abs(x - tx) >= 0.5 * w or abs(y - ty) >= 0.5 * h
        wrong += differs
    assert wrong == round(fraction * len(truth["annotations"]))
    assert train["info"]["outliers"] == wrong
    val = load(noisy, "val")
    assert val["annotations"] and not any("outlier" in a for a in val["annotations"])
    assert val == {**load(clean, "val"), "info": val["info"]}  # outliers never touch val
    assert files(noisy)["train/000001.png"] == files(clean)["train/000001.png"]


def rendered(n: int = 8, **knobs: float) -> list:
    config = config_for("tiny", **knobs)
    return [render_image(config, 5, "train", i) for i in range(n)]


def test_noise_adds_pixel_noise() -> None:
    quiet = rendered(noise=0.0)
    loud = rendered(noise=0.1)
    diff = np.concatenate([(b.image.astype(float) - a.image.astype(float)).ravel()
                           for a, b in zip(quiet, loud, strict=True)])
    assert 0.08 * 255 < diff.std() < 0.12 * 255


def background_pixels(images: list) -> np.ndarray:
    """Pixels (P, 3) away from every object: outside its box grown by its antialiased edge."""
    out = []
    for r in images:
        covered = np.zeros(r.image.shape[:2], bool)
        for o in r.objects:
            x, y, w, h = o.bbox
            covered[max(y - 2, 0):y + h + 2, max(x - 2, 0):x + w + 2] = True
        out.append(r.image[~covered].astype(float))
    return np.concatenate(out)


def test_texture_varies_the_background() -> None:
    flat = background_pixels(rendered(texture=0.0, noise=0.0, distractors=0.0))
    rough = background_pixels(rendered(texture=0.2, noise=0.0, distractors=0.0))
    spread = [np.mean([np.std(im[..., c]) for c in range(3)]) for im in (flat, rough)]
    assert spread[0] < spread[1]


def test_distractors_add_unlabelled_shapes() -> None:
    def off_background(images: list) -> float:
        # with a flat background, pixels off the base colour outside boxes are distractors
        fractions = []
        for r in images:
            px = background_pixels([r])
            fractions.append(np.mean(np.abs(px - r.background * 255).max(axis=1) > 20))
        return float(np.mean(fractions))

    none = off_background(rendered(distractors=0.0, texture=0.0, noise=0.0))
    many = off_background(rendered(distractors=5.0, texture=0.0, noise=0.0))
    assert none == 0.0 < many


def test_lower_contrast_brings_objects_closer_to_the_background() -> None:
    def mean_contrast(images: list) -> float:
        gaps = []
        for r in images:
            for o in r.objects:
                core = o.visible > 0.95
                gaps.append(np.abs(r.image[core].astype(float) - r.background * 255).mean())
        return float(np.mean(gaps))

    knobs = {"noise": 0.0, "texture": 0.0}
    assert mean_contrast(rendered(contrast=0.2, **knobs)) < mean_contrast(
        rendered(contrast=1.0, **knobs))


def test_occlusion_hides_parts_of_objects() -> None:
    hidden = [np.mean([o.occluded for r in rendered(occlusion=p, objects_per_image=6.0)
                       for o in r.objects]) for p in (0.0, 1.0)]
    assert hidden[0] == 0.0 < hidden[1]
    for r in rendered(occlusion=1.0, objects_per_image=6.0):
        for o in r.objects:
            assert o.occluded <= 0.6 + 1e-6  # each object keeps 40 % of its alpha


# ------------------------------------------------------------------------------- validation, CLI


@pytest.mark.parametrize(("knob", "value"), [
    ("contrast", 0.0), ("small_fraction", 1.5), ("num_classes", 9), ("image_size", 8),
    ("outlier_fraction", -0.1), ("train_images", 2.5), ("noise", float("nan")),
])
def test_bad_knob_values_are_named(knob: str, value: float) -> None:
    with pytest.raises(ValueError, match=knob):
        config_for("tiny", **{knob: value})


def test_unknown_knobs_and_presets_are_named() -> None:
    with pytest.raises(ValueError, match="unknown knob.*colour"):
        config_for("tiny", colour=3)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        config_for("huge")


def test_presets_scale_up() -> None:
    tiny, small, full = (config_for(p) for p in ("tiny", "small", "full"))
    assert tiny.train_images < small.train_images < full.train_images
    assert tiny.image_size <= small.image_size <= full.image_size
    assert min(c.num_classes for c in (tiny, small, full)) >= 6


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imbalance.data", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_makes_a_dataset_with_knobs(tmp_path: Path) -> None:
    result = run_cli("make", "--preset", "tiny", "--out", str(tmp_path), "--seed", "2",
                     "--train-images", "3", "--val-images", "2", "--num-classes", "7",
                     "--class-exponent", "1.5", "--no-progress")
    assert result.returncode == 0, result.stderr
    data = load(tmp_path, "train")
    assert len(data["images"]) == 3 and len(data["categories"]) == 7
    assert data["info"]["seed"] == 2 and data["info"]["knobs"]["class_exponent"] == 1.5
    assert len(list((tmp_path / "val").glob("*.png"))) == 2


def test_cli_reports_bad_knobs_clearly(tmp_path: Path) -> None:
    result = run_cli("make", "--out", str(tmp_path), "--contrast", "0")
    assert result.returncode == 2 and "contrast" in result.stderr
    result = run_cli("make", "--out", str(tmp_path), "--colour", "3")
    assert result.returncode == 2 and "--colour" in result.stderr


def test_make_refuses_a_folder_it_did_not_write_and_never_deletes_its_files(tmp_path):
    """Issue 13, item 1: 100 files of a user's own in train/ were deleted or overwritten."""
    from imbalance.data.__main__ import main as data_main
    from imbalance.data.synthetic import MARKER

    user = tmp_path / "mine"
    (user / "train").mkdir(parents=True)
    for i in range(40):
        (user / "train" / f"{i:06d}.png").write_bytes(b"user data %d" % i)
    with pytest.raises(ValueError, match="did not write.*--overwrite"):
        make_dataset(user, "tiny", progress=False, train_images=4, val_images=2)
    assert sorted(p.name for p in user.rglob("*")) == sorted(
        ["train", *[f"{i:06d}.png" for i in range(40)]])
    assert data_main(["make", "--out", str(user), "--train-images", "4", "--val-images", "2",
                      "--no-progress"]) == 2
    # --overwrite writes its 4 images over the user's first 4 and deletes none of the others
    make_dataset(user, "tiny", progress=False, overwrite=True, train_images=4, val_images=2)
    assert len(list((user / "train").glob("*.png"))) == 40
    assert (user / "train" / "000010.png").read_bytes() == b"user data 10"
    assert not (user / MARKER).exists()
    # a folder the generator made is its own to rewrite: stale images of a larger run go
    ours = make_dataset(tmp_path / "ours", "tiny", progress=False, train_images=6, val_images=2)
    assert (ours / MARKER).is_file()
    make_dataset(ours, "tiny", progress=False, train_images=3, val_images=2)
    assert sorted(p.name for p in (ours / "train").iterdir()) == [f"{i:06d}.png"
                                                                   for i in range(3)]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        make_dataset(tmp_path / "file", "tiny", progress=False)
