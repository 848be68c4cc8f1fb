"""The briefly trained detector the chapters share: cached, deterministic, consistent outputs."""

from __future__ import annotations

import pytest
import torch

from imbalance.data import CocoDetection
from imbalance.lab import cache, snapshot

SMALL = {"fpn_channels": 16, "min_size": 96, "max_size": 96}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IMBALANCE_CACHE", str(tmp_path / "cache"))


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_snapshot_is_a_brief_fit_run_cached_and_reloaded(monkeypatch):
    first = snapshot.briefly_trained(iterations=3, progress=False, **SMALL)
    assert not first.model.training and len(first.losses) == 3
    assert all(set(r) == {"classification", "bbox_regression"} for r in first.losses)
    assert first.config.preset == "brief" and first.config.optim.iterations == 3
    assert first.config.model.fpn_channels == 16 and first.config.data.min_size == 96
    assert first.out.parent == cache.cache_dir() / "snapshots"
    assert (first.out / "final.json").is_file()  # a train.fit run folder
    # the one synthetic-data cache the chapter runs use too
    assert first.data_root == cache.cache_dir() / "synthetic" / "tiny-seed0"

    def no_training(*args, **kwargs):
        raise AssertionError("a cached snapshot was trained again")

    monkeypatch.setattr("imbalance.train.loop.Trainer._train", no_training)
    again = snapshot.briefly_trained(iterations=3, progress=False, **SMALL)
    assert _same_weights(first.model, again.model) and again.losses == first.losses
    with pytest.raises(AssertionError, match="trained again"):
        snapshot.briefly_trained(iterations=4, progress=False, **SMALL)


def test_snapshot_is_deterministic_and_trains():
    a = snapshot.briefly_trained(iterations=3, cache=False, progress=False, **SMALL)
    b = snapshot.briefly_trained(iterations=3, cache=False, progress=False, **SMALL)
    assert _same_weights(a.model, b.model)
    untrained = snapshot.briefly_trained(iterations=0, cache=False, progress=False, **SMALL)
    assert not _same_weights(a.model, untrained.model)


def test_dense_outputs_are_consistent():
    snap = snapshot.briefly_trained(iterations=0, progress=False, **SMALL)
    data = CocoDetection(snap.data_root, "val")
    out = snapshot.dense_outputs(snap.model, data, num_images=5, batch_size=2)
    assert out.positives.shape == (5,)
    assert out.logits.shape == (int((out.positives + out.negatives).sum()), data.num_classes)
    assert out.targets.shape == out.logits.shape
    assert int(out.targets.sum()) == int(out.positives.sum())
    assert out.deltas.shape == out.box_targets.shape == (int(out.positives.sum()), 4)
    per_image = out.positives + out.negatives + out.ignored
    assert (per_image == per_image[0]).all() and out.ignored.sum() > 0


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="lr"):
        snapshot.briefly_trained(iterations=1, lr=-1.0, progress=False)
    with pytest.raises(ValueError, match="model.name"):
        snapshot.briefly_trained("yolo", iterations=1, progress=False)


def test_rpn_proposals_are_in_the_ground_truth_frame():
    snap = snapshot.briefly_trained("libra_rcnn", iterations=0, progress=False,
                                    rpn_post_nms_top_n_test=50, **SMALL)
    data = CocoDetection(snap.data_root, "val")
    props = snapshot.rpn_proposals(snap.model, data, num_images=2)
    assert len(props) == 2 and not snap.model.training
    for p, i in zip(props, range(2), strict=True):
        assert 0 < p.boxes.shape[0] <= 50 and p.boxes.shape[1] == 4
        scale = SMALL["min_size"] / data[i][0].shape[-1]
        torch.testing.assert_close(p.gt_boxes, data.target(i)["boxes"] * scale)
        assert p.boxes.min() >= 0 and p.boxes.max() <= SMALL["min_size"]
    with pytest.raises(TypeError, match="two-stage"):
        snapshot.rpn_proposals(snapshot.briefly_trained(iterations=0, progress=False,
                                                        **SMALL).model, data)


def test_roi_regression_gives_the_second_stages_positive_rois():
    snap = snapshot.briefly_trained("libra_rcnn", iterations=0, progress=False,
                                    rpn_post_nms_top_n_test=50, **SMALL)
    data = CocoDetection(snap.data_root, "val")
    state = torch.random.get_rng_state()
    out = snapshot.roi_regression(snap.model, data, num_images=3)
    assert torch.equal(torch.random.get_rng_state(), state) and not snap.model.training
    assert out.per_image.shape == (3,) and int(out.per_image.sum()) == out.deltas.shape[0]
    assert out.deltas.shape == out.targets.shape == (out.ious.shape[0], 4)
    # every positive overlaps its box by the second stage's threshold; the gt boxes are added
    assert (out.ious >= snap.model.roi_heads.proposal_matcher.high_threshold - 1e-6).all()
    gt = sum(data.target(i)["boxes"].shape[0] for i in range(3))
    assert int((out.ious > 1 - 1e-6).sum()) >= gt
    # a gt box's target is zero in every coordinate
    torch.testing.assert_close(out.targets[out.ious > 1 - 1e-6].abs().max(), torch.tensor(0.0))
    # sampling is seeded, so the same call gives the same RoIs
    again = snapshot.roi_regression(snap.model, data, num_images=3)
    assert torch.equal(again.deltas, out.deltas) and torch.equal(again.targets, out.targets)
    # the deltas are the predictor's for the RoI's own class: a hand forward of the first image
    images, target, features, proposals = snapshot.rpn_forward(snap.model, data, 1)[0]
    heads = snap.model.roi_heads
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        rois, _, labels, _ = heads.select_training_samples([proposals], [target])
    pos = labels[0] > 0
    with torch.no_grad():
        _, reg = heads.box_predictor(heads.box_head(heads.box_roi_pool(
            features, [rois[0][pos]], images.image_sizes)))
    reg = reg.reshape(int(pos.sum()), -1, 4)
    expected = reg[torch.arange(reg.shape[0]), labels[0][pos]]
    torch.testing.assert_close(out.deltas[: int(out.per_image[0])], expected)
    with pytest.raises(TypeError, match="two-stage"):
        snapshot.roi_regression(snapshot.briefly_trained(iterations=0, progress=False,
                                                         **SMALL).model, data)


def test_an_unreadable_cache_is_trained_again():
    first = snapshot.briefly_trained(iterations=1, progress=False, **SMALL)
    last = first.out / "checkpoints" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    again = snapshot.briefly_trained(iterations=1, progress=False, **SMALL)
    assert _same_weights(first.model, again.model)
    assert torch.load(last, weights_only=False)["step"] == 1


def test_model_options_go_to_their_sections():
    config = snapshot.snapshot_config("retinanet", 20, cls_loss="ce", prior_prob=None,
                                      min_size=96, backbone="resnet18")
    assert config.model.cls_loss == "ce" and config.model.options == {"prior_prob": None}
    assert config.data.min_size == 96 and config.optim.warmup_iters == 2
    other = snapshot.snapshot_config("retinanet", 20, cls_loss="ce", prior_prob=0.01)
    assert cache.run_key(config) != cache.run_key(other)
    assert cache.run_key(other) == cache.run_key(
        snapshot.snapshot_config("retinanet", 20, cls_loss="ce", prior_prob=0.01, progress=False))


def test_the_cache_key_follows_the_library_code(monkeypatch):
    config = snapshot.snapshot_config("retinanet", 3)
    key = cache.run_key(config)
    assert cache.library_fingerprint() == cache._FINGERPRINT  # stable, read from the sources
    monkeypatch.setattr(cache, "_FINGERPRINT", "another version of the losses")
    assert cache.run_key(config) != key


def test_ohem_choice_is_each_images_hardest_valid_anchors():
    from imbalance.ohem import OHEM

    snap = snapshot.briefly_trained(iterations=0, progress=False, **SMALL)
    data = CocoDetection(snap.data_root, "val")
    out = snapshot.dense_outputs(snap.model, data, num_images=3, batch_size=2)
    every = snapshot.ohem_choice(snap.model, data, OHEM(10**6, nms_threshold=1.0), 3, 2)
    assert every.shape == (out.logits.shape[0],) and bool(every.all())
    chosen = snapshot.ohem_choice(snap.model, data, OHEM(5, nms_threshold=None), 3, 2)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(
        out.logits, out.targets, reduction="none").sum(1)
    start = 0
    for n in (out.positives + out.negatives).tolist():  # per image, the 5 highest CE
        mine = chosen[start:start + n]
        assert int(mine.sum()) == 5
        assert ce[start:start + n][mine].min() >= ce[start:start + n][~mine].max()
        start += n
    nms = snapshot.ohem_choice(snap.model, data, OHEM(5), 3, 2)
    assert int(nms.sum()) == 15 and not torch.equal(nms, chosen)  # NMS skips neighbours


def test_protocol_trained_reads_the_shipped_detector(monkeypatch, tmp_path):
    asked = []

    def no_generation(config, progress):
        asked.append(config)
        return tmp_path

    monkeypatch.setattr(snapshot, "ensure_synthetic", no_generation)
    s = snapshot.protocol_trained(progress=False)
    assert (s.config.preset, s.config.model.name, s.config.model.cls_loss) == (
        "protocol", "retinanet", "focal")
    assert s.config.optim.schedule == 4.0  # the campaign's schedule, not the 1x
    assert asked[0].data.synthetic == "small" and asked[0].data.min_size == 128
    assert s.data_root == tmp_path and s.out is None and s.losses == []
    assert s.provenance["steps"] == 4800 and 0.5 < s.provenance["ap"]["AP"] < 1
    assert not s.model.training
    assert all(p.dtype == torch.float32 for p in s.model.parameters())
    monkeypatch.setattr(snapshot, "weights_file", lambda grid, name: tmp_path / "none.pt")
    with pytest.raises(FileNotFoundError, match="ships it when it trains"):
        snapshot.protocol_trained("retinanet", "alpha-CE + SL1")


def test_every_detector_the_chapters_read_is_shipped():
    from imbalance.lab.campaign import KEEP_WEIGHTS, weights_file

    for grid, configuration in snapshot.CHAPTER_DETECTORS:
        assert (grid, configuration) in KEEP_WEIGHTS  # the campaign re-creates it
        assert weights_file(grid, configuration).is_file(), (grid, configuration)
