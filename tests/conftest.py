"""Shared fixtures: tiny learnable tasks, an isolated dataset cache, temporary strategies."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.datasets import Domain, DomainPair
from tlkit.testing import PhotoFolder, make_photo_folder


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


#: :func:`tlkit.testing.make_photo_folder`'s photos at thumbnail size (42-72 px), for tests that
#: train on a folder many times: 4 classes (chelsea, coffee, rocket, astronaut), JPEGs and PNGs
#: alternating, no broken files (the tests that want them write or ask for them). The folder
#: still holds the generator's ``notes.txt`` and hidden file, which listings skip.
THUMBNAILS = dict(
    classes=4,
    sizes=((72, 54), (64, 48), (48, 64), (56, 42)),
    png_every=2,
    png_size=(60, 45),
    rotated=0,
    corrupt=0,
    nested=False,
    csv=False,
)


def thumbnail_photos(root: Path, *, per_class: int = 24, seed: int = 0) -> PhotoFolder:
    """The shared photo generator at thumbnail size (:data:`THUMBNAILS`)."""
    return make_photo_folder(root, per_class=per_class, seed=seed, **THUMBNAILS)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> PhotoFolder:
    """A folder of 4 classes x 24 thumbnail photos (:func:`thumbnail_photos`), written once."""
    return thumbnail_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def photo_folder(photos) -> Path:
    """The root of :func:`photos`."""
    return photos.root
