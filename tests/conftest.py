"""Shared fixtures: tiny learnable tasks, an isolated dataset cache, temporary strategies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.datasets import Domain, DomainPair


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Bundled datasets are built into a per-session cache, never the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TLKIT_CACHE", str(tmp_path_factory.mktemp("tlkit-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Every test runs torch on one intra-op thread: the networks are tiny, so a second thread
    mostly adds synchronisation, and on a shared CPU (pytest beside a dashboard's training
    thread, other jobs) it made fits several times slower. Restored when the session ends."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pattern_domain(n: int, *, seed: int, name: str, shift: float = 0.0, size: int = 16) -> Domain:
    """4 texture classes (horizontal / vertical stripes, checkerboard, flat) at random phases,
    so a translation-invariant CNN can learn them. ``shift`` brightens everything (a domain)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    phase = torch.randint(0, 4, (n, 2), generator=g)
    images = torch.rand(n, 1, size, size, generator=g) * 0.3 + shift
    for i, c in enumerate(labels.tolist()):
        py, px = phase[i].tolist()
        rows, cols = ((yy + py) // 2) % 2, ((xx + px) // 2) % 2
        pattern = [rows, cols, (rows + cols) % 2, torch.full_like(rows, 1) * 0.5][c]
        images[i, 0] += 0.6 * pattern.float()
    images = (images.clamp(0, 1) * 255).to(torch.uint8)
    return Domain(images, labels, classes=("a", "b", "c", "d"), name=name)


def make_tiny_task() -> DomainPair:
    """A labelled source with test set, an unlabelled shifted target with test set."""
    source = pattern_domain(128, seed=0, name="src")
    target = pattern_domain(96, seed=1, name="tgt", shift=0.2)
    s_train, s_test = source.split(0.25, seed=0)
    t_train, t_test = target.split(0.25, seed=0)
    return DomainPair(s_train, s_test, t_train.unlabelled(), t_test, name="tiny")


@pytest.fixture
def tiny_task() -> DomainPair:
    """A labelled source with test set, an unlabelled shifted target with test set."""
    return make_tiny_task()


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


def find_chromium() -> str | None:
    explicit = os.environ.get("TLKIT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture
def chromium() -> str:
    """The system Chromium for the browser tests; they skip only when there is none (CI
    installs Debian's). Playwright's own browser download is not used."""
    path = find_chromium()
    if path is None:
        pytest.skip(
            "no Chromium found: install it (Debian/Ubuntu: apt-get install -y chromium) or set "
            "TLKIT_CHROMIUM=/path/to/chrome; Playwright's own browser download is not needed"
        )
    return path


def write_photo_folder(root: Path, *, per_class: int = 24, seed: int = 0) -> Path:
    """An ImageFolder tree of small colour photos of 4 learnable texture classes, at varied
    sizes (40-72 px) and alternating JPEG/PNG, like a user's folder in miniature."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[200, 60, 60], [60, 180, 60], [60, 60, 200], [180, 180, 60]])
    for c, cls in enumerate(("a", "b", "c", "d")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in torch.randint(40, 73, (2,), generator=g))
            yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            py, px = (int(v) for v in torch.randint(0, 8, (2,), generator=g))
            rows, cols = ((yy + py) // 4) % 2, ((xx + px) // 4) % 2
            pattern = [rows, cols, (rows + cols) % 2, torch.zeros_like(rows)][c].float()
            noise = torch.rand(h, w, generator=g) * 0.3
            shade = (0.35 + 0.5 * pattern + noise).clamp(0, 1)
            img = (shade[..., None] * colours[c]).clamp(0, 255).to(torch.uint8).numpy()
            ext = "jpg" if i % 2 else "png"
            Image.fromarray(img).save(root / cls / f"{i:03d}.{ext}")
    return root


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """A small ImageFolder tree of photos (4 classes x 24), written once per session."""
    return write_photo_folder(tmp_path_factory.mktemp("photos"))
