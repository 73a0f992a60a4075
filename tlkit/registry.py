"""Which strategies are installed, and the run-scoped plugin manager for the ones a run uses.

Installed strategies come from two places:

* the ``tlkit`` entry-point group -- first-party strategies in ``plugins/`` and third-party
  packages alike, e.g. ``gce = "my_package.gce:GCE"`` in ``[project.entry-points.tlkit]``;
* :func:`register`, called from a notebook cell or a script.

A strategy is a class (instantiated per run with the options the run passes), an instance, or a
module, carrying ``name``, ``family`` and ``@tlkit.hookimpl`` functions. Names are unique across
families (``loss="gce"`` and ``tlkit.strategies()`` look them up in one namespace). Many are installed; a run
asks for a few by name and only those are registered in that run's :class:`pluggy.PluginManager`.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from tlkit import hookspecs

#: Strategy families and the ``fit`` argument that selects them.
FAMILIES: dict[str, str] = {
    "loss": "loss",
    "pseudo_label": "pseudo_label",
    "adapt": "adapt",
    "regularizer": "regularize",
    "validator": "validate",
    "query": "query",
}


class PluginError(RuntimeError):
    """A strategy plugin is missing, broken, or failed inside a hook."""


class StrategyOptionError(PluginError, ValueError):
    """A strategy was given an option it rejects."""


class UnknownStrategyError(PluginError, KeyError):
    """A run named a strategy that is not installed."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0])


@dataclass
class StrategyInfo:
    """One installed strategy: what it is, who provides it, and how to instantiate it."""

    name: str
    family: str
    summary: str
    provider: str
    obj: Any = field(repr=False)

    def create(self, **options: Any) -> Any:
        """A fresh plugin object for one run (classes are instantiated with ``options``)."""
        if inspect.isclass(self.obj):
            try:
                return self.obj(**options)
            except TypeError as exc:
                raise PluginError(
                    f"strategy '{self.name}' does not accept options {sorted(options)}: {exc}"
                ) from exc
            except ValueError as exc:
                raise StrategyOptionError(f"strategy '{self.name}': bad option: {exc}") from exc
        if options:
            raise PluginError(
                f"strategy '{self.name}' takes no options (it is a module or an instance); "
                f"got {sorted(options)}."
            )
        return self.obj


class StrategyTable(list):
    """A list of :class:`StrategyInfo` that prints as a table (text and HTML)."""

    _columns = ("name", "family", "summary", "provider")

    def rows(self) -> list[tuple[str, ...]]:
        return [tuple(str(getattr(s, c)) for c in self._columns) for s in self]

    def __repr__(self) -> str:
        rows = [self._columns, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._columns))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        from html import escape

        head = "".join(f"<th>{c}</th>" for c in self._columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in r) + "</tr>" for r in self.rows()
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_registry: dict[str, StrategyInfo] = {}
_entry_points_loaded = False


def _describe(obj: Any, *, name: str | None, family: str | None, provider: str) -> StrategyInfo:
    name = name or getattr(obj, "name", None)
    family = family or getattr(obj, "family", None)
    what = getattr(obj, "__name__", type(obj).__name__)
    if not name:
        raise PluginError(f"strategy {what} has no name: set a `name` attribute or pass name=.")
    if family not in FAMILIES:
        raise PluginError(
            f"strategy '{name}' has family {family!r}; it must be one of {sorted(FAMILIES)} "
            "(set a `family` attribute or pass family=)."
        )
    impls = [
        n
        for n in hookspecs.HOOK_NAMES
        if hasattr(obj, n) and hasattr(getattr(obj, n), "tlkit_impl")
    ]
    stray = [n for n in dir(obj) if n.startswith("tlkit_") and n not in hookspecs.HOOK_NAMES]
    if stray:
        raise PluginError(
            f"strategy '{name}' defines {stray}, which are not tlkit hooks; known hooks: "
            f"{hookspecs.HOOK_NAMES}."
        )
    if not impls:
        raise PluginError(
            f"strategy '{name}' implements no hook: mark its methods with @tlkit.hookimpl and "
            f"name them after hooks in tlkit.hookspecs ({', '.join(hookspecs.HOOK_NAMES)})."
        )
    doc = inspect.getdoc(obj) or ""
    summary = getattr(obj, "summary", None) or (doc.strip().splitlines() or [""])[0]
    return StrategyInfo(name=name, family=family, summary=summary, provider=provider, obj=obj)


def _load_entry_points() -> None:
    """Load the ``tlkit`` entry-point group once; a broken plugin warns, naming itself."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        provider = ep.dist.name if ep.dist is not None else "unknown"
        try:
            obj = ep.load()
            info = _describe(obj, name=ep.name, family=None, provider=provider)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break tlkit
            warnings.warn(
                f"tlkit: skipped plugin '{ep.name}' ({ep.value}) from package '{provider}': "
                f"{type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        _registry.setdefault(info.name, info)


def register(obj: Any = None, *, name: str | None = None, family: str | None = None) -> Any:
    """Make a strategy available by name for this session; usable as a class decorator.

    ``obj`` is a class (instantiated per run), an instance or a module with ``@tlkit.hookimpl``
    methods. A later registration under the same name replaces the earlier one, so re-running a
    notebook cell just updates the strategy.
    """
    if obj is None:
        return lambda o: register(o, name=name, family=family)
    _load_entry_points()
    info = _describe(obj, name=name, family=family, provider="session")
    _registry[info.name] = info
    return obj


def unregister(name: str) -> None:
    """Forget a strategy registered in this session (or loaded from an entry point)."""
    _registry.pop(name, None)


def strategies(family: str | None = None) -> StrategyTable:
    """The installed strategies as a table, optionally of one family."""
    _load_entry_points()
    items = sorted(_registry.values(), key=lambda s: (s.family, s.name))
    return StrategyTable(s for s in items if family is None or s.family == family)


def get(name: str, family: str | None = None) -> StrategyInfo:
    """Look a strategy up by name; unknown names fail with the list of known ones."""
    _load_entry_points()
    info = _registry.get(name)
    if info is None:
        known = [s.name for s in strategies(family)]
        what = f"{family} strategy" if family else "strategy"
        raise UnknownStrategyError(
            f"unknown {what} '{name}'. Known: {', '.join(known) or '(none installed)'}. "
            "Install a plugin package or tlkit.register(...) one in this session."
        )
    if family is not None and info.family != family:
        arg = FAMILIES[family]
        raise PluginError(
            f"'{name}' is a {info.family} strategy, not a {family} one, so it cannot be passed "
            f"as {arg}=. Pass it as {FAMILIES[info.family]}='{name}'."
        )
    return info


def normalize_selection(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """``None`` | ``"name"`` | ``("name", {opts})`` | a list of those -> ``[(name, opts)]``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, {})]
    if isinstance(value, dict):
        return [(k, dict(v or {})) for k, v in value.items()]
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
    ):  # ("name", {opts}); YAML/JSON configs give the list form
        return [(value[0], dict(value[1]))]
    out: list[tuple[str, dict[str, Any]]] = []
    for item in value:
        out.extend(normalize_selection(item))
    return out


def make_plugin_manager(
    selected: Iterable[tuple[StrategyInfo, dict[str, Any]]], observers: Iterable[Any] = ()
) -> pluggy.PluginManager:
    """A fresh manager with the run's strategies and observers (and nothing else)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for info, options in selected:
        pm.register(info.create(**options), name=info.name)
    for i, observer in enumerate(observers):
        pm.register(observer, name=f"observer-{i}-{type(observer).__name__}")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin '{exc.plugin}' does not match the tlkit hooks: {exc}") from exc
    return pm


def call_hook(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> Any:
    """Call a hook; an exception inside an implementation is re-raised naming plugin and hook."""
    caller = getattr(pm.hook, hook_name)
    try:
        return caller(**kwargs)
    except PluginError:
        raise
    except Exception as exc:
        codes = {impl.function.__code__: impl.plugin_name for impl in caller.get_hookimpls()}
        culprit = None
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            if frame.f_code in codes:
                culprit = codes[frame.f_code]
        if culprit is None:
            raise
        raise PluginError(
            f"strategy '{culprit}' failed in hook {hook_name}: {type(exc).__name__}: {exc}"
        ) from exc
