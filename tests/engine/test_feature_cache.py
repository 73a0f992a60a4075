"""The frozen phase's feature cache has one owner: the trainer fills a FeatureCache from the
feeder's sets (the cache computes features from the model, never calling back into the trainer),
and the feeder reads batches from the cache it is given."""

from __future__ import annotations

import torch
from conftest import make_tiny_task

from tlkit.engine import distributed
from tlkit.engine.config import FitConfig
from tlkit.engine.feature_cache import FeatureCache
from tlkit.engine.feeding import Feeder
from tlkit.engine.network import build_model


def setup(**options):
    config = FitConfig(
        backbone="small_cnn", progress=False, num_workers=0, batch_size=16, **options
    )
    data = make_tiny_task()
    torch.manual_seed(0)
    model = build_model(None, config, data).eval()
    feeder = Feeder(data, config, torch.device("cpu"), distributed.DistInfo(), size=16)
    return config, data, model, feeder


def test_the_cache_holds_the_backbones_features_of_each_set_and_batches_read_them():
    config, data, model, feeder = setup()
    cache = FeatureCache(model, 16, config, "fp32")
    sets = feeder.feature_sets(target=False)
    assert set(sets) == {"source", "eval_source", "eval_target"}, "the target only when asked"
    cache.fill(sets)
    assert "source" in cache and "target" not in cache
    batch = next(feeder.batches(0, 0, with_target=False, features=cache))
    assert batch.x is None
    with torch.no_grad():  # the backbone on the source's evaluation inputs, by position
        inputs = list(feeder.source.eval_batches(config.eval_batch_size))
        by_index = {int(i): f for x, idx in inputs for i, f in zip(idx, model.features(x))}
    expected = torch.stack([by_index[int(i)] for i in batch.indices])
    torch.testing.assert_close(batch.cached, expected.float())
    cache.fill(feeder.feature_sets(target=True))
    assert "target" in cache


def test_a_set_is_computed_once():
    config, data, model, feeder = setup()
    cache = FeatureCache(model, 16, config, "fp32")
    calls = []
    hook = model.backbone.register_forward_hook(lambda *a: calls.append(1))
    cache.fill(feeder.feature_sets(target=True))
    first = len(calls)
    cache.fill(feeder.feature_sets(target=True))
    hook.remove()
    assert first > 0 and len(calls) == first


def test_evaluation_reads_cached_features_only_when_given_the_cache():
    config, data, model, feeder = setup()
    cache = FeatureCache(model, 16, config, "fp32")
    cache.fill(feeder.feature_sets(target=False))
    _, from_features = feeder.eval_batches("eval_source", cache)
    assert from_features
    _, from_features = feeder.eval_batches("eval_source", None)
    assert not from_features
    _, from_features = feeder.eval_batches("target", cache)  # not filled: the inputs
    assert not from_features
