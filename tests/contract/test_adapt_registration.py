"""The issue-11 adaptation strategies are installed through entry points, like any plugin, and
declare what the engine must know about them."""

from __future__ import annotations

import importlib.metadata

import pytest
from tlkit_strategies.adapt.bnm import BNM
from tlkit_strategies.adapt.dsbn import DSBN
from tlkit_strategies.adapt.fda import FDA
from tlkit_strategies.adapt.pixelda import PixelDA
from tlkit_strategies.adapt.shot import SHOT

import tlkit

NEW = {
    # name: (class, author in the summary, needs_images, source_free)
    "bnm": (BNM, "Cui", False, True),
    "shot": (SHOT, "Liang", False, True),
    "dsbn": (DSBN, "Chang", True, False),
    "fda": (FDA, "Yang", True, False),
    "pixelda": (PixelDA, "Bousmalis", True, False),
}


@pytest.mark.parametrize("name", sorted(NEW))
def test_entry_point_loads_the_class(name):
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="tlkit")}
    assert name in eps, f"no '{name}' in the tlkit entry-point group (pip install -e . again?)"
    assert eps[name].value.startswith("tlkit_strategies.adapt.")
    assert eps[name].load() is NEW[name][0]


@pytest.mark.parametrize("name", sorted(NEW))
def test_listed_as_a_first_party_adapt_strategy(name):
    cls, author, needs_images, source_free = NEW[name]
    info = {s.name: s for s in tlkit.strategies("adapt")}[name]
    assert info.provider == "tlkit" and info.family == "adapt" and info.obj is cls
    assert author in info.summary
    assert cls.needs_target is True
    assert getattr(cls, "needs_images", False) is needs_images
    assert getattr(cls, "source_free", False) is source_free
    assert "Shapes:" in __import__(cls.__module__, fromlist=["x"]).__doc__  # documented shapes
