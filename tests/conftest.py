"""Shared fixtures: tiny learnable tasks, an isolated dataset cache, temporary strategies."""

from __future__ import annotations

import pytest
import torch

import tlkit
from tlkit.datasets import Domain, DomainPair


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Bundled datasets are built into a per-session cache, never the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TLKIT_CACHE", str(tmp_path_factory.mktemp("tlkit-cache")))
    torch.set_num_threads(2)
    yield
    mp.undo()


def quadrant_domain(n: int, *, seed: int, name: str, shift: float = 0.0, size: int = 16) -> Domain:
    """4 classes; class c lights up quadrant c. ``shift`` brightens the background (a domain)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    images = torch.rand(n, 1, size, size, generator=g) * 0.3 + shift
    h = size // 2
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        images[i, 0, r * h : (r + 1) * h, col * h : (col + 1) * h] += 0.6
    images = (images.clamp(0, 1) * 255).to(torch.uint8)
    return Domain(images, labels, classes=("a", "b", "c", "d"), name=name)


@pytest.fixture
def tiny_task() -> DomainPair:
    """A labelled source with test set, an unlabelled shifted target with test set."""
    source = quadrant_domain(128, seed=0, name="src")
    target = quadrant_domain(96, seed=1, name="tgt", shift=0.2)
    s_train, s_test = source.split(0.25, seed=0)
    t_train, t_test = target.split(0.25, seed=0)
    return DomainPair(s_train, s_test, t_train.unlabelled(), t_test, name="tiny")


@pytest.fixture
def fast():
    """fit() options for sub-second runs on the tiny task."""
    return dict(backbone="small_cnn", batch_size=16, lr=3e-3, progress=False, seed=0)


@pytest.fixture
def temp_strategy():
    """Register strategies for one test and remove them afterwards."""
    names = []

    def add(obj, **kw):
        tlkit.register(obj, **kw)
        names.append(kw.get("name") or obj.name)
        return obj

    yield add
    for n in names:
        tlkit.unregister(n)
