"""Training inside a chapter: the preset follows the machine, files stay out of the notebook's
folder, and a chapter's run starts afresh each time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imbalance.train import chapter_config, chapter_preset, train_in_chapter
from imbalance.train.live import CONFIGS
from tests.train.conftest import fast


def test_chapter_preset_follows_the_environment_and_the_device() -> None:
    assert chapter_preset({}, cuda=False) == "cpu"
    assert chapter_preset({}, cuda=True) == "gpu"
    assert chapter_preset({"IMBALANCE_SMOKE": "1"}, cuda=True) == "smoke"
    assert chapter_preset({"IMBALANCE_SMOKE": "0"}, cuda=False) == "cpu"
    assert chapter_preset({"IMBALANCE_SMOKE": "1", "IMBALANCE_PRESET": "cpu"}, cuda=True) == "cpu"
    with pytest.raises(ValueError, match="IMBALANCE_PRESET"):
        chapter_preset({"IMBALANCE_PRESET": "tpu"})


def test_chapter_config_puts_the_synthetic_data_in_the_cache(tmp_path: Path) -> None:
    config = chapter_config("retinanet_focal", "smoke", ["data.knobs.outlier_fraction=0.1"],
                            cache=tmp_path)
    assert config.preset == "smoke" and config.model.cls_loss == "focal"
    folder = Path(config.data.cache_dir)
    assert folder.parent == tmp_path / "synthetic" and folder.name.startswith("tiny-seed0-")
    other = chapter_config("retinanet_focal", "smoke", cache=tmp_path)
    assert Path(other.data.cache_dir) == tmp_path / "synthetic" / "tiny-seed0"
    named = chapter_config("libra_rcnn", "cpu", [f"data.cache_dir={tmp_path / 'mine'}"],
                           cache=tmp_path)  # a folder of one's own is kept
    assert named.data.cache_dir == str(tmp_path / "mine") and named.model.name == "libra_rcnn"
    assert all((CONFIGS / f"{b}_{p}.yaml").is_file() for b in ("retinanet_focal", "libra_rcnn")
               for p in ("smoke", "cpu", "gpu"))
    with pytest.raises(FileNotFoundError, match="retinanet_focal"):
        chapter_config("yolo", "smoke", cache=tmp_path)


def test_train_in_chapter_trains_afresh_into_the_cache(tmp_path: Path, tiny_root: Path) -> None:
    overrides = [*fast(tiny_root), "optim.iterations=3"]
    first = train_in_chapter("retinanet_focal", "smoke", overrides, cache=tmp_path)
    assert first.out == tmp_path / "runs" / "retinanet_focal_smoke"
    assert set(first.ap) >= {"AP", "AP50"} and first.final["steps"] == 3
    stamp = json.loads((first.out / "final.json").read_text())["date"]
    again = train_in_chapter("retinanet_focal", "smoke", [*fast(tiny_root), "optim.iterations=2"],
                             cache=tmp_path)  # another configuration in the same folder
    assert again.out == first.out and again.final["steps"] == 2
    assert json.loads((again.out / "final.json").read_text())["date"] >= stamp
