"""The day-one options on the command line: --patience, --restore-best, --class-weight,
--sampler, --log-dir, --lr find, and --task for a CSV of the user's own images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import thumbnail_photos

import tlkit
from tlkit.cli import main
from tlkit.errors import ConfigError

FAST = ["--backbone", "small_cnn", "--image-size", "8", "--set", "progress=false"]


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    err = captured.err.strip()
    assert err.startswith("tlkit: error:") and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def fit_options(monkeypatch):
    """The options `tlkit fit` hands to tlkit.fit (the fit itself is stopped right there)."""
    seen: dict = {}

    def fake_fit(data, backbone, **options):
        seen.update(options, data=data, backbone=backbone)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(tlkit, "fit", fake_fit)
    return seen


def test_each_flag_reaches_fit(fit_options, capsys):
    argv = ["fit", "--data", "digits", *FAST, "--patience", "3", "--restore-best"]
    argv += ["--class-weight", "balanced", "--sampler", "balanced", "--log-dir", "logs"]
    argv += ["--lr", "find"]
    assert main(argv) == 2
    assert "stopped by the test" in capsys.readouterr().err
    assert fit_options["patience"] == "3" and fit_options["restore_best"] is True
    assert fit_options["class_weight"] == "balanced" and fit_options["sampler"] == "balanced"
    assert fit_options["log_dir"] == "logs" and fit_options["lr"] == "find"
    config = tlkit.FitConfig(**{k: v for k, v in fit_options.items() if k not in ("data", "resume")})
    assert (config.patience, config.restore_best, config.lr) == (3, True, "find")


def test_class_weight_takes_a_list_or_a_mapping(fit_options):
    main(["fit", "--data", "digits", *FAST, "--class-weight", "[1, 2.5, 0]"])
    assert fit_options["class_weight"] == [1, 2.5, 0]
    main(["fit", "--data", "digits", *FAST, "--class-weight", "{cat: 2, dog: 1}"])
    assert fit_options["class_weight"] == {"cat": 2, "dog": 1}


def test_flags_left_out_leave_the_defaults(fit_options):
    main(["fit", "--data", "digits", *FAST])
    for name in ("patience", "restore_best", "class_weight", "sampler", "log_dir", "lr"):
        assert name not in fit_options


def test_a_real_run_with_the_stopping_and_balance_flags(tmp_path, capsys):
    log_dir = tmp_path / "logs"
    argv = ["fit", "--data", "digits", *FAST, "--epochs", "2", "--batch-size", "64"]
    argv += ["--patience", "1", "--restore-best", "--set", "monitor=source_accuracy"]
    argv += ["--class-weight", "balanced", "--sampler", "balanced", "--log-dir", str(log_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "source_accuracy" in out
    rows = list(csv.DictReader((log_dir / "metrics.csv").open()))
    assert rows and "loss" in rows[0]


def test_lr_find_on_the_command_line_says_the_pick(capsys):
    argv = ["fit", "--data", "digits", *FAST, "--epochs", "1", "--lr", "find"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith("lr finder picked")]) == 1


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--patience", "0"], "patience"),
        (["--patience", "soon"], "patience"),
        (["--class-weight", "[1, -2]"], "class_weight"),
        (["--class-weight", "heavy"], "balanced"),
        (["--class-weight", "[1"], "--class-weight"),
        (["--sampler", "sometimes"], "sampler"),
        (["--lr", "fast"], "lr"),
        (["--log-dir", ""], "log_dir"),
        (["--task", "regresion"], "regression"),
        (["--task", "regression"], "folder or CSV"),  # a bundled dataset knows its task
    ],
)
def test_bad_values_get_one_line(flags, words, capsys):
    assert main(["fit", "--data", "digits", *FAST, *flags]) == 2
    assert words in _one_error(capsys)


@pytest.fixture(scope="module")
def regression_csv(tmp_path_factory) -> Path:
    """Images with a number each: their class id as a float (0.05, 0.35, 0.65, 0.95)."""
    photos = thumbnail_photos(tmp_path_factory.mktemp("cli-regression"), per_class=6)
    rows = [(rel, f"{0.3 * k + 0.05:.2f}") for rel, k in zip(photos.images, photos.labels)]
    path = photos.root / "labels.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label"), *rows])
    return path


def test_task_regression_on_a_csv_of_numbers(regression_csv, capsys, tmp_path):
    argv = ["fit", "--data", str(regression_csv), "--task", "regression", *FAST, "--epochs", "1"]
    assert main([*argv, "--save", str(tmp_path / "r.pt")]) == 0
    out = capsys.readouterr().out
    assert "mae" in out and "accuracy" not in out
    assert "held out" in out and "stratified" not in out  # a random split for numbers
    assert tlkit.load(tmp_path / "r.pt").task == "regression"


def test_task_classification_on_a_csv_of_numbers(regression_csv, capsys):
    argv = ["fit", "--data", str(regression_csv), "--task", "classification", *FAST]
    assert main([*argv, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "stratified" in out


def test_task_regression_on_a_folder_reads_the_folder_names(regression_csv, capsys, tmp_path):
    folder = regression_csv.parent  # class folders named after their photos: not numbers
    assert main(["fit", "--data", str(folder), "--task", "regression", *FAST]) == 2
    err = _one_error(capsys)
    assert "'astronaut'" in err and "not a number" in err and "CSV" in err
    values = tmp_path / "values"
    for k, name in enumerate(("chelsea", "coffee", "rocket")):
        shutil.copytree(folder / name, values / f"{0.3 * k:.1f}")
    argv = ["fit", "--data", str(values), "--task", "regression", *FAST, "--epochs", "1"]
    assert main([*argv, "--save", str(tmp_path / "v.pt")]) == 0
    assert "mae" in capsys.readouterr().out
    assert tlkit.load(tmp_path / "v.pt").task == "regression"
