"""`tlkit evaluate` decodes and runs a user's photos in batches a laptop's memory holds, and takes
--batch-size as `tlkit predict` does."""

from __future__ import annotations

import pytest

import tlkit
from tlkit.cli import EVAL_BATCH_SIZE, main


@pytest.fixture(scope="module")
def saved_digits_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-batch") / "run.pt"
    run = tlkit.fit("digits", "small_cnn", epochs=1, max_steps=1, progress=False)
    return run.save(path)


@pytest.fixture
def batch_sizes(monkeypatch):
    seen = []
    evaluate = tlkit.Run.evaluate

    def spy(self, data=None, **kwargs):
        seen.append(kwargs.get("batch_size"))
        return evaluate(self, data, **kwargs)

    monkeypatch.setattr(tlkit.Run, "evaluate", spy)
    return seen


def test_evaluate_batch_size_defaults_to_predicts_and_can_be_set(
    saved_digits_run, batch_sizes, capsys
):
    assert main(["evaluate", str(saved_digits_run), "--data", "digits"]) == 0
    assert batch_sizes and set(batch_sizes) == {EVAL_BATCH_SIZE} and EVAL_BATCH_SIZE <= 64
    batch_sizes.clear()
    assert main(["evaluate", str(saved_digits_run), "--data", "digits", "--batch-size", "8"]) == 0
    assert batch_sizes and set(batch_sizes) == {8}
    assert capsys.readouterr().out.count("accuracy=") >= 2


def test_evaluate_batch_size_must_be_positive(saved_digits_run, capsys):
    assert main(["evaluate", str(saved_digits_run), "--data", "digits", "--batch-size", "0"]) == 2
    assert "--batch-size 0" in capsys.readouterr().err
