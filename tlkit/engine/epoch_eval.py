"""The end of an epoch: metrics on the held-out sets, the target's predictions for the
validators, and whether the monitored metric improved."""

from __future__ import annotations

import contextlib
from typing import Any

from torch import nn

from tlkit.datasets.domain import DomainPair
from tlkit.engine.evaluate import metrics_from_outputs, predict
from tlkit.engine.feature_cache import FeatureCache
from tlkit.errors import ConfigError
from tlkit.step import domain_context

#: The scalar metrics of a held-out set that join the history (``source_accuracy``...).
SCALARS = ("accuracy", "mae", "rmse")


def held_out(
    model: nn.Module,
    data: DomainPair,
    feeder: Any,
    *,
    features: FeatureCache | None,
    domain_stats: Any,
    precision: str,
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """``(scalars, full metrics)`` of each held-out set: ``{"source_accuracy": ...}`` and
    ``{"source": metrics}``. ``features``: the frozen backbone's cached features (or ``None``:
    the inputs). ``domain_stats`` (or ``None``): the per-domain BatchNorm statistics, given to
    ``model`` by hand (an EMA model has no hooks)."""
    scalars: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, domain in data.eval_sets().items():
        batches, from_features = feeder.eval_batches(f"eval_{name}", features)
        statistics = (
            domain_stats.evaluating(model, name)
            if domain_stats is not None
            else contextlib.nullcontext()
        )
        with domain_context(name), statistics:
            p = predict(model, batches, from_features=from_features, precision=precision)
        results[name] = metrics = metrics_from_outputs(
            p.outputs, domain, data.num_classes, p.indices
        )
        scalars.update({f"{name}_{k}": metrics[k] for k in SCALARS if k in metrics})
    return scalars, results


def target_predictions(
    model: nn.Module, feeder: Any, *, features: FeatureCache | None, precision: str
) -> Any:
    """The model's outputs and features on the unlabelled target training set (validators)."""
    batches, from_features = feeder.eval_batches("target", features)
    with domain_context("target"):
        return predict(model, batches, from_features=from_features, precision=precision)


def improved(
    row: dict[str, Any], best: dict[str, Any], name: str, mode: str
) -> dict[str, Any] | None:
    """The new best record when ``row``'s monitored value beats ``best``, else ``None``."""
    if name not in row:
        raise ConfigError(
            f"monitor='{name}' is not among this run's metrics {sorted(row)}; no validator "
            "reported it."
        )
    value, before = row[name], best["value"]
    if before is None or (value > before if mode == "max" else value < before):
        return {"value": value, "epoch": row["epoch"], "metric": name}
    return None
