"""The run's data: the deterministic epoch order and its shards, seeded flips, the synthetic
benchmark's cache."""

from __future__ import annotations

import torch

from imbalance.train import load_config
from imbalance.train.config import synthetic_cache_dir
from imbalance.train.data import (
    SeededTrainingSet,
    batch_indices,
    data_root,
    ensure_synthetic,
    load_data,
    train_loader,
)
from imbalance.train.distributed import DistInfo, epoch_order, shard_batches


def test_the_epoch_order_is_a_seeded_permutation():
    order = epoch_order(10, seed=3, epoch=0)
    assert sorted(order) == list(range(10))
    assert order == epoch_order(10, seed=3, epoch=0)
    assert order != epoch_order(10, seed=3, epoch=1)
    assert order != epoch_order(10, seed=4, epoch=0)


def test_ranks_get_disjoint_slices_of_the_global_batches():
    order = epoch_order(11, seed=0, epoch=2)
    whole = shard_batches(order, batch_size=4)
    halves = [shard_batches(order, batch_size=2, rank=r, world_size=2) for r in range(2)]
    assert len(whole) == len(halves[0]) == len(halves[1]) == 2  # the last 3 items are dropped
    for step, batch in enumerate(whole):
        assert halves[0][step] + halves[1][step] == batch


def test_flips_are_fixed_by_seed_epoch_and_image(tiny_root):
    config = load_config(None, ["preset=smoke", f"data.root={tiny_root}", "data.hflip=0.5"])
    data = load_data(config, tiny_root)
    assert isinstance(data.train, SeededTrainingSet) and len(data.train) == 32

    def images(epoch):
        return [data.train[(i, epoch)][0] for i in range(8)]

    first = images(0)
    torch.manual_seed(123)  # the global generator plays no part
    assert all(torch.equal(a, b) for a, b in zip(first, images(0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, images(1), strict=True))


def test_max_images_restrict_the_training_and_validation_sets(tiny_root):
    config = load_config(None, ["preset=smoke", f"data.root={tiny_root}",
                                "data.max_train_images=5", "data.max_val_images=3"])
    data = load_data(config, tiny_root)
    assert len(data.train) == 5 and len(data.val) == 3
    assert len(data.gt.getImgIds()) == 3


def test_the_synthetic_benchmark_is_generated_once_and_regenerated_when_stale(tmp_path):
    cache = tmp_path / "cache"
    small = ["preset=smoke", "data.root=null", f"data.cache_dir={cache}", "run.progress=false",
             "data.knobs.train_images=4", "data.knobs.val_images=2", "data.batch_size=2"]
    config = load_config(None, small)
    assert synthetic_cache_dir(config) == cache and not cache.exists()
    assert data_root(config, DistInfo(), progress=False) == cache
    stamp = (cache / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert ensure_synthetic(config, progress=False) == cache
    assert (cache / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    assert len(list((cache / "train").iterdir())) == 4

    changed = load_config(None, [*small, "data.knobs.train_images=3"])
    assert ensure_synthetic(changed, progress=False) == cache
    assert len(list((cache / "train").iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no temporary folder left

    default = load_config(None, ["preset=smoke", "data.knobs.outlier_fraction=0.1"])
    assert synthetic_cache_dir(default).parent.as_posix() == "data/synthetic"
    assert synthetic_cache_dir(default).name.startswith("tiny-seed0-")


def test_batch_indices_name_the_images_the_loader_loads(tiny_root):
    config = load_config(None, ["preset=brief", f"data.root={tiny_root}", "run.device=cpu"])
    data = load_data(config, tiny_root)
    batches = batch_indices(config, len(data.train), epoch=1)
    assert len(batches) == len(data.train) // 4 and all(len(b) == 4 for b in batches)
    loader = train_loader(data, config, DistInfo(), epoch=1)
    _, first_targets = next(iter(loader))
    expected = [data.train.dataset.ids[i] for i in batches[0]]
    assert [t["image_id"] for t in first_targets] == expected
    assert batch_indices(config, len(data.train), epoch=2) != batches
