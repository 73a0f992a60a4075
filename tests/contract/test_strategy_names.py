"""Strategy names: what ``StrategyInfo.name`` says is what selecting that name runs, clash
warnings name every alternative, and a collision blames the strategy that came second."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest

import tlkit
from tlkit import registry
from tlkit.errors import PluginError


class FakeDist:
    def __init__(self, name):
        self.name = name


class FakeEntryPoint:
    def __init__(self, name, dist, load):
        self.name, self.value, self.dist, self._load = name, f"{dist}_mod:Thing", FakeDist(dist), load

    def load(self):
        return self._load()


@pytest.fixture
def installed(monkeypatch):
    """Re-discover entry points with extra fake ones (``installed(*eps)``), isolated per test."""
    real = importlib.metadata.entry_points

    def install(*extra):
        monkeypatch.setattr(
            importlib.metadata,
            "entry_points",
            lambda **kw: [*real(**kw), *extra] if kw.get("group") == "tlkit" else real(**kw),
        )
        for attr in ("_installed", "_owner", "_contested", "_broken", "_adopted"):
            monkeypatch.setattr(registry, attr, {})
        monkeypatch.setattr(registry, "_entry_points_loaded", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = tlkit.strategies()
        return table, [str(w.message) for w in caught]

    return install


def adapt_class(name, term="other_term", summary="Somebody else's strategy."):
    def extra_losses(self, step):
        return {term: step.target_logits.float().mean() * 0}

    return type(
        "Adapt",
        (),
        {
            "__doc__": summary,
            "name": name,
            "family": "adapt",
            "needs_target": True,
            "tlkit_extra_losses": tlkit.hookimpl(extra_losses),
        },
    )


def test_the_name_of_a_qualified_entry_is_its_qualified_name(installed, tiny_task, fast):
    other = adapt_class("dann")
    installed(FakeEntryPoint("dann", "other-pkg", lambda: other))
    by_name = {s.name: s for s in tlkit.strategies()}
    assert by_name["dann"].provider == "tlkit"  # the guide's idiom finds what adapt="dann" runs
    assert by_name["other-pkg:dann"].obj is other
    assert by_name["other-pkg:dann"].qualified_name == "other-pkg:dann"
    assert by_name["dann"].qualified_name == "tlkit:dann"
    assert registry.get("other-pkg:dann").name == "other-pkg:dann"
    run = tlkit.fit(tiny_task, epochs=1, adapt=by_name["dann"].name, **fast)
    assert "dann" in run.history[0] and "other_term" not in run.history[0]
    run = tlkit.fit(tiny_task, epochs=1, adapt=by_name["other-pkg:dann"].name, **fast)
    assert "other_term" in run.history[0]


def test_contested_names_are_qualified_and_the_warning_names_both(installed):
    a, b = adapt_class("shared"), adapt_class("shared")
    _, messages = installed(
        FakeEntryPoint("shared", "pkg-a", lambda: a), FakeEntryPoint("shared", "pkg-b", lambda: b)
    )
    names = {s.name for s in tlkit.strategies("adapt")}
    assert {"pkg-a:shared", "pkg-b:shared"} <= names and "shared" not in names
    (message,) = [m for m in messages if "'shared'" in m]
    assert "pkg-a:shared" in message and "pkg-b:shared" in message


def test_the_builtin_clash_warning_names_both_alternatives(installed):
    _, messages = installed(FakeEntryPoint("dann", "other-pkg", lambda: adapt_class("dann")))
    (message,) = [m for m in messages if "built-in strategy 'dann'" in m]
    assert "'tlkit:dann'" in message and "'other-pkg:dann'" in message


def test_an_entry_point_named_differently_from_its_class_warns(installed):
    thing = adapt_class("their_name")
    _, messages = installed(FakeEntryPoint("entry_name", "some-pkg", lambda: thing))
    (message,) = [m for m in messages if "entry_name" in m]
    assert "their_name" in message and "some-pkg" in message
    assert registry.get("entry_name").obj is thing  # the entry point's name selects it


def test_an_entry_point_named_like_its_class_is_silent(installed):
    _, messages = installed(FakeEntryPoint("same_name", "some-pkg", lambda: adapt_class("same_name")))
    assert not [m for m in messages if "same_name" in m]


def test_the_plugin_guides_fixture_works_when_the_package_is_installed(installed, temp_strategy):
    """Registering the very class an installed entry point provides (the guide's test fixture)
    is accepted and unregistering it afterwards leaves the installed strategy in place; a
    different class under that name is still refused."""
    mine = adapt_class("my_coral")
    installed(FakeEntryPoint("my_coral", "my-package", lambda: mine))
    tlkit.register(mine)
    assert registry.get("my_coral").obj is mine
    tlkit.unregister("my_coral")
    assert registry.get("my_coral").provider == "my-package"  # still installed
    with pytest.raises(PluginError, match="cannot be unregistered"):
        tlkit.unregister("my_coral")  # a name this session did not register
    with pytest.raises(PluginError, match="belongs to the adapt strategy from package 'my-package'"):
        tlkit.register(adapt_class("my_coral"))
    temp_strategy(mine)  # the conftest fixture, as the guide suggests


def test_a_term_name_collision_blames_the_strategy_that_came_second(tiny_task, fast, temp_strategy):
    temp_strategy(adapt_class("test_copycat", term="dann"))
    with pytest.raises(PluginError) as err:
        tlkit.fit(tiny_task, epochs=1, adapt=["dann", "test_copycat"], **fast)
    message = str(err.value)
    assert message.startswith("strategy 'test_copycat' returned a bad result"), message
    assert "term name 'dann'" in message and "strategy 'dann'" in message
    temp_strategy(adapt_class("test_first", term="same"))
    temp_strategy(adapt_class("test_second", term="same"))
    for first, second in (("test_first", "test_second"), ("test_second", "test_first")):
        with pytest.raises(PluginError, match=f"^strategy '{second}' returned .*'{first}'"):
            tlkit.fit(tiny_task, epochs=1, adapt=[first, second], **fast)
