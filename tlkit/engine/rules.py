"""Rules between a run's options and its data, written once for every way a run is asked for.

:func:`tlkit.fit`, ``tlkit fit`` (its ``--set`` options go to :func:`tlkit.fit`) and the notebook
dashboard's form all reach these functions, so one mistake gets one message wherever it is made.
Rules about a single option's value live in :class:`tlkit.FitConfig`; the list of known options
is :func:`tlkit.engine.config.check_known_options`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tlkit.errors import ConfigError

#: Options whose strategies learn from the unlabelled target images.
TARGET_OPTIONS = ("pseudo_label", "adapt", "validate")
#: What to do about it, in code.
NO_TARGET_FIX = (
    "Use a pair such as tlkit.datasets.load('synth-digits->digits'), or "
    "tlkit.datasets.few_labels(task, k) for a semi-supervised task."
)


def _shown(names: list[str]) -> str:
    return repr(names[0] if len(names) == 1 else names)


def refuse_without_target(
    selected: Mapping[str, list[str]], task: str, has_target: bool, fix: str = NO_TARGET_FIX
) -> None:
    """Strategies that learn from unlabelled target data need a task with a target.

    Args:
        selected: the strategy names of the options that use the target, by option
            (``{"adapt": ["dann"]}``; :data:`TARGET_OPTIONS` are those of fit()).
        task: the task's name, as the message shows it.
        has_target: whether the task has unlabelled target data.
        fix: the advice that ends the message (the default speaks code; the dashboard's names
            its fields).
    """
    if has_target:
        return
    names = [name for name, chosen in selected.items() if chosen]
    picked = [f"{name}={_shown(list(selected[name]))}" for name in names]
    if picked:
        verb = "learns" if len(names) == 1 and len(selected[names[0]]) == 1 else "learn"
        raise ConfigError(
            f"{' and '.join(picked)} {verb} from unlabelled target data, but task '{task}' has "
            f"no target. {fix}"
        )


def strategy_names(value: Any) -> list[str]:
    """The strategy names of one option's value (``"dann"``, ``["dann", ("mcc", {...})]``)."""
    from tlkit import registry

    return [name for name, _ in registry.normalize_selection(value)]


__all__ = ["NO_TARGET_FIX", "TARGET_OPTIONS", "refuse_without_target", "strategy_names"]
