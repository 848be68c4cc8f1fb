"""Atomic writes leave the old file or the new one; JSON-lines files read back with line numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imbalance.files import read_jsonl, write_atomic, write_json_atomic, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "final.json"
    write_text_atomic(path, "old\n")

    def half(f):
        f.write("new, half")
        raise KeyboardInterrupt  # killed in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half)
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "final.json"]


def test_binary_durable_writes_and_folders_are_made(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.pt"
    write_atomic(path, lambda f: torch.save({"w": torch.arange(3)}, f), binary=True, durable=True)
    assert torch.equal(torch.load(path)["w"], torch.arange(3))


def test_json_takes_numpy_and_torch_scalars_and_paths(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "x.json", {"a": np.float32(0.5), "b": torch.tensor(2),
                                                   "c": tmp_path})
    assert path.read_text().endswith("}\n")
    assert path.read_text().replace(" ", "").replace("\n", "").startswith('{"a":0.5,"b":2,')
    with pytest.raises(TypeError, match="object"):
        write_json_atomic(tmp_path / "y.json", {"a": object()})
    assert not (tmp_path / "y.json").exists()


def test_read_jsonl_skips_blank_lines_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"step": \n')
    with pytest.raises(ValueError, match="metrics.jsonl: line 2"):
        read_jsonl(path)
