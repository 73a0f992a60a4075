"""Checking a strategy when it is installed, not when a run first calls it: its hooks exist and
take only arguments the hook passes, no ``tlkit_*`` function is left unmarked, its declarations
(``requires_task``, ``needs_target``...) have valid values, and a loss says which task it is for.
:mod:`tlkit.registry` runs these checks on every strategy it installs.
"""

from __future__ import annotations

import inspect
from typing import Any

from tlkit import hookspecs, options
from tlkit.errors import PluginError

#: Strategy families and the ``fit`` argument that selects them.
FAMILIES: dict[str, str] = {
    "loss": "loss",
    "pseudo_label": "pseudo_label",
    "adapt": "adapt",
    "regularizer": "regularize",
    "validator": "validate",
    "query": "query",
}
TASKS = ("classification", "regression", "any")
#: Class attributes the engine reads, with the types they must have.
DECLARATIONS: dict[str, type] = {
    "needs_target": bool,
    "needs_images": bool,
    "needs_strong_view": bool,
    "replaces_weight_decay": bool,
    "source_free": bool,
    "keeps_domain_statistics": bool,
}


def required_args(fn: Any) -> list[str]:
    """The argument names pluggy would pass to ``fn`` (positional ones without defaults)."""
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name in ("self", "cls") and not inspect.ismethod(fn):
        params = params[1:]
    return [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


#: Hooks whose one answer decides something, by the family allowed to give it (a regularizer
#: answering tlkit_supervised_loss would silently replace loss=).
HOOK_FAMILIES = {
    "tlkit_supervised_loss": ("loss",),
    "tlkit_pseudo_labels": ("pseudo_label",),
    "tlkit_query_scores": ("query",),
}
#: What observers (fit(observers=[...])) may implement: they watch, they do not train.
OBSERVER_HOOKS = ("tlkit_on_fit_start", "tlkit_on_step_end", "tlkit_on_epoch_end",
                  "tlkit_on_fit_end", "tlkit_before_evaluate")  # fmt: skip


def check_hooks(obj: Any, name: str) -> list[str]:
    impls = []
    for attr in dir(obj):
        if not attr.startswith("tlkit_"):
            raw = inspect.getattr_static(obj, attr, None)  # no property is evaluated
            raw = getattr(raw, "__func__", raw)  # staticmethod / classmethod
            if callable(raw) and getattr(raw, f"{hookspecs.PROJECT}_impl", None) is not None:
                raise PluginError(
                    f"strategy '{name}': {attr} is marked @tlkit.hookimpl but is not named after "
                    "a hook; name the method after the hook it implements (specname= is not "
                    "supported)."
                )
            continue
        fn = getattr(obj, attr, None)
        if attr not in hookspecs.HOOK_NAMES:
            raise PluginError(
                f"strategy '{name}' defines {attr}, which is not a tlkit hook (misspelt, or a hook "
                f"that was removed?); the hooks are {', '.join(hookspecs.HOOK_NAMES)}."
            )
        if not callable(fn):
            continue
        opts = getattr(fn, f"{hookspecs.PROJECT}_impl", None)
        if opts is None:
            raise PluginError(
                f"strategy '{name}' defines {attr} without @tlkit.hookimpl, so it would never be "
                "called; mark it with @tlkit.hookimpl."
            )
        if opts.get("wrapper") or opts.get("hookwrapper"):
            raise PluginError(
                f"strategy '{name}': {attr} is a hook wrapper; tlkit strategies implement hooks "
                "directly (drop wrapper=True / hookwrapper=True)."
            )
        given = inspect.signature(getattr(hookspecs, attr)).parameters
        unknown = [a for a in required_args(fn) if a not in given]
        if unknown:
            raise PluginError(
                f"strategy '{name}': {attr} asks for {unknown}, which the hook does not pass; it "
                f"passes {', '.join(given)} (take any subset, by these names)."
            )
        impls.append(attr)
    if not impls:
        raise PluginError(
            f"strategy '{name}' implements no hook: mark its methods with @tlkit.hookimpl and "
            f"name them after hooks in tlkit.hookspecs ({', '.join(hookspecs.HOOK_NAMES)})."
        )
    return impls


def check_strategy(obj: Any, *, name: str | None, family: str | None) -> tuple[str, str, str]:
    """Check ``obj`` as a strategy; ``(name, family, one-line summary)``. ``name`` and
    ``family`` override the object's own attributes."""
    name = name or getattr(obj, "name", None)
    family = family or getattr(obj, "family", None)
    what = getattr(obj, "__name__", type(obj).__name__)
    if not name or not isinstance(name, str):
        raise PluginError(f"strategy {what} has no name: set a `name` attribute or pass name=.")
    if ":" in name:
        raise PluginError(f"strategy name '{name}' may not contain ':' (it separates providers).")
    if family not in FAMILIES:
        raise PluginError(
            f"strategy '{name}' has family {family!r}; it must be one of {sorted(FAMILIES)} "
            "(set a `family` attribute or pass family=)."
        )
    impls = check_hooks(obj, name)
    for hook, families in HOOK_FAMILIES.items():
        if hook in impls and family not in families:
            raise PluginError(
                f"strategy '{name}' ({family}) implements {hook}, which only {families[0]} "
                f"strategies answer (selected by {FAMILIES[families[0]]}=); its answer would "
                "silently replace theirs."
            )
    scores = getattr(obj, "scores", None)
    if scores is not None and (
        isinstance(scores, str) or not all(isinstance(s, str) and s for s in scores)
    ):
        raise PluginError(f"strategy '{name}': scores must be a tuple of names, got {scores!r}.")
    for attr, kind in DECLARATIONS.items():
        value = getattr(obj, attr, False)
        if not isinstance(value, kind):
            raise PluginError(f"strategy '{name}': {attr} must be True or False, got {value!r}.")
    prefers = getattr(obj, "domain_bn", None)
    if prefers is not None and prefers not in options.DOMAIN_BN:
        raise PluginError(
            f"strategy '{name}': domain_bn must be 'shared' or 'separate', got {prefers!r}."
        )
    task = getattr(obj, "requires_task", None)
    if task is not None and task not in TASKS:
        raise PluginError(
            f"strategy '{name}': requires_task must be one of {list(TASKS)}, got {task!r}."
        )
    if family == "loss" and task is None:
        raise PluginError(
            f"loss strategy '{name}' must declare the task it is for: requires_task = "
            "'classification', 'regression' or 'any' (a loss for the wrong task trains silently "
            "on nonsense, e.g. class ids regressed as numbers)."
        )
    doc = inspect.getdoc(obj) or ""
    summary = getattr(obj, "summary", None) or (doc.strip().splitlines() or [""])[0]
    return name, family, str(summary)
