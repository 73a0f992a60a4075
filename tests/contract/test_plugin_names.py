"""Who a message is about: a run's plugins are registered under names that carry what they are
(strategy or observer) and what to call them, so no message takes a name string apart."""

from __future__ import annotations

import pytest

import tlkit
from tlkit import registry
from tlkit.errors import PluginError


class Watches:
    name = "live-curves"  # a dash, as in the registered key

    @tlkit.hookimpl
    def tlkit_on_step_end(self, trainer):
        raise RuntimeError("boom")


def test_the_manager_names_strategies_and_observers_by_role_and_label():
    info = registry.get("cross_entropy")
    pm = registry.make_plugin_manager([(info, {})], [Watches(), Watches()])
    names = [name for name, _ in pm.list_name_plugin()]
    assert [(n.role, n.label) for n in names] == [
        ("strategy", "cross_entropy"),
        ("observer", "live-curves"),
        ("observer", "live-curves"),
    ]
    assert len(set(names)) == 3, "two observers with one label still need two keys"
    assert names[1].describe() == "observer 'live-curves'"
    assert pm.get_plugin("cross_entropy") is not None  # strategies are found by their plain name


def test_a_failing_observer_is_named_by_its_label(tiny_task, fast):
    with pytest.raises(
        PluginError, match="observer 'live-curves' failed in hook tlkit_on_step_end"
    ):
        tlkit.fit(tiny_task, epochs=1, observers=[Watches()], **fast)


def test_a_strategy_whose_name_starts_like_an_observer_key_is_named_a_strategy(
    tiny_task, fast, temp_strategy
):
    class Breaks:
        name, family = "observer-0-fails", "loss"
        requires_task = "classification"

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, targets):
            raise RuntimeError("boom")

    temp_strategy(Breaks)
    with pytest.raises(PluginError, match="strategy 'observer-0-fails' failed in hook"):
        tlkit.fit(tiny_task, epochs=1, loss="observer-0-fails", **fast)
