"""Weight files: a finished run's trained detector, shipped small and read back with its origin."""

from __future__ import annotations

import pytest
import torch

from imbalance.train import fit
from imbalance.train.weights import describe, export_weights, load_weights, main


@pytest.fixture(scope="module")
def finished(smoke_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return fit(smoke_config("optim.iterations=4", "run.seed=3"), out=out)


def _outputs(model, images):
    with torch.no_grad():
        return model.eval()(images)


def test_a_weight_file_gives_back_the_trained_detector(finished, tmp_path):
    images = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    want = _outputs(finished.model, images)
    exact = load_weights(export_weights(finished.out, tmp_path / "w32.pt", torch.float32))
    got = _outputs(exact.model, images)
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    assert exact.config == finished.config
    assert exact.provenance["ap"] == finished.final["ap"]
    assert exact.provenance["steps"] == 4 and exact.config.run.seed == 3
    assert "seed 3" in describe(exact) and "4 steps" in describe(exact)

    half = tmp_path / "w16.pt"
    assert main(["export", str(finished.out), str(half)]) == 0
    assert half.stat().st_size < 0.6 * (tmp_path / "w32.pt").stat().st_size
    rounded = load_weights(half).model
    for name, p in rounded.state_dict().items():
        ref = finished.model.state_dict()[name]
        assert p.dtype == ref.dtype  # read back as float32
        if p.is_floating_point():
            assert torch.allclose(p, ref, rtol=1e-3, atol=1e-4), name


def test_what_cannot_be_exported_or_loaded_says_why(finished, tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run"):
        export_weights(tmp_path, tmp_path / "w.pt")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "final.json").write_bytes((finished.out / "final.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="weights of the run are gone"):
        export_weights(bare, tmp_path / "w.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a weight file"):
        load_weights(tmp_path / "other.pt")
