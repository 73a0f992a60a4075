"""A run's checkpoints are one object the trainer owns (``trainer.checkpoints``): the folder, the
last good ``last.pt``, the run's identity and the checkpoint a resume read all live there, not in
module-level tables keyed by trainer."""

from __future__ import annotations

import pytest

import tlkit
from tlkit.engine import checkpoint, resume, resume_defaults
from tlkit.errors import TrainingError


def test_the_trainer_owns_its_checkpoints_and_knows_the_last_good_one(tiny_task, fast, tmp_path):
    trainer = tlkit.Trainer(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), **fast)
    assert isinstance(trainer.checkpoints, resume.RunCheckpoints)
    assert trainer.checkpoints.last is None
    assert "No checkpoint had been written yet" in trainer.checkpoints.note()
    trainer.fit()
    assert trainer.checkpoints.last == tmp_path / "last.pt"
    assert str(tmp_path / "last.pt") in trainer.checkpoints.note()


def test_without_a_folder_nothing_is_written_and_the_note_says_how_to_keep_one(tiny_task, fast):
    trainer = tlkit.Trainer(tiny_task, epochs=1, **fast)
    trainer.fit()
    assert trainer.checkpoints.save("last.pt") is None
    assert trainer.checkpoints.last is None
    assert "set checkpoint_dir=" in trainer.checkpoints.note()


def test_two_runs_in_one_process_keep_their_own_identity(tiny_task, fast, tmp_path):
    other = tiny_task.__class__(
        tiny_task.source.subset(list(range(64))),
        tiny_task.source_test,
        tiny_task.target,
        tiny_task.target_test,
        name=tiny_task.name,
    )
    a = tlkit.Trainer(tiny_task, epochs=1, checkpoint_dir=str(tmp_path / "a"), **fast)
    b = tlkit.Trainer(other, epochs=1, checkpoint_dir=str(tmp_path / "b"), **fast)
    assert a.checkpoints.identity()["data"] != b.checkpoints.identity()["data"]
    a.fit()
    b.fit()
    assert a.checkpoints.last == tmp_path / "a" / "last.pt"
    assert b.checkpoints.last == tmp_path / "b" / "last.pt"


def test_a_resumed_run_reads_its_checkpoint_once(tiny_task, fast, tmp_path, monkeypatch):
    tlkit.fit(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), max_steps=3, **fast)
    reads = []
    real = checkpoint.read

    def counting(path, *args, **kwargs):
        reads.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "read", counting)
    trainer = tlkit.Trainer(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), **fast)
    trainer.fit(resume=True)
    assert reads == [tmp_path / "last.pt"]
    assert trainer.checkpoints.last == tmp_path / "last.pt"
    assert trainer.state.step > 3


def test_the_defaults_a_resume_takes_are_reported_with_the_checkpoint_read(
    tiny_task, fast, tmp_path
):
    opts = {k: v for k, v in fast.items() if k != "batch_size"}
    tlkit.fit(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), max_steps=2, batch_size=8, **opts)
    trainer = tlkit.Trainer(tiny_task, epochs=2, checkpoint_dir=str(tmp_path), **opts)
    adopted = resume_defaults.adopt(trainer, True)
    assert isinstance(adopted, resume_defaults.Adopted)
    assert adopted.path == tmp_path / "last.pt"
    assert adopted.changes == {"batch_size": 8}
    assert trainer.config.batch_size == 8
    assert resume_defaults.adopt(trainer, tmp_path / "missing.pt") is None


def test_a_diverged_run_names_the_checkpoint_it_kept(tiny_task, fast, tmp_path, monkeypatch):
    trainer = tlkit.Trainer(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), **fast)
    trainer.fit()
    kept = trainer.checkpoints.last
    assert kept is not None

    def refuse(*args, **kwargs):
        raise checkpoint.NonFiniteError(tmp_path / "last.pt", "optimizer.state.0.exp_avg_sq")

    monkeypatch.setattr(checkpoint, "write", refuse)
    with pytest.raises(TrainingError, match="kept at .*last.pt") as err:
        trainer.checkpoints.save("last.pt")
    assert "optimizer.state.0.exp_avg_sq" in str(err.value)
    assert trainer.checkpoints.last == kept
