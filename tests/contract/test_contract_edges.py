"""Edges of the plugin contract and the engine found by review: logged names that would hide a
loss, hooks answered by the wrong family, unchecked pseudo-labels and setup modules, hookimpls
under another name, qualified selections, and the end-of-run hook after a failed start."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tlkit
from tlkit import registry
from tlkit.errors import CheckpointError, ConfigError, PluginError


def strategy(name, family, **hooks):
    attrs = {"name": name, "family": family, "needs_target": family in ("pseudo_label", "adapt")}
    if family == "loss":
        attrs["requires_task"] = "classification"
    attrs.update({k: tlkit.hookimpl(v) for k, v in hooks.items()})
    return type(name, (), attrs)


def test_step_log_cannot_hide_the_loss_or_a_loss_term(tiny_task, fast, temp_strategy):
    temp_strategy(strategy("test_log_loss", "regularizer",
                           tlkit_extra_losses=lambda self, step: step.log("loss", 0.0)))  # fmt: skip
    with pytest.raises(PluginError, match="'test_log_loss' failed .*'loss' is the engine's"):
        tlkit.fit(tiny_task, epochs=1, regularize="test_log_loss", **fast)
    temp_strategy(strategy("test_log_term", "regularizer",
                           tlkit_extra_losses=lambda self, step: step.log("supervised", 1.0)))  # fmt: skip
    with pytest.raises(PluginError, match=r"logged \['supervised'\] with step.log"):
        tlkit.fit(tiny_task, epochs=1, regularize="test_log_term", **fast)


def test_only_losses_answer_the_loss_hook_and_observers_only_watch(tiny_task, fast):
    with pytest.raises(PluginError, match="implements tlkit_supervised_loss, which only loss"):
        tlkit.register(strategy("test_sneaky_loss", "adapt",
                                tlkit_supervised_loss=lambda self, logits: logits[:, 0] * 0))  # fmt: skip

    class Meddles:
        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            return {"x": step.logits.mean()}

    with pytest.raises(
        PluginError, match=r"observer 'Meddles' implements \['tlkit_extra_losses'\]"
    ):
        tlkit.fit(tiny_task, epochs=1, observers=[Meddles()], **fast)


def test_pseudo_labels_and_losses_are_checked_further(tiny_task, fast, temp_strategy):
    def out_of_range(self, step):
        n = len(step.target_logits)
        return tlkit.PseudoLabels(torch.full((n,), 7), torch.ones(n))

    temp_strategy(strategy("test_pl_range", "pseudo_label", tlkit_pseudo_labels=out_of_range))
    with pytest.raises(PluginError, match=r"'test_pl_range' returned .*class ids in \[0, 4\)"):
        tlkit.fit(tiny_task, epochs=1, pseudo_label="test_pl_range", **fast)
    detached = strategy("test_detached", "loss", tlkit_supervised_loss=lambda self, logits, targets:
                        F.cross_entropy(logits.detach(), targets, reduction="none"))  # fmt: skip
    temp_strategy(detached)
    with pytest.raises(PluginError, match="'test_detached' .*the losses carry no gradient"):
        tlkit.fit(tiny_task, epochs=1, loss="test_detached", **fast)
    temp_strategy(strategy("test_shares", "regularizer",
                           tlkit_setup=lambda self, trainer: trainer.model.head))  # fmt: skip
    with pytest.raises(PluginError, match="'test_shares' .*shares parameters with the model"):
        tlkit.fit(tiny_task, epochs=1, regularize="test_shares", **fast)


def test_an_adversary_hook_needs_an_own_optimizer_module(tiny_task, fast, temp_strategy):
    temp_strategy(strategy("test_lonely_adversary", "adapt",
                           tlkit_setup=lambda self, trainer: nn.Linear(2, 2),
                           tlkit_adversary_losses=lambda self, step: None))  # fmt: skip
    with pytest.raises(PluginError, match="no module marked own_optimizer"):
        tlkit.fit(tiny_task, epochs=1, adapt="test_lonely_adversary", **fast)


def test_hookimpls_under_another_name_and_unknown_unregisters(tiny_task):
    class Renamed:
        name, family, requires_task = "test_renamed", "loss", "classification"

        @tlkit.hookimpl(specname="tlkit_supervised_loss")
        def my_loss(self, logits, target):
            return logits[:, 0]

    with pytest.raises(PluginError, match="my_loss is marked @tlkit.hookimpl but is not named"):
        tlkit.register(Renamed)
    tlkit.unregister("nobody:nothing")  # not installed: nothing to forget, no KeyError


def test_both_strategies_of_a_shadowed_name_can_run_together(monkeypatch, tiny_task, fast):
    from test_plugin_contract import FakeEntryPoint, fake_dann

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [*real(**kw), FakeEntryPoint("dann", "other-pkg", fake_dann)]
                        if kw.get("group") == "tlkit" else real(**kw))  # fmt: skip
    for attr, value in (("_installed", {}), ("_owner", {}), ("_contested", {}), ("_broken", {})):
        monkeypatch.setattr(registry, attr, value)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    with pytest.warns(RuntimeWarning, match="built-in strategy 'dann'"):
        tlkit.strategies()
    run = tlkit.fit(tiny_task, epochs=1, adapt=["dann", "other-pkg:dann"], **fast)
    assert "dann" in run.history[0] and "other_dann" in run.history[0]


def test_strategies_hear_the_end_of_a_run_that_failed_to_start(
    tiny_task, fast, tmp_path, temp_strategy
):
    ended = []

    class Cleanup:
        name, family = "test_cleanup", "regularizer"

        @tlkit.hookimpl
        def tlkit_setup(self):
            return None

        @tlkit.hookimpl
        def tlkit_on_fit_end(self):
            ended.append(True)

    temp_strategy(Cleanup)
    tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), max_steps=1, **fast)
    with pytest.raises(CheckpointError, match="written by another run"):
        tlkit.fit(tiny_task, epochs=1, checkpoint_dir=str(tmp_path), regularize="test_cleanup",
                  resume=True, **{**fast, "seed": 5})  # fmt: skip
    assert ended == [True]


def test_monitor_typos_on_declared_validator_scores_fail_before_training(tiny_task, fast):
    with pytest.raises(ConfigError, match="monitor='score_entropi' is not a metric of this run"):
        tlkit.Trainer(tiny_task, validate="entropy", monitor="score_entropi", **fast)
    tlkit.Trainer(tiny_task, validate="entropy", monitor="score_entropy", **fast)  # fine


def test_regression_targets_are_hidden_from_strategies():
    diabetes = tlkit.datasets.load("diabetes")
    pair = tlkit.datasets.DomainPair(diabetes.source, target=diabetes.source_test)
    hidden = tlkit.Trainer(pair, backbone="mlp", progress=False).target
    assert torch.isnan(hidden.labels).all() and torch.isnan(hidden.clean_labels).all()
