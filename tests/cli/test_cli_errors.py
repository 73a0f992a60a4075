"""Bad input to the `tlkit` command gets one or two lines naming the problem and the fix (exit
status 2), never a traceback; Ctrl-C exits 130 in one line; the CLI works on folders and CSVs.
The option rules behind it (FitConfig, tlkit.fit) are checked here too."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import thumbnail_photos

import tlkit
from tlkit.cli import main
from tlkit.datasets import DataError, DomainPair
from tlkit.errors import ConfigError


def _one_error(capsys, max_lines: int = 2) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert err.startswith("tlkit: error:"), err
    assert 1 <= len(err.splitlines()) <= max_lines, err
    return err


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    return thumbnail_photos(tmp_path_factory.mktemp("cli-photos"), per_class=6).root


@pytest.fixture(scope="module")
def saved_run(small_folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli-run") / "run.pt"
    run = tlkit.fit(
        tlkit.datasets.from_folder(small_folder, progress=False),
        "small_cnn",
        epochs=1,
        image_size=16,
        progress=False,
    )
    return run.save(path)


# -- values from the command line ---------------------------------------------------------------
def test_set_value_that_is_not_yaml(capsys):
    assert main(["fit", "--data", "digits", "--backbone", "small_cnn", "--set", "lr=[1"]) == 2
    err = _one_error(capsys)
    assert "--set lr=[1" in err and "quote" in err


def test_set_python_tag_runs_no_code(capsys, monkeypatch):
    def forbidden(*args):
        raise AssertionError("a YAML tag ran code")

    monkeypatch.setattr(os, "system", forbidden)
    argv = ["fit", "--data", "digits", "--backbone", "small_cnn"]
    assert main([*argv, "--set", "lr=!!python/name:os.system"]) == 2
    err = _one_error(capsys)
    assert "--set lr=" in err and "tag" in err


def test_config_file_that_is_not_yaml(tmp_path, capsys):
    bad = tmp_path / "exp.yaml"
    bad.write_text("data: digits\nlr: [1\nepochs: 2\n")
    assert main(["fit", "--config", str(bad)]) == 2
    assert "exp.yaml" in _one_error(capsys)


def test_seed_beyond_the_generators_range(capsys):
    argv = ["fit", "--data", "digits", "--backbone", "small_cnn", "--epochs", "1"]
    assert main([*argv, "--seed", "1180591620717411303424"]) == 2
    err = _one_error(capsys)
    assert "seed" in err and str(2**32 - 1) in err
    with pytest.raises(ConfigError, match="seed"):
        tlkit.FitConfig(seed=2**40)
    assert main(["demo", "--quick", "--seed", str(2**70)]) == 2
    assert "seed" in _one_error(capsys)


def test_predict_batch_size_and_workers_are_checked(saved_run, small_folder, capsys):
    assert main(["predict", str(saved_run), str(small_folder), "--batch-size", "0"]) == 2
    assert "batch_size" in _one_error(capsys)
    assert main(["predict", str(saved_run), str(small_folder), "--workers", "-1"]) == 2
    assert "num_workers" in _one_error(capsys)


@pytest.mark.parametrize(("data", "fits"), [("wine", "'mlp'"), ("docstrings", "'text_bag'")])
def test_image_backbone_on_tensor_data_names_the_backbones_that_fit(data, fits, capsys):
    assert main(["fit", "--data", data, "--backbone", "small_cnn", "--epochs", "1"]) == 2
    err = _one_error(capsys)
    assert "small_cnn" in err and fits in err


def test_text_backbone_on_feature_rows_is_refused():
    with pytest.raises(ConfigError, match="'mlp'"):
        tlkit.fit("wine", "text_bag", epochs=1, progress=False)


def test_ctrl_c_during_fit_is_one_line_and_frees_the_folder(tmp_path):
    exe = Path(sys.executable).parent / "tlkit"
    ck = tmp_path / "ck"
    cmd = [str(exe), "fit", "--data", "digits", "--backbone", "small_cnn", "--epochs", "500",
           "--checkpoint-dir", str(ck), "--set", "checkpoint_every=2", "--set", "progress=false"]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    deadline = time.monotonic() + 120
    while not (ck / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (ck / "last.pt").exists(), "no checkpoint within 2 minutes"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err and str(ck / "last.pt") in err and "--resume" in err
    assert not (ck / ".tlkit.lock").exists()


def test_ctrl_c_without_checkpoints_says_nothing_was_kept(capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tlkit, "fit", interrupted)
    assert main(["fit", "--data", "digits", "--backbone", "small_cnn"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err and "--checkpoint-dir" in err


# -- option rules (API, CLI and dashboard) -------------------------------------------------------
def test_freeze_epochs_beyond_epochs_is_refused(capsys):
    with pytest.raises(ConfigError, match="never"):
        tlkit.FitConfig(epochs=3, freeze_epochs=5)
    tlkit.FitConfig(epochs=3, freeze_epochs=5, mode="full")  # no freezing there: nothing to say
    tlkit.FitConfig(epochs=1)  # the default freeze_epochs=1 with one epoch stays valid
    argv = ["fit", "--data", "digits", "--backbone", "small_cnn", "--mode", "fine_tune"]
    assert main([*argv, "--epochs", "2", "--set", "freeze_epochs=3"]) == 2
    assert "freeze_epochs=3" in _one_error(capsys)


def test_saved_config_with_freeze_epochs_beyond_epochs_still_loads():
    values = tlkit.FitConfig(epochs=3).to_dict()
    values["freeze_epochs"] = 5
    assert tlkit.FitConfig.from_dict(values).freeze_epochs == 5


def test_target_batch_ratio_has_an_upper_bound():
    with pytest.raises(ConfigError, match="target_batch_ratio"):
        tlkit.FitConfig(target_batch_ratio=1e9)
    assert tlkit.FitConfig(target_batch_ratio=7).target_batch_ratio == 7.0  # FixMatch's mu


def test_source_free_needs_a_trained_model(tiny_task, fast):
    with pytest.raises(ConfigError, match="model="):
        tlkit.fit(tiny_task, epochs=1, source_free=True, **fast)


# -- files that became unreadable after listing ------------------------------------------------
def test_files_unreadable_after_listing_are_named(tmp_path):
    photos = thumbnail_photos(tmp_path / "photos", per_class=3)
    domain = tlkit.datasets.from_folder(photos.root, progress=False)
    train, test = domain.split(0.5, seed=0)
    run = tlkit.fit(DomainPair(train), "small_cnn", epochs=1, image_size=16, progress=False)
    for rel in photos.images:
        photos.path(rel).write_bytes(b"not an image any more")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=rf"all {len(test)} files of domain '{test.name}'"):
            run.evaluate(test)
        with pytest.raises(DataError, match=rf"all {len(train)} files of domain '{train.name}'"):
            tlkit.fit(DomainPair(train), "small_cnn", epochs=1, image_size=16, progress=False)


# -- the CLI on folders and CSVs ---------------------------------------------------------------
def test_fit_on_a_folder_holds_out_a_split_and_prints_its_metrics(small_folder, tmp_path, capsys):
    saved = tmp_path / "run.pt"
    argv = ["fit", "--data", str(small_folder), "--backbone", "small_cnn", "--epochs", "1",
            "--image-size", "16", "--set", "progress=false", "--save", str(saved)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "held out 20%" in out and "source_accuracy" in out
    run = tlkit.load(saved)
    assert "source_accuracy" in run.last
    assert main([*argv, "--val-split", "0"]) == 0
    out = capsys.readouterr().out
    assert "source_accuracy" not in out and "held out" not in out
    assert main([*argv, "--val-split", "1.5"]) == 2
    assert "--val-split" in _one_error(capsys)


def test_fit_and_predict_on_a_csv(small_folder, saved_run, tmp_path, capsys):
    manifest = tmp_path / "photos.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for file in sorted(small_folder.rglob("*.*")):
            if file.suffix in (".jpg", ".png"):  # not the folder's notes.txt
                writer.writerow([str(file), file.parent.name])
    argv = ["fit", "--data", str(manifest), "--backbone", "small_cnn", "--epochs", "1",
            "--image-size", "16", "--set", "progress=false"]  # fmt: skip
    assert main(argv) == 0
    assert "source_accuracy" in capsys.readouterr().out
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", str(saved_run), str(manifest), "--out", str(out_csv)]) == 0
    assert "24 predictions written" in capsys.readouterr().out
    with open(out_csv, newline="") as f:
        assert len(list(csv.DictReader(f))) == 24


def test_evaluate_and_predict_take_folders_and_name_missing_paths(
    saved_run, small_folder, tmp_path, capsys
):
    assert main(["evaluate", str(saved_run), "--data", str(small_folder)]) == 0
    assert "accuracy=" in capsys.readouterr().out
    missing = str(tmp_path / "no" / "photos")
    for argv in (
        ["evaluate", str(saved_run), "--data", missing],
        ["predict", str(saved_run), missing],
        ["fit", "--data", missing + "/", "--backbone", "small_cnn"],
    ):
        assert main(argv) == 2
        err = _one_error(capsys)
        assert f"no such file or folder: '{missing}" in err


def test_predict_lists_unreadable_files_with_a_reason(saved_run, small_folder, tmp_path, capsys):
    folder = tmp_path / "new"
    shutil.copytree(small_folder, folder)
    (folder / "coffee" / "broken.jpg").write_bytes(b"this is no jpeg")
    out_csv = tmp_path / "pred.csv"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv = ["predict", str(saved_run), str(folder), "--out", str(out_csv), "--workers", "0"]
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "24 predictions written" in out and "1 file could not be read" in out
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 25
    broken = [r for r in rows if r["path"].endswith("broken.jpg")]
    assert len(broken) == 1 and broken[0]["error"] and not broken[0]["label"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 24
    assert all(r["top_labels"].count(";") == 2 and "[" not in r["top_labels"] for r in good)
    assert all(len(r["top_probabilities"].split(";")) == 3 for r in good)
    data_warnings = [w for w in caught if issubclass(w.category, tlkit.datasets.DataWarning)]
    assert data_warnings, "the skipped file should be warned about"
    for w in data_warnings:
        assert "torch" not in w.filename and "broken.jpg" in str(w.message)
