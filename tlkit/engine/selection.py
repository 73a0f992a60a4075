"""Which strategies a run uses, checked against the task before any training.

``fit(loss=..., pseudo_label=..., adapt=..., regularize=..., validate=...)`` name strategies; this
module turns those selections into installed strategies, refuses what the task cannot serve
(a loss for the other task, target-data strategies without a target), and resolves the metric
that picks the best checkpoint -- all before the first step, so a typo never costs a training run.
"""

from __future__ import annotations

from typing import Any

from tlkit import registry
from tlkit.datasets.domain import DomainPair
from tlkit.engine import rules
from tlkit.engine.config import FitConfig
from tlkit.errors import ConfigError, PluginError


def select(
    config: FitConfig, data: DomainPair
) -> list[tuple[registry.StrategyInfo, dict[str, Any]]]:
    """``[(strategy, options)]`` for the run, in the order loss, pseudo-label, adapt, regularize,
    validate."""
    loss = config.loss
    if loss == "auto":
        loss = "cross_entropy" if data.task == "classification" else "mse"
    losses = registry.normalize_selection(loss)
    if len(losses) != 1:
        raise ConfigError(
            f"loss= takes exactly one supervised loss, got {[n for n, _ in losses]}. "
            "Two supervised losses cannot both answer; pick one."
        )
    pseudo = registry.normalize_selection(config.pseudo_label)
    if len(pseudo) > 1:
        raise ConfigError(
            f"pseudo_label= takes one strategy at a time, got {[n for n, _ in pseudo]}."
        )
    for arg in rules.TARGET_OPTIONS:  # one at a time, in this order
        chosen = {arg: rules.strategy_names(getattr(config, arg))}
        rules.refuse_without_target(chosen, data.name, data.target is not None)
    picked: list[tuple[registry.StrategyInfo, dict[str, Any]]] = []
    for family, selection in (
        ("loss", losses),
        ("pseudo_label", pseudo),
        ("adapt", registry.normalize_selection(config.adapt)),
        ("regularizer", registry.normalize_selection(config.regularize)),
        ("validator", registry.normalize_selection(config.validate)),
    ):
        for name, opts in selection:
            info = registry.get(name, family)
            if any(p.qualified_name == info.qualified_name for p, _ in picked):
                raise ConfigError(f"strategy '{name}' is selected twice.")
            picked.append((info, opts))
    return picked


def check_fit(strategies: dict[str, Any], families: dict[str, str], data: DomainPair) -> None:
    """Refuse strategies this task cannot serve, naming them."""
    for name, plugin in strategies.items():
        if (
            data.source_free
            and families[name] != "loss"
            and not getattr(plugin, "source_free", False)
        ):
            raise ConfigError(
                f"{registry.FAMILIES[families[name]]}='{name}' learns from labelled source data, "
                "which a source-free run (source_free=True) does not have. Use strategies that "
                "declare source_free = True, such as adapt='shot'."
            )
        needed = getattr(plugin, "requires_task", None)
        if needed not in (None, "any") and needed != data.task:
            raise PluginError(
                f"strategy '{name}' is for {needed} tasks; this one is {data.task}. Drop it, or "
                "pick one that fits from tlkit.strategies()."
            )
        wants_target = getattr(plugin, "needs_target", False) or hasattr(
            plugin, "tlkit_target_scores"
        )
        if wants_target:
            chosen = {registry.FAMILIES[families[name]]: [name]}
            rules.refuse_without_target(chosen, data.name, data.target is not None)


def resolve_domain_bn(strategies: dict[str, Any]) -> str:
    """``domain_bn="auto"``: ``"separate"`` when a strategy of the run declares it (adversarial
    alignment, whose shared BatchNorm statistics let the discriminator collapse: DANN falls from
    1x to 4x budget with them and rises with separate ones), else ``"shared"`` (BNM and SHOT,
    which read only the target's predictions, measure better with the two domains normalised
    together; benchmarks/results/domain_adaptation.md has the study)."""
    wanted = {getattr(p, "domain_bn", None) for p in strategies.values()}
    return "separate" if "separate" in wanted else "shared"


def resolve_monitor(
    config: FitConfig, data: DomainPair, strategies: dict[str, Any]
) -> tuple[str, str]:
    """The metric that picks the best checkpoint and whether higher is better (``"max"`` /
    ``"min"``), checked against the metrics this run will produce."""
    m = config.monitor
    evaluated = list(data.eval_sets())
    kinds = ("accuracy",) if data.task == "classification" else ("mae", "rmse")
    if m == "auto":
        m = f"source_{kinds[0]}" if "source" in evaluated else "train_loss"
    known = ["train_loss", "supervised"] + [f"{s}_{k}" for s in evaluated for k in kinds]
    validators = [p for p in strategies.values() if hasattr(p, "tlkit_target_scores")]
    declared = [getattr(p, "scores", None) for p in validators]
    if validators and all(d is not None for d in declared):  # every validator says what it reports
        known += [s if s.startswith("score_") else f"score_{s}" for d in declared for s in d]
        validators = []  # nothing else can appear
    if m not in known and not (m.startswith("score_") and validators):
        hint = (
            " or a score_<name> of a validator (validate=...)"
            if validators
            else ""
            if any(k.startswith("score_") for k in known)
            else "; score_<name> metrics need a validator (validate=['info_max'], say)"
        )
        raise ConfigError(
            f"monitor='{m}' is not a metric of this run; choose one of {known}{hint}."
        )
    return m, "max" if m.endswith("accuracy") or m.startswith("score_") else "min"
