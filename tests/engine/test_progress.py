"""The default progress observer: a live bar on a terminal, one line per epoch in a log file.

Why: ``tlkit fit`` and ``tlkit demo`` run in CI jobs and under ``nohup ... > log``. tqdm's text
bar redraws itself with carriage returns on every step; in a file that is one fragment per step
(megabytes over a long run). When the output is not a terminal the observer prints one line per
epoch instead.
"""

from __future__ import annotations

import io

import tlkit
from tlkit.engine.progress import ProgressBar


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_one_line_per_epoch_and_no_bar_fragments(tiny_task, fast):
    log = io.StringIO()  # not a terminal, like `> train.log` or a CI job
    run = tlkit.fit(
        tiny_task,
        epochs=3,
        observers=[ProgressBar(stream=log)],
        **fast,  # progress=False: only the observer under test writes
    )
    text = log.getvalue()
    assert "\r" not in text, "tqdm bar fragments in a log file"
    lines = text.strip().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 3 and len(lines) <= 5, lines  # a header, 3 epochs, a footer
    last = epoch_lines[-1]
    assert "3/3" in last and f"{run.last['source_accuracy']:.4f}" in last
    assert "step " in last and "elapsed" in last


def test_terminal_gets_a_live_bar(tiny_task, fast):
    tty = FakeTTY()
    tlkit.fit(tiny_task, epochs=2, observers=[ProgressBar(stream=tty)], **fast)
    assert "\r" in tty.getvalue() and "epoch 2:" in tty.getvalue()


def test_cli_fit_in_a_log_file_is_short(tmp_path, capfd):
    from tlkit.cli import main

    argv = ["fit", "--data", "digits", "--backbone", "small_cnn", "--epochs", "2"]
    assert main([*argv, "--set", "log_every=1", "--image-size", "8", "--batch-size", "128"]) == 0
    out, err = capfd.readouterr()
    assert "\r" not in err and len((out + err).splitlines()) < 30, (out + err)[-2000:]
    assert sum(line.startswith("epoch ") for line in (out + err).splitlines()) == 2
