"""Every sample trains every epoch: the last partial batch is used (a remainder of one joins the
batch before it), ``batch_size="auto"`` suits tiny data, exact resume still holds, and source
and target batches of unequal sizes train."""

from __future__ import annotations

import pytest
import torch
from conftest import pattern_domain

import tlkit
from tlkit.datasets import DomainPair, from_folder
from tlkit.engine import distributed
from tlkit.engine.batch_plan import auto_batch_size, batch_sizes
from tlkit.engine.config import FitConfig
from tlkit.engine.feeding import Feeder
from tlkit.testing import make_photo_folder


def feeder(data, **options) -> Feeder:
    config = FitConfig(backbone="small_cnn", progress=False, num_workers=0, **options)
    pair = data if isinstance(data, DomainPair) else DomainPair(data, name=data.name)
    return Feeder(pair, config, torch.device("cpu"), distributed.DistInfo(), size=16)


def epoch_indices(f: Feeder, epoch: int = 0, start: int = 0, *, target: bool = False):
    batches = list(f.batches(epoch, start, with_target=target))
    return batches, [b.indices.tolist() for b in batches]


def test_96_samples_with_batch_64_train_on_all_96():
    f = feeder(pattern_domain(96, seed=0, name="s"), batch_size=64)
    batches, seen = epoch_indices(f)
    assert f.steps_per_epoch == 2
    assert [len(i) for i in seen] == [64, 32]
    assert sorted(sum(seen, [])) == list(range(96))
    assert [tuple(b.x.shape) for b in batches] == [(64, 1, 16, 16), (32, 1, 16, 16)]


def test_a_remainder_of_one_joins_the_previous_batch():
    assert batch_sizes(65, 64) == [65]
    assert batch_sizes(129, 64) == [64, 65]
    assert batch_sizes(130, 64) == [64, 64, 2]
    assert batch_sizes(5, 1) == [1] * 5  # batch_size=1 was asked for
    assert batch_sizes(0, 8) == []
    f = feeder(pattern_domain(65, seed=0, name="s"), batch_size=32)
    _, seen = epoch_indices(f)
    assert [len(i) for i in seen] == [32, 33]
    assert sorted(sum(seen, [])) == list(range(65))


def test_a_remainder_of_one_trains_with_batchnorm():
    """A batch of one in train mode makes BatchNorm raise: 65 samples with batch 32 must train."""
    domain = pattern_domain(65, seed=0, name="s")
    run = tlkit.fit(domain, backbone="small_cnn", mode="full", epochs=1, batch_size=32,
                    progress=False, seed=0)
    assert run.history[-1]["step"] == 2


def test_the_default_batch_suits_tiny_data():
    assert FitConfig().batch_size == "auto"
    assert auto_batch_size(96) == 24 and auto_batch_size(120) == 30
    assert auto_batch_size(10_000) == 64 and auto_batch_size(3) == 2
    f = feeder(pattern_domain(96, seed=0, name="s"))
    assert f.batch_size == 24 and f.steps_per_epoch == 4
    _, seen = epoch_indices(f)
    assert sorted(sum(seen, [])) == list(range(96))
    run = tlkit.fit(pattern_domain(30, seed=0, name="s"), backbone="small_cnn", mode="full",
                    epochs=2, progress=False, seed=0)
    assert run.history[-1]["step"] == 2 * 5  # 30 samples: batches of 7, 7, 7, 7 and 2


def test_a_resumed_epoch_replays_the_same_partial_batches():
    f = feeder(pattern_domain(100, seed=0, name="s"), batch_size=32, seed=3)
    _, whole = epoch_indices(f, epoch=1)
    _, tail = epoch_indices(f, epoch=1, start=2)
    assert [len(i) for i in whole] == [32, 32, 32, 4]
    assert tail == whole[2:]


def test_photo_folder_epoch_sees_every_readable_photo(tmp_path):
    photos = make_photo_folder(tmp_path / "p", classes=2, per_class=7, sizes=((64, 48),),
                               png_every=0, rotated=0, corrupt=0, csv=False)
    domain = from_folder(photos.root)
    f = feeder(domain, batch_size=4)
    assert f.steps_per_epoch == 4  # 14 photos: 4 + 4 + 4 + 2
    batches, seen = epoch_indices(f)
    assert sorted(sum(seen, [])) == list(range(len(domain)))
    assert [len(b.x) for b in batches] == [4, 4, 4, 2]
    _, tail = epoch_indices(f, start=3)
    assert tail == seen[3:]


def _pair(n_source: int, n_target: int) -> DomainPair:
    source = pattern_domain(n_source, seed=0, name="src")
    target = pattern_domain(n_target, seed=1, name="tgt", shift=0.2).unlabelled()
    return DomainPair(source, None, target, name="pair")


def test_source_and_target_batches_of_unequal_sizes():
    f = feeder(_pair(40, 50), batch_size=16)
    batches, seen = epoch_indices(f, target=True)
    assert [len(i) for i in seen] == [16, 16, 8]
    assert [len(b.target_indices) for b in batches] == [16, 16, 16]
    assert sorted(sum(seen, [])) == list(range(40))


@pytest.mark.parametrize("adapt", ["dann", "dan", "coral", "cdan", "mcc", "bnm", "fda"])
def test_adaptation_trains_on_a_last_batch_smaller_than_the_target_batch(adapt):
    run = tlkit.fit(_pair(40, 50), backbone="small_cnn", mode="full", epochs=1, batch_size=16,
                    adapt=adapt, progress=False, seed=0)
    assert run.history[-1]["step"] == 3
    assert all(torch.isfinite(torch.tensor(v)) for v in run.history[-1].values()
               if isinstance(v, float))
