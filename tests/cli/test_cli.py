"""The `tlkit` command line: listings, fit with flags and a config file, evaluate, demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tlkit
from tlkit.cli import main


def test_listings(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.split()
    assert "synth-digits->digits" in out and "digits->digits-m" in out
    assert main(["backbones"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["strategies"]) == 0
    assert "cross_entropy" in capsys.readouterr().out


def test_fit_with_config_file_and_overrides_then_evaluate(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text(
        "data: digits\nbackbone: small_cnn\nepochs: 3\nmode: full\nlr: 0.003\nprogress: false\n"
    )
    saved, plot = tmp_path / "run.pt", tmp_path / "curves.png"
    code = main(
        [
            "fit",
            "--config",
            str(config),
            "--set",
            "epochs=2",
            "--set",
            "batch_size=32",
            "--save",
            str(saved),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "source_accuracy" in out and saved.exists() and plot.stat().st_size > 5000
    run = tlkit.load(saved)
    assert len(run.history) == 2 and run.config.batch_size == 32  # --set won over the file
    assert run.last["source_accuracy"] > 0.7
    assert main(["evaluate", str(saved), "--data", "digits"]) == 0
    assert "accuracy=" in capsys.readouterr().out


def test_bad_input_exits_2_with_the_fix(capsys, tmp_path):
    assert main(["fit", "--data", "mnist-typo", "--backbone", "small_cnn"]) == 2
    err = capsys.readouterr().err
    assert "mnist-typo" in err and "digits" in err
    assert main(["fit", "--data", "digits", "--backbone", "resnet9000"]) == 2
    assert "resnet9000" in capsys.readouterr().err
    assert main(["fit", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "tlkit: error: config file" in capsys.readouterr().err
    assert main(["fit", "--backbone", "small_cnn"]) == 2
    assert "--data NAME" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "tlkit"
    assert exe.exists(), "pip install should put the `tlkit` console script next to python"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and "fit" in out


def test_demo_quick_prints_table_and_saves_plot(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out.split("method", 1)[1]
    for method in ("from scratch (small_cnn)", "linear probe (ImageNet, frozen)", "fine-tune"):
        assert method in table
    assert "test_acc" in out and "over training from scratch" in out
    assert (tmp_path / "learning_curves.png").stat().st_size > 10_000
