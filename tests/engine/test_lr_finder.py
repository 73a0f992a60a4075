"""The learning-rate finder: an exponential sweep on a copy of the model, its picks (the default
a fifth of the lowest loss's rate), and ``tlkit.fit(..., lr="find")`` training with the pick."""

from __future__ import annotations

import math
import threading

import matplotlib
import numpy as np
import pytest
import torch

import tlkit
import tlkit.api
from tlkit.engine.lr_finder import LRFinder, edge, minimum, steep, valley
from tlkit.errors import ConfigError

matplotlib.use("Agg")

SWEEP = dict(start_lr=1e-5, end_lr=100.0, num_it=60)


def test_the_sweep_leaves_the_model_and_random_state_untouched(tiny_task, fast):
    model = tlkit.fit(tiny_task, epochs=1, mode="full", **fast).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    finder = tlkit.lr_find(tiny_task, model=model, mode="full", **SWEEP, **fast)
    assert torch.equal(torch.rand(3), expected_draw)  # global RNG put back
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(finder.lrs) >= 10  # it did train (a copy)


def test_the_pick_lies_in_the_sweep_and_below_divergence(tiny_task, fast):
    finder = tlkit.lr_find(tiny_task, mode="full", **SWEEP, **fast)
    lrs = np.array(finder.lrs)
    assert np.all(np.diff(np.log(lrs)) > 0)  # an exponential sweep, rising
    ratios = lrs[1:] / lrs[:-1]
    assert np.allclose(ratios, ratios[0])
    assert finder.diverged_at is not None, "a sweep to lr=100 must see the loss run away"
    assert SWEEP["start_lr"] <= finder.suggestion < finder.diverged_at
    assert finder.suggestion in finder.lrs
    assert len(finder.lrs) < SWEEP["num_it"]  # stopped at divergence
    # the pick sits where the loss is still well below where it ran away
    pick = finder.lrs.index(finder.suggestion)
    assert finder.losses[pick] < finder.losses[-1]
    assert finder.losses[pick] <= finder.losses[0]
    fig = finder.plot()
    assert fig.axes[0].get_xscale() == "log"


def test_the_sweep_is_seeded(tiny_task, fast):
    a = tlkit.lr_find(tiny_task, mode="full", **SWEEP, **fast)
    b = tlkit.lr_find(tiny_task, mode="full", **SWEEP, **fast)
    assert a.raw_losses == b.raw_losses and a.suggestion == b.suggestion


def test_fit_with_lr_find_trains_with_the_pick_and_says_it(tiny_task, fast, capsys):
    options = {**fast, "lr": "find"}
    run = tlkit.fit(tiny_task, epochs=1, mode="full", **options)
    lines = [line for line in capsys.readouterr().out.splitlines() if "lr finder" in line]
    assert len(lines) == 1
    picked = run.config.lr
    assert isinstance(picked, float) and math.isfinite(picked)
    assert f"lr={picked:.2g}" in lines[0]
    assert run.lr_finder.suggestion == picked
    assert run.lr_finder.method == "edge" and picked == run.lr_finder.edge  # the default
    assert run.lr_finder.edge not in (run.lr_finder.steep, run.lr_finder.valley)  # (it means it)
    # the same run with that lr given by hand is the same run: the sweep changed nothing
    again = tlkit.fit(tiny_task, epochs=1, mode="full", **{**fast, "lr": picked})
    assert again.history[0]["train_loss"] == run.history[0]["train_loss"]


def test_lr_find_is_a_config_value_and_bad_sweeps_are_refused(tiny_task, fast):
    assert tlkit.FitConfig(lr="find").lr == "find"
    assert tlkit.FitConfig(lr=" Find ").lr == "find"
    with pytest.raises(ConfigError, match="lr"):
        tlkit.FitConfig(lr="fast")
    with pytest.raises(ConfigError, match="start_lr=1 must be below end_lr=0.1"):
        tlkit.lr_find(tiny_task, start_lr=1.0, end_lr=0.1, **fast)
    with pytest.raises(ConfigError, match="method='median'"):
        tlkit.lr_find(tiny_task, method="median", **fast)


def test_valley_and_steep_on_a_known_curve():
    lrs = list(np.geomspace(1e-6, 1.0, 61))
    x = np.log10(lrs)
    # flat, a fall between 1e-4 and 1e-2 (steepest at 1e-3), then a rise
    losses = list(2 - np.tanh((x + 3) * 2) + np.where(x > -1, (x + 1) * 8, 0))
    i_steep = steep(lrs, losses)
    assert 1e-3 / 2 < lrs[i_steep] < 1e-3 * 2
    i_valley = valley(lrs, losses)
    assert 1e-4 < lrs[i_valley] < 1e-1
    i_min = int(np.argmin(losses))
    assert lrs[minimum(lrs, losses)] == pytest.approx(lrs[i_min] / 10, rel=0.15)
    assert lrs[edge(lrs, losses)] == pytest.approx(lrs[i_min] / 5, rel=0.15)


def test_a_trainer_sweeps_when_it_trains_in_the_thread_that_trains(tiny_task, fast, capsys, monkeypatch):
    """The dashboard builds the trainer on the notebook's kernel thread and trains in another: the
    sweep must run in the training thread, so that building it returns at once."""
    swept_in = []
    real = tlkit.api.find_lr

    def recording(*args, **kwargs):
        swept_in.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(tlkit.api, "find_lr", recording)
    trainer = tlkit.Trainer(tiny_task, epochs=1, mode="full", **{**fast, "lr": "find"})
    assert swept_in == [] and trainer.lr_finder is None  # built, nothing swept yet
    assert trainer.config.lr == "find"
    assert "lr finder" not in capsys.readouterr().out
    runs = []
    worker = threading.Thread(target=lambda: runs.append(trainer.fit()), name="trains")
    worker.start()
    worker.join(120)
    assert swept_in == ["trains"]
    (run,) = runs
    assert isinstance(trainer.lr_finder, LRFinder)
    assert run.lr_finder is trainer.lr_finder  # Trainer(...).fit() keeps what it swept
    assert run.config.lr == trainer.config.lr == run.lr_finder.suggestion
    lines = [line for line in capsys.readouterr().out.splitlines() if "lr finder" in line]
    assert lines == [run.lr_finder.describe()]
    # the same as tlkit.fit(lr="find"): the sweep's place changes nothing in the run
    direct = tlkit.fit(tiny_task, epochs=1, mode="full", **{**fast, "lr": "find"})
    assert direct.lr_finder.raw_losses == run.lr_finder.raw_losses
    assert direct.history[0]["train_loss"] == run.history[0]["train_loss"]


def test_a_saved_run_keeps_what_its_lr_finder_found(tiny_task, fast, tmp_path):
    run = tlkit.fit(tiny_task, epochs=1, mode="full", **{**fast, "lr": "find"})
    loaded = tlkit.load(run.save(tmp_path / "run.pt"))
    assert isinstance(loaded.lr_finder, LRFinder)
    assert loaded.lr_finder == run.lr_finder  # lrs, losses, picks, sweep bounds
    assert loaded.config.lr == loaded.lr_finder.suggestion
    assert loaded.lr_finder.plot().axes[0].get_xscale() == "log"
    plain = tlkit.fit(tiny_task, epochs=1, mode="full", **fast)
    assert plain.lr_finder is None
    assert tlkit.load(plain.save(tmp_path / "plain.pt")).lr_finder is None


def test_a_training_checkpoint_keeps_the_sweep(tiny_task, fast, tmp_path):
    """``last.pt`` holds the picked rate in its config and the sweep that picked it."""
    options = {**fast, "lr": "find", "checkpoint_dir": str(tmp_path)}
    run = tlkit.fit(tiny_task, epochs=1, mode="full", **options)
    loaded = tlkit.load(tmp_path / "last.pt")
    assert loaded.config.lr == run.lr_finder.suggestion
    assert loaded.lr_finder is not None
    assert loaded.lr_finder.lrs == run.lr_finder.lrs
    assert loaded.lr_finder.suggestion == run.lr_finder.suggestion


def test_a_damaged_lr_finder_in_a_saved_run_is_named(tiny_task, fast, tmp_path):
    run = tlkit.fit(tiny_task, epochs=1, mode="full", **{**fast, "lr": "find"})
    run.lr_finder.lrs = run.lr_finder.lrs[:-1]  # one rate short of the losses
    with pytest.raises(tlkit.errors.CheckpointError, match="lr_finder"):
        tlkit.load(run.save(tmp_path / "run.pt"))


def test_steep_looks_only_where_the_loss_is_falling_to_its_lowest():
    """A noisy sweep can drop sharply again after its lowest loss, among rates at which training
    has already broken down (seen on digits-m: a pick of 0.74 where the fall is at 0.02-0.1). The
    steepest fall is read from the descent, up to the lowest loss, never from that chaos."""
    lrs = list(np.geomspace(1e-6, 1.0, 61))
    x = np.log10(lrs)
    fall = 2 - np.tanh((x + 3) * 2)  # a fall between 1e-4 and 1e-2, steepest at 1e-3
    chaos = np.where(x > -2, x + 2, 0) + 3 * np.exp(-(((x + 0.5) / 0.15) ** 2))
    losses = list(fall + chaos)  # rises past 1e-2, then a spike near 0.3 falls back steeply
    past_minimum = np.diff(losses) / np.diff(np.log(lrs))
    assert np.argmin(past_minimum) > np.argmin(losses)  # the plunge is steeper than the fall
    assert 1e-3 / 2 < lrs[steep(lrs, losses)] < 1e-3 * 2


def test_a_fine_tune_sweeps_the_phase_that_trains_the_backbone(tiny_task, fast):
    """In ``fine_tune`` the backbone trains at lr / lr_spread .. lr after the frozen epochs, and
    that phase is where too high a rate destroys the pretrained features; the head alone tolerates
    rates ten times higher. So the sweep runs the unfrozen phase: the same sweep as ``mode="full"``
    with the same discriminative rates, not the head on cached features."""
    options = {**fast, **SWEEP, "lr_spread": 10.0}
    fine_tune = tlkit.lr_find(tiny_task, mode="fine_tune", freeze_epochs=1, **options)
    unfrozen = tlkit.lr_find(tiny_task, mode="full", **options)
    head_only = tlkit.lr_find(tiny_task, mode="feature_extraction", **options)
    assert fine_tune.raw_losses == unfrozen.raw_losses
    assert fine_tune.raw_losses != head_only.raw_losses


def test_a_sweep_saved_before_the_edge_pick_existed_loads_with_it(tiny_task, fast, tmp_path):
    """Runs saved before ``"edge"`` was added keep three picks; the fourth is read off the
    sweep's own curve, so the run loads whole instead of failing on a missing field."""
    finder = tlkit.fit(tiny_task, epochs=1, mode="full", **{**fast, "lr": "find"}).lr_finder
    older = finder.to_dict()
    del older["edge"]
    older["method"] = "steep"
    older["suggestion"] = older["steep"]
    loaded = LRFinder.from_dict(older)
    assert loaded.edge == finder.edge  # the same pick, from the same curve
    assert loaded.method == "steep" and loaded.suggestion == finder.steep
