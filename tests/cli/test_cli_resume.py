"""`tlkit fit --resume` continues a run whose options were set on the first command line: flags
left out take the checkpoint's values, and the command says so."""

from __future__ import annotations

import torch

from tlkit.cli import main

FIT = ["fit", "--data", "digits", "--backbone", "small_cnn", "--mode", "full", "--epochs", "2"]


def test_resume_without_the_batch_size_flag_continues_the_run(tmp_path, capsys):
    folder = str(tmp_path / "ckpt")
    first = [*FIT, "--batch-size", "32", "--checkpoint-dir", folder, "--set", "max_steps=3"]
    assert main([*first, "--set", "progress=false"]) == 0
    assert torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)["state"]["step"] == 3
    capsys.readouterr()
    again = [*FIT, "--checkpoint-dir", folder, "--resume", "--set", "progress=false"]
    assert main(again) == 0
    captured = capsys.readouterr()
    assert "batch_size=32" in captured.err and "left at its default" in captured.err
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert saved["identity"]["batch_size"] == 32 and saved["state"]["epoch"] == 2
    assert main([*again[:-2], "--batch-size", "16", "--set", "progress=false"]) == 2
    assert "differs in batch_size (32 there, 16 here)" in capsys.readouterr().err
