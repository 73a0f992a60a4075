"""Each issue-11 adaptation strategy, trained briefly on a bundled pair, beats source-only.

The setting of ``test_dann_beats_source_only_on_small_digits``: 16 px, 600 source images, 8
epochs of batch 32 (152 steps), small_cnn from scratch, seed 0. The margins asserted are well
below the gains measured while writing them (in each test's docstring).
"""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch

import tlkit

pytestmark = pytest.mark.slow

OPTS = dict(
    mode="full",
    epochs=8,
    batch_size=32,
    lr=1e-3,
    lr_spread=1.0,
    image_size=16,
    progress=False,
    seed=0,
    precision="fp32",
    backbone="small_cnn",
)


@functools.cache
def task(pair: str, source_images: int = 600):
    t = tlkit.datasets.load(pair, image_size=16)
    g = torch.Generator().manual_seed(0)
    keep = torch.randperm(len(t.source), generator=g)[:source_images].sort().values
    return replace(t, source=t.source.subset(keep), source_test=None)


@functools.cache
def accuracy(pair: str, adapt=None, source_images: int = 600, **options) -> float:
    adapt = list(adapt) if isinstance(adapt, tuple) else adapt
    data = task(pair, source_images)
    acc = tlkit.fit(data, adapt=adapt, **{**OPTS, **options}).last["target_accuracy"]
    print(f"{pair} {adapt} {options}: {100 * acc:.1f}")  # shown with pytest -s
    return acc


SYNTH, MNISTM = "synth-digits->digits", "digits->digits-m"


def test_bnm_beats_source_only():
    """Measured: source-only 40.7, BNM 62.7."""
    assert accuracy(SYNTH, "bnm") > accuracy(SYNTH) + 0.10


def test_shot_beats_source_only():
    """Measured: source-only 40.7, SHOT 64.3."""
    assert accuracy(SYNTH, "shot") > accuracy(SYNTH) + 0.10


def test_dsbn_beats_source_only():
    """Measured: source-only 40.7, DSBN + DANN 56.5 (domain_bn="auto" picks the separate passes
    DSBN needs)."""
    both = accuracy(SYNTH, ("dsbn", "dann"))
    assert both > accuracy(SYNTH) + 0.05


def test_fda_beats_source_only():
    """Measured on digits -> digits-m: source-only 32.9, FDA 51.8."""
    assert accuracy(MNISTM, "fda") > accuracy(MNISTM) + 0.05


def test_pixelda_beats_source_only():
    """Measured on digits -> digits-m: source-only 32.9, PixelDA 45.4."""
    assert accuracy(MNISTM, "pixelda") > accuracy(MNISTM) + 0.03


def test_colour_augmentation_pays_on_digits_m():
    """Random background and ink colours on the grey source (``augment="colour"``) cover most
    of digits -> digits-m's shift. It needs more steps than the tests above (its first epochs
    are below source-only): the benchmark's 1200 source images (296 steps). Measured:
    source-only 34.5, with the augmentation 71.3."""
    colour = accuracy(MNISTM, source_images=1200, augment="colour")
    assert colour > accuracy(MNISTM, source_images=1200) + 0.2


def test_pixelda_trains_on_colour_augmented_source():
    """The engine augments the source batch before ``tlkit_transform_source``: PixelDA's
    generator then starts from many colour schemes. Measured at 296 steps: PixelDA 54.0, with
    the augmentation 71.3."""
    colour = accuracy(MNISTM, "pixelda", source_images=1200, augment="colour")
    assert colour > accuracy(MNISTM, "pixelda", source_images=1200) + 0.08


@pytest.mark.parametrize(("pair", "margin"), [(SYNTH, 0.10), (MNISTM, 0.02)])
def test_dan_beats_source_only(pair, margin):
    """DAN with its default MMD weight (3). Measured: synth-digits -> digits source-only 40.7,
    DAN 59.1; digits -> digits-m source-only 32.9, DAN 37.3. (Weight 1 gives 63.8 / 38.7 at
    these 152 steps; 3 pays at the benchmark's 4x budget, see dan.py.)"""
    assert accuracy(pair, "dan") > accuracy(pair) + margin
