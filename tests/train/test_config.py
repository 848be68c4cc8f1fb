"""The training configuration: presets, YAML files, overrides, and errors before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import imbalance.train.loop as loop
from imbalance.train import PRESETS, ConfigError, TrainConfig, fit, load_config
from imbalance.train.__main__ import main
from imbalance.train.config import (
    BASE_LR,
    annotation_path,
    apply_overrides,
    learning_rate,
    model_kwargs,
    validate,
)
from imbalance.train.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
REQUIRED = {f"{model}_{preset}.yaml" for model in ("retinanet_focal", "libra_rcnn")
            for preset in ("smoke", "cpu", "gpu")}


def test_the_required_configs_exist():
    assert REQUIRED <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_file_is_valid_and_names_a_preset_and_a_model(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert raw["preset"] in PRESETS and "name" in raw["model"]
    config = load_config(path)
    assert config.name == path.stem
    assert config.preset == raw["preset"]
    assert config.model.name == raw["model"]["name"]


def test_presets_are_defaults_that_yaml_and_overrides_replace(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("preset: smoke\nmodel: {name: retinanet, fpn_channels: 48}\n"
                    "optim: {lr: 1e-3}\n")
    config = load_config(path, ["data.batch_size=3", "model.options.topk_candidates=50",
                                "data.knobs.outlier_fraction=0.2", "run.device=cpu"])
    smoke = PRESETS["smoke"]
    assert config.data.min_size == smoke["data"]["min_size"]  # from the preset
    assert config.model.fpn_channels == 48  # the YAML replaced the preset's 64
    assert config.optim.lr == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert config.data.batch_size == 3  # the override
    assert config.model.options == {"topk_candidates": 50}
    assert config.data.knobs == {"outlier_fraction": 0.2}
    assert model_kwargs(config)["topk_candidates"] == 50


def test_setting_iterations_clears_the_presets_epochs():
    config = load_config(None, ["preset=gpu", "optim.iterations=100"])
    assert (config.optim.iterations, config.optim.epochs) == (100, None)
    config = load_config(None, ["preset=smoke", "optim.epochs=2"])
    assert (config.optim.iterations, config.optim.epochs) == (None, 2)


def test_to_dict_round_trips():
    config = load_config(ROOT / "configs" / "libra_rcnn_smoke.yaml")
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(yaml.safe_load(config.to_yaml())) == config


@pytest.mark.parametrize(("overrides", "needles"), [
    (["optim.lrr=0.1"], ["optim.lrr", "did you mean 'optim.lr'"]),
    (["modle.name=retinanet"], ["modle", "model"]),
    (["model.name=yolo"], ["model.name", "yolo", "libra_rcnn", "retinanet"]),
    (["model.cls_loss=softmax"], ["model.cls_loss", "softmax", "ghm_c"]),
    (["model.box_loss=iou"], ["model.box_loss", "'iou'", "balanced_l1"]),
    (["optim.lr=-0.1"], ["optim.lr", "> 0"]),
    (["optim.lr=0"], ["optim.lr", "> 0"]),
    (["optim.lr=fast"], ["optim.lr", "number"]),
    (["data.batch_size=0"], ["data.batch_size", ">= 1"]),
    (["optim.iterations=null"], ["optim.iterations", "exactly one"]),
    (["preset=huge"], ["preset", "huge", "smoke"]),
    (["run.device=tpu"], ["run.device", "tpu"]),
    (["run.amp=fp8"], ["run.amp", "fp8"]),
    (["model.iou_balanced=true"], ["model.iou_balanced", "libra_rcnn"]),
    (["model.options.norm=bn"], ["model.options.norm", "own key"]),
    (["data.knobs.sparkle=1"], ["data.knobs", "sparkle"]),
    (["data.root=/no/such/folder"], ["data.root", "/no/such/folder"]),
    (["data.num_classes=3"], ["data.num_classes", "3", "6"]),
    (["optim.lr"], ["key=value"]),
    (["data.batch_size=33"], ["data.batch_size", "33", "32 training images"]),
    (["data.max_train_images=3"], ["data.batch_size", "3 training images"]),
    (["model.backbone_width=31"], ["model.backbone_width", "even"]),
    (["model.frozen_stages=5"], ["model.frozen_stages", "-1..4"]),
    (["model.pretrained=no/such.pt"], ["model.pretrained", "no/such.pt", "train.pretrain"]),
])
def test_bad_configs_raise_a_clear_config_error(overrides, needles):
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "retinanet_focal_smoke.yaml", overrides)
    assert isinstance(info.value, ValueError)
    for needle in needles:
        assert needle in str(info.value)


def test_num_classes_is_checked_against_the_annotation_file(tiny_root):
    base = ["preset=smoke", f"data.root={tiny_root}"]
    assert load_config(None, [*base, "data.num_classes=6"]).data.num_classes == 6
    with pytest.raises(ConfigError, match=r"data.num_classes: is 5 but .* has 6 categories"):
        load_config(None, [*base, "data.num_classes=5"])
    with pytest.raises(ConfigError, match="data.val_split"):
        load_config(None, [*base, "data.val_split=test"])
    assert annotation_path(tiny_root, "val").is_file()


def test_a_hand_built_config_is_validated_too():
    config = TrainConfig()
    config.optim.lr = -1.0
    with pytest.raises(ConfigError, match="optim.lr"):
        validate(config)
    config = TrainConfig()
    config.model.name = "detr"
    with pytest.raises(ConfigError, match="model.name"):
        validate(config)


def test_bad_configs_fail_before_any_work(tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(loop, "build_model", no_work)
    monkeypatch.setattr(loop, "data_root", no_work)
    config = load_config(None, ["preset=smoke"], check=False)
    config.model.cls_loss = "nope"
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="model.cls_loss"):
        fit(config, out=out)
    assert not out.exists()
    config = load_config(None, ["preset=smoke", "data.root=null", "data.cache_dir=" +
                                str(tmp_path / "cache")], check=False)
    config.data.num_classes = 2
    with pytest.raises(ConfigError, match="data.num_classes"):
        fit(config, out=out)
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_an_output_folder_holding_a_run_needs_resume_or_overwrite(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: pytest.fail("work started"))
    config = load_config(None, ["preset=smoke"])
    RunDir(tmp_path).prepare(config, overwrite=False)
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--overwrite"):
        fit(config, out=tmp_path)
    other = load_config(None, ["preset=smoke", "optim.lr=0.5", "data.batch_size=2"])
    with pytest.raises(ConfigError, match=r"different configuration \(data.batch_size, optim.lr"):
        fit(other, out=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="exclude each other"):
        fit(config, out=tmp_path, resume=True, overwrite=True)


def test_the_cli_prints_config_errors_and_exits_with_status_2(capsys, tmp_path):
    smoke = str(ROOT / "configs" / "retinanet_focal_smoke.yaml")
    assert main(["--config", smoke, "--out", str(tmp_path / "o"), "model.box_loss=l3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.box_loss") and "Traceback" not in err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_cli_prints_the_resolved_config(capsys):
    smoke = str(ROOT / "configs" / "libra_rcnn_smoke.yaml")
    assert main(["--config", smoke, "--print-config", "optim.iterations=7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["iterations"] == 7 and printed["model"]["name"] == "libra_rcnn"
    assert printed["model"]["options"]["box_batch_size_per_image"] == 64


def test_overwrite_deletes_only_the_run_files(tmp_path):
    config = load_config(None, ["preset=smoke"])
    run = RunDir(tmp_path)
    run.prepare(config, overwrite=False)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    (tmp_path / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("mine")
    other = load_config(None, ["preset=smoke", "optim.lr=0.5"])
    run.prepare(other, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "config.yaml",
                                                          "notes.txt"]
    assert not any((tmp_path / "checkpoints").iterdir())
    assert yaml.safe_load(run.config_file.read_text())["optim"]["lr"] == 0.5


def test_learning_rate_scales_linearly_from_the_authors_base():
    retina = load_config(None, ["preset=protocol", "model.name=retinanet"])
    libra = load_config(None, ["preset=protocol", "model.name=libra_rcnn"])
    assert retina.optim.lr is None and retina.data.batch_size == 4
    assert BASE_LR == {"retinanet": 0.01, "libra_rcnn": 0.02}
    assert learning_rate(retina) == pytest.approx(0.01 * 4 / 16)
    assert learning_rate(libra) == pytest.approx(0.02 * 4 / 16)
    assert learning_rate(retina, world_size=8) == pytest.approx(0.01 * 32 / 16)
    swept = apply_overrides(retina, ["optim.lr_factor=0.5", "optim.base_lr=0.04",
                                     "optim.base_batch=8"])
    assert learning_rate(swept) == pytest.approx(0.04 * 4 / 8 * 0.5)
    fixed = apply_overrides(retina, ["optim.lr=0.1", "optim.lr_factor=2"])
    assert learning_rate(fixed, world_size=4) == pytest.approx(0.2)
    for bad in ("optim.lr_factor=0", "optim.base_batch=0", "optim.base_lr=-1",
                "optim.schedule=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            validate(apply_overrides(retina, [bad]))


def test_overrides_may_stand_on_both_sides_of_an_option(capsys):
    """Issue 13, item 11: ``--config C run.device=cpu --out D optim.iterations=4`` was refused
    with "unrecognized arguments"."""
    config = ROOT / "configs" / "retinanet_focal_smoke.yaml"
    assert main(["--config", str(config), "run.device=cpu", "--out", "somewhere",
                 "optim.iterations=4", "--print-config", "optim.lr=0.5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run"]["device"] == "cpu" and printed["optim"]["iterations"] == 4
    assert printed["optim"]["lr"] == 0.5


@pytest.mark.parametrize(("model", "key", "suggestion"), [
    ("retinanet", "topk_candidate", "topk_candidates"),
    ("retinanet", "binning", None),            # a Libra option on RetinaNet
    ("libra_rcnn", "ghm_scope", None),         # a RetinaNet option on Libra R-CNN
    ("libra_rcnn", "box_batch_size_per_imag", "box_batch_size_per_image"),
])
def test_model_options_nothing_takes_are_refused_by_name(model, key, suggestion):
    """Issue 13, item 4: options nothing takes vanished into torchvision's **kwargs."""
    from imbalance.models import build_model

    with pytest.raises(ConfigError, match=f"model.options.{key}: {model} takes no option"):
        load_config(None, ["preset=smoke", f"model.name={model}", f"model.options.{key}=1"])
    with pytest.raises(ValueError, match=f"takes no option '{key}'") as info:
        build_model(model, 3, **{key: 1})
    if suggestion:
        assert f"did you mean '{suggestion}'" in str(info.value)


def _dataset_with(tmp_path, tiny_root, edit):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root / "annotations", root / "annotations")
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return root


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d["categories"][0].update(id="one"), "has id 'one'; COCO category ids"),
    (lambda d: d.update(categories=[], annotations=[]), "has no categories"),
    (lambda d: d["annotations"][0].update(category_id=99), "category"),
])
def test_bad_annotation_files_are_refused_before_a_run_starts(tmp_path, tiny_root, edit, match):
    """Issue 13, item 10: a string category id gave a TypeError, no categories a traceback in
    the model factory, and an unknown category passed validation and left a config.yaml."""
    root = _dataset_with(tmp_path, tiny_root, edit)
    with pytest.raises(ConfigError, match=f"data.train_split: .*{match}"):
        load_config(None, ["preset=smoke", f"data.root={root}"])
    out = tmp_path / "run"
    assert main(["--preset", "smoke", f"data.root={root}", "--out", str(out)]) == 2
    assert not (out / "config.yaml").exists()


def test_a_data_root_that_is_a_file_is_called_a_file(tmp_path):
    (tmp_path / "f.json").write_text("{}")
    with pytest.raises(ConfigError, match="is a file; give the dataset's folder"):
        load_config(None, ["preset=smoke", f"data.root={tmp_path / 'f.json'}"])


def test_pretrained_weights_must_fit_the_model_and_reach_it(tmp_path):
    from imbalance.models.backbones import resnet, save_backbone_weights
    path = save_backbone_weights(tmp_path / "w.pt", resnet("resnet18", "gn", 8),
                                 {"backbone": "resnet18", "width": 8, "norm": "gn"}, {})
    smoke = ROOT / "configs" / "retinanet_focal_smoke.yaml"
    good = ["model.norm=gn", "model.backbone_width=8", f"model.pretrained={path}",
            "model.frozen_stages=1"]
    config = load_config(smoke, good)
    kwargs = model_kwargs(config)
    assert (kwargs["pretrained"], kwargs["backbone_width"], kwargs["frozen_stages"]) == (
        str(path), 8, 1)
    assert "pretrained" not in model_kwargs(load_config(smoke))  # the defaults pass nothing new
    with pytest.raises(ConfigError, match=r"model.pretrained: the weights are for .*'width': 8"):
        load_config(smoke, [*good, "model.backbone_width=16"])
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(ConfigError, match="model.pretrained: .* not a readable weight file"):
        load_config(smoke, [*good[:2], f"model.pretrained={tmp_path / 'junk.pt'}"])
