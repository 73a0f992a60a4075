"""Validation before training, not after: options in every spelling they arrive in, early failures
that lose no trained model, and clear errors (never raw Python ones) from the API and the CLI."""

from __future__ import annotations

import math
import os
import threading

import pytest
import torch

import tlkit
from tlkit.cli import main
from tlkit.errors import ConfigError, PluginError

LOUD = {"progress": False}


class NoTraining:
    """Fails the test if a single step is taken: the error had to come before training."""

    @tlkit.hookimpl
    def tlkit_on_step_end(self):
        raise AssertionError("training started before the bad option was reported")


# -- options arrive as strings from YAML, JSON and --set --------------------------------------
def test_numbers_and_booleans_in_any_spelling():
    cfg = tlkit.FitConfig(lr="3e-4", epochs="2", augment="false", compile="no", grad_clip="none")
    assert cfg.lr == 3e-4 and cfg.epochs == 2 and cfg.augment is False and cfg.compile is False
    assert cfg.grad_clip is None
    assert tlkit.FitConfig(augment="true", max_steps=10.0, ema="0.99").augment is True


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("lr", math.inf, "lr=inf is not valid: it must be a finite number"),
        ("lr", "fast", "lr='fast' is not valid: it must be a number"),
        ("grad_clip", math.nan, "grad_clip=nan is not valid"),
        ("seed", 1.5, "seed=1.5 is not valid: it must be a whole number"),
        ("eval_batch_size", 2.5, "eval_batch_size=2.5 is not valid: it must be a whole number"),
        ("epochs", True, "epochs=True is not valid"),
        ("image_size", 0, "image_size=0 is not valid: it must be a whole number >= 8"),
        ("image_size", -5, "image_size=-5 is not valid"),
        ("image_size", 100000, "image_size=100000 is not valid: it must be a whole number <= 4096"),
        (
            "augment",
            "sometimes",
            "augment='sometimes' is not valid: it must be True, False, one of .*'colour'",
        ),
        ("augment", 1.0, "augment=1.0 is not valid"),
        ("device", "gpu7", "device='gpu7' is not a device"),
        ("dropout", 1.0, "dropout=1.0 is a probability"),
    ],
)
def test_bad_options_fail_with_the_option_named(option, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tlkit.FitConfig(**{option: value})


def test_problems_known_before_training_are_reported_before_it(tiny_task, fast, tmp_path):
    opts = dict(epochs=1, observers=[NoTraining()], **fast)
    with pytest.raises(ConfigError, match="monitor='bogus' is not a metric of this run"):
        tlkit.fit(tiny_task, monitor="bogus", **opts)
    with pytest.raises(ConfigError, match="score_<name> metrics need a validator"):
        tlkit.fit(tiny_task, monitor="score_info_max", **opts)
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a file instead
        locked = tmp_path / "a-file"
        locked.write_text("")
        locked = locked / "checkpoints"
    with pytest.raises(ConfigError, match="checkpoint_dir .* cannot be written"):
        tlkit.fit(tiny_task, checkpoint_dir=str(locked), **opts)


def test_a_loss_for_the_other_task_is_refused_before_training(tiny_task, fast):
    with pytest.raises(PluginError, match="strategy 'mse' is for regression tasks; this one is"):
        tlkit.fit(tiny_task, loss="mse", epochs=1, observers=[NoTraining()], **fast)
    bright = tlkit.datasets.from_arrays(
        tiny_task.source.images,
        tiny_task.source.images.float().mean((1, 2, 3)) / 255,
        task="regression",
    )
    with pytest.raises(PluginError, match="'cross_entropy' is for classification tasks"):
        tlkit.fit(bright, loss="cross_entropy", epochs=1, observers=[NoTraining()], **fast)


def test_every_installed_loss_declares_its_task():
    losses = tlkit.strategies("loss")
    assert losses and all(getattr(s.obj, "requires_task", None) for s in losses)


# -- the command line --------------------------------------------------------------------------
def test_readme_set_lr_works(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_text("data: digits\nbackbone: small_cnn\nepochs: 1\nlr: 1e-3\nprogress: false\n")
    code = main(
        [
            "fit",
            "--config",
            str(config),
            "--set",
            "lr=3e-4",
            "--set",
            "max_steps=3",
            "--save",
            str(tmp_path / "run.pt"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert tlkit.load(tmp_path / "run.pt").config.lr == 3e-4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "seed=1.5"], "seed=1.5 is not valid"),
        (["--set", "lr=inf"], "lr=inf is not valid"),
        (["--set", "monitor=bogus"], "monitor='bogus'"),
        (["--save", "/nonexistent-folder/run.pt"], "--save '/nonexistent-folder/run.pt'"),
        (["--plot", "curves.xyz"], "--plot 'curves.xyz' has an unknown file type"),
        (["--set", "adapt=dann"], "adapt='dann' learns from unlabelled target data"),
        (["--set", "loss=mse"], "'mse' is for regression tasks"),
    ],
)
def test_cli_errors_are_one_line_and_exit_2(argv, message, capsys):
    base = ["fit", "--data", "digits", "--backbone", "small_cnn", "--set", "progress=false"]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlkit: error: ") and message in err and "Traceback" not in err


def test_cli_resume_into_another_architecture_is_explained(tmp_path, capsys):
    base = [
        "fit",
        "--data",
        "digits",
        "--set",
        "progress=false",
        "--epochs",
        "1",
        "--checkpoint-dir",
        str(tmp_path),
    ]
    assert main(base + ["--backbone", "small_cnn", "--set", "max_steps=2"]) == 0
    assert main(base + ["--backbone", "efficientnet_lite0", "--image-size", "32", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "tlkit: error:" in err and "another run" in err and "backbone" in err


def test_a_pickle_that_would_run_code_is_refused_without_unsafe_advice(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "tlkit-checkpoint", "payload": threading.Lock}, evil)
    assert main(["evaluate", str(evil), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "not a tlkit checkpoint, or was written by code tlkit does not trust" in err
    assert "weights_only" not in err
