"""The plugin contract and registry: documented hooks, discovery, selection, broken plugins."""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

import tlkit
from tlkit import hookspecs, registry


# -- the contract is documented, datasette-style ----------------------------------------------
@pytest.mark.parametrize("name", hookspecs.HOOK_NAMES)
def test_every_hook_is_documented_with_its_signature(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn)
    assert doc, f"{name} needs a docstring"
    params = set(inspect.signature(fn).parameters)
    documented = {
        line.split()[1].rstrip(":") for line in doc.splitlines() if line.startswith(":param ")
    }
    assert documented == params, f"{name}: documented {documented}, signature {params}"
    assert ":return:" in doc, f"{name}: the return value is not documented"
    firstresult = fn.tlkit_spec.get("firstresult", False)
    assert ("not firstresult" not in doc and "firstresult" in doc) == firstresult, (
        f"{name}: the docstring must say whether the first result wins"
    )


def test_first_party_strategies_come_from_entry_points():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="tlkit")}
    assert {"cross_entropy", "mse"} <= set(eps)
    table = tlkit.strategies()
    by_name = {s.name: s for s in table}
    assert by_name["cross_entropy"].family == "loss"
    assert by_name["cross_entropy"].provider == "tlkit"
    assert "cross_entropy" in repr(table) and "<table>" in table._repr_html_()


# -- registration from a notebook cell --------------------------------------------------------
def test_register_a_class_from_a_cell_and_select_it(tiny_task, fast, temp_strategy):
    calls = []

    class Halved:
        """Half of cross-entropy (a toy loss)."""

        name, family = "test_halved", "loss"
        requires_task = "classification"

        def __init__(self, factor=0.5):
            self.factor = factor

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, targets):
            import torch.nn.functional as F

            calls.append(len(targets))
            return self.factor * F.cross_entropy(logits, targets, reduction="none")

    temp_strategy(Halved)
    info = {s.name: s for s in tlkit.strategies("loss")}["test_halved"]
    assert info.summary == "Half of cross-entropy (a toy loss)." and info.provider == "session"
    tlkit.fit(tiny_task, epochs=1, loss=("test_halved", {"factor": 0.25}), **fast)
    assert calls and calls[0] == fast["batch_size"]


def test_register_rejects_objects_that_are_not_strategies():
    class NoHooks:
        name, family = "x", "loss"

    with pytest.raises(tlkit.PluginError, match="implements no hook"):
        tlkit.register(NoHooks)

    class Misspelt:
        name, family = "y", "loss"

        @tlkit.hookimpl
        def tlkit_supervised_los(self, logits):
            return logits

    with pytest.raises(tlkit.PluginError, match="tlkit_supervised_los, which is not a tlkit hook"):
        tlkit.register(Misspelt)

    class NoFamily:
        name = "z"

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            return None

    with pytest.raises(tlkit.PluginError, match="family"):
        tlkit.register(NoFamily)


def test_wrong_family_and_unknown_names_are_explained(tiny_task, fast):
    with pytest.raises(tlkit.PluginError, match="is a loss strategy.*loss='cross_entropy'"):
        tlkit.fit(tiny_task, adapt="cross_entropy", **fast)
    with pytest.raises(tlkit.PluginError, match="Known: .*cross_entropy.*mse"):
        registry.get("gcee", "loss")
    with pytest.raises(tlkit.ConfigError, match="exactly one supervised loss"):
        tlkit.fit(tiny_task, loss=["cross_entropy", "mse"], **fast)


def test_selection_forms():
    norm = registry.normalize_selection
    assert norm(None) == []
    assert norm("gce") == [("gce", {})]
    assert norm(("gce", {"q": 0.5})) == [("gce", {"q": 0.5})]
    assert norm(["fixmatch", {"threshold": 0.8}]) == [("fixmatch", {"threshold": 0.8})]  # YAML
    assert norm(["cdan", "mcc"]) == [("cdan", {}), ("mcc", {})]
    assert norm({"cdan": None, "mcc": {"t": 2}}) == [("cdan", {}), ("mcc", {"t": 2})]
