"""Checkpoints: atomic writes, weights_only loads, clear errors for corrupt or foreign files."""

from __future__ import annotations

import pytest
import torch

import tlkit
from tlkit.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_a_crash_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)

    def dies_half_way(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_loads_use_weights_only(tmp_path, monkeypatch):
    path = save_checkpoint({"x": 1}, tmp_path / "c.pt")
    seen = {}
    real = torch.load

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert seen["weights_only"] is True


class Payload:
    """An arbitrary Python object: unpickling it could run code, so weights_only refuses it."""


def test_corrupt_foreign_and_missing_files_are_explained(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="could not be read.*corrupt"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not a tlkit checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "tlkit-checkpoint", "obj": Payload()}, pickled)
    with pytest.raises(CheckpointError, match="pickled Python objects") as refused:
        load_checkpoint(pickled)  # weights_only refuses arbitrary objects
    assert "weights_only" not in str(refused.value)  # never advise loading it unsafely
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_run_save_and_load_round_trip(tiny_task, fast, tmp_path):
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    path = run.save(tmp_path / "run.pt")
    again = tlkit.load(path)
    assert again.history == run.history and again.classes == ["a", "b", "c", "d"]
    x = tiny_task.source_test.images
    assert torch.equal(again.predict(x), run.predict(x))
    assert "source_accuracy" in repr(again)


def test_loading_into_the_wrong_model_is_explained(tiny_task, fast, tmp_path):
    run = tlkit.fit(tiny_task, epochs=1, **fast)
    path = run.save(tmp_path / "run.pt")
    other = tlkit.backbones.create_model("small_cnn", 7, pretrained=False)
    with pytest.raises(CheckpointError, match=r"another architecture \(shapes differ: head.fc"):
        tlkit.load(path, model=other)
