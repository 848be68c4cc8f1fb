"""Reading COCO datasets: targets, label mapping, batching and clear errors for bad input."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from imbalance.data.coco import AnnotationError, CocoDetection, collate, load_coco


def annotations(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def write(tmp_path: Path, data: dict | str, name: str = "instances.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_items_are_what_torchvision_detection_models_take(tiny_root: Path) -> None:
    ds = CocoDetection(tiny_root, "val")
    data = annotations(tiny_root, "val")
    assert len(ds) == len(data["images"])
    assert ds.num_classes == len(data["categories"])
    for i in range(len(ds)):
        image, target = ds[i]
        im = data["images"][i]
        assert image.dtype == torch.float32 and image.shape == (3, im["height"], im["width"])
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert target["image_id"] == im["id"]
        assert target["orig_size"].tolist() == [im["height"], im["width"]]
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["boxes"].reshape(-1, 4).tolist() == expected
        assert [ds.label_to_cat_id[int(lab)] for lab in target["labels"]] == [
            a["category_id"] for a in anns]


def test_labels_are_contiguous_from_one_and_map_both_ways(tmp_path: Path, tiny_root: Path) -> None:
    data = annotations(tiny_root, "val")
    # COCO's category ids have gaps; give ours gaps and a shuffled order
    remap = {c["id"]: 10 * c["id"] + 3 for c in data["categories"]}
    for c in data["categories"]:
        c["id"] = remap[c["id"]]
    data["categories"].reverse()
    for a in data["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    ds = CocoDetection(tiny_root / "val", write(tmp_path, data))
    assert sorted(ds.cat_id_to_label.values()) == list(range(1, ds.num_classes + 1))
    assert list(ds.cat_id_to_label) == sorted(remap.values())
    assert all(ds.cat_id_to_label[ds.label_to_cat_id[k]] == k for k in ds.label_to_cat_id)
    names = {c["id"]: c["name"] for c in data["categories"]}
    assert ds.class_names[0] == "__background__"
    assert all(ds.class_names[k] == names[c] for k, c in ds.label_to_cat_id.items())
    _, target = ds[0]
    assert target["labels"].min() >= 1 and target["labels"].max() <= ds.num_classes


def test_images_without_annotations_and_crowd_annotations(tmp_path: Path, tiny_root: Path) -> None:
    data = annotations(tiny_root, "val")
    first = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != first]
    crowd = copy.deepcopy(data["annotations"][0])
    crowd.update(id=10_000, iscrowd=1)
    data["annotations"].append(crowd)
    ds = CocoDetection(tiny_root / "val", write(tmp_path, data))
    image, target = ds[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    index = ds.ids.index(crowd["image_id"])
    n = sum(a["image_id"] == crowd["image_id"] for a in data["annotations"])
    assert len(ds[index][1]["boxes"]) == n - 1


def test_both_layouts_and_the_collate_function(tiny_root: Path) -> None:
    by_split = CocoDetection(tiny_root, "train")
    by_file = CocoDetection(tiny_root / "train", tiny_root / "annotations/instances_train.json")
    assert by_split.annotation_file == by_file.annotation_file
    assert torch.equal(by_split[3][0], by_file[3][0])
    loader = torch.utils.data.DataLoader(by_split, batch_size=4, collate_fn=collate)
    images, targets = next(iter(loader))
    assert len(images) == len(targets) == 4
    assert [t["image_id"] for t in targets] == by_split.ids[:4]


# ------------------------------------------------------------------------------- clear errors


def error(path: Path, image_dir: Path, *patterns: str) -> None:
    with pytest.raises(AnnotationError) as info:
        CocoDetection(image_dir, path)
    message = str(info.value)
    assert str(path) in message, message
    for p in patterns:
        assert re.search(p, message), (p, message)


def test_missing_image_file_names_the_file_and_image(tmp_path: Path, tiny_root: Path) -> None:
    data = annotations(tiny_root, "val")
    data["images"][2]["file_name"] = "nowhere.png"
    error(write(tmp_path, data), tiny_root / "val", r"image id 3\b", "nowhere.png", "missing")


def test_a_file_deleted_after_construction_is_named(tmp_path: Path, tiny_root: Path) -> None:
    (tmp_path / "val").mkdir()
    for p in (tiny_root / "val").iterdir():
        (tmp_path / "val" / p.name).write_bytes(p.read_bytes())
    ds = CocoDetection(tmp_path / "val", tiny_root / "annotations/instances_val.json")
    (tmp_path / "val" / "000001.png").unlink()
    with pytest.raises(AnnotationError, match=r"image id 2\b.*000001.png.*missing"):
        ds[1]


def test_malformed_json_names_the_file_and_place(tmp_path: Path, tiny_root: Path) -> None:
    text = (tiny_root / "annotations/instances_val.json").read_text()
    error(write(tmp_path, text[: len(text) // 2]), tiny_root / "val", "malformed JSON",
          "line 1, column")
    error(write(tmp_path, {"images": []}, "partial.json"), tiny_root / "val", "annotations")


@pytest.mark.parametrize(("bbox", "problem"), [
    ([120, 10, 20, 20], "outside"),
    ([-5, 10, 20, 20], "outside"),
    ([10, 110, 20, 30], "outside"),
    ([10, 10, 0, 20], "no area"),
    ([10, 10, 20, -1], "no area"),
    ([10, 10, 20], "malformed bbox"),
])
def test_bad_boxes_name_the_annotation(tmp_path: Path, tiny_root: Path, bbox: list,
                                       problem: str) -> None:
    data = annotations(tiny_root, "val")
    ann = data["annotations"][4]
    ann["bbox"] = bbox
    error(write(tmp_path, data), tiny_root / "val", rf"annotation id {ann['id']}\b",
          rf"image id {ann['image_id']}\b", problem)


def test_a_box_within_the_tolerance_is_clipped(tmp_path: Path, tiny_root: Path) -> None:
    data = annotations(tiny_root, "val")
    ann = data["annotations"][0]
    index = [im["id"] for im in data["images"]].index(ann["image_id"])
    width = data["images"][index]["width"]
    ann["bbox"] = [width - 10, 5, 10.4, 8]
    ds = CocoDetection(tiny_root / "val", write(tmp_path, data))
    first = [a for a in data["annotations"] if a["image_id"] == ann["image_id"]].index(ann)
    assert ds[index][1]["boxes"][first].tolist() == [width - 10, 5, width, 13]


def test_unknown_category_and_image_ids_are_named(tmp_path: Path, tiny_root: Path) -> None:
    data = annotations(tiny_root, "val")
    data["annotations"][1]["category_id"] = 99
    aid = data["annotations"][1]["id"]
    error(write(tmp_path, data), tiny_root / "val", rf"annotation id {aid}\b",
          "unknown category id 99")
    data = annotations(tiny_root, "val")
    data["annotations"][1]["image_id"] = 12345
    error(write(tmp_path, data, "b.json"), tiny_root / "val", rf"annotation id {aid}\b",
          "unknown image id 12345")


def test_duplicate_ids_and_missing_files_are_named(tmp_path: Path, tiny_root: Path) -> None:
    data = annotations(tiny_root, "val")
    data["annotations"][1]["id"] = data["annotations"][0]["id"]
    error(write(tmp_path, data), tiny_root / "val", "duplicate annotation id")
    with pytest.raises(AnnotationError, match="not found"):
        load_coco(tmp_path / "absent.json")


def test_non_strict_reading_drops_bad_boxes_with_a_warning(tmp_path: Path,
                                                           tiny_root: Path) -> None:
    data = annotations(tiny_root, "val")
    bad = data["annotations"][0]
    bad["bbox"] = [10, 10, 0, 5]
    path = write(tmp_path, data)
    with pytest.warns(UserWarning, match=rf"dropped 1 .*annotation id {bad['id']}\b"):
        ds = CocoDetection(tiny_root / "val", path, strict=False)
    index = ds.ids.index(bad["image_id"])
    n = sum(a["image_id"] == bad["image_id"] for a in data["annotations"])
    assert len(ds[index][1]["boxes"]) == n - 1
