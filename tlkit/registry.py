"""Which strategies are installed, who owns each name, and the run-scoped plugin manager.

Installed strategies come from two places:

* the ``tlkit`` entry-point group -- first-party strategies in ``plugins/`` and third-party
  packages alike, e.g. ``gce = "my_package.gce:GCE"`` in ``[project.entry-points.tlkit]``;
* :func:`register`, called from a notebook cell or a script.

A strategy is a class (instantiated per run with the options the run passes), an instance, or a
module, carrying ``name``, ``family`` and ``@tlkit.hookimpl`` functions. Everything about it is
checked when it is installed (:mod:`tlkit.strategy_checks`), not when a run first calls it.

**Who owns a name.** Every strategy can be selected by its qualified name ``provider:name``
(``tlkit:dann``, ``my-package:dann``, ``session:focal``). The short name (``dann``) is resolved by
these rules, so installing a package never silently changes what a run does:

1. A first-party strategy (from the ``tlkit`` distribution) owns its short name. A third-party
   entry point with the same name is kept under its qualified name only, with a warning naming
   both. An entry point is selected by its entry-point name; a class that calls itself otherwise
   is installed with a warning (the two should agree).
2. A short name declared by exactly one third-party package belongs to it. When two packages
   declare it, neither gets it (whatever their order on ``sys.path``): selecting the short name
   fails and lists the qualified names to choose from.
3. :func:`register` (a notebook cell) may not take a name an installed strategy owns, unless it
   registers that very strategy (a package's own tests do, with the package installed): that is
   accepted and changes nothing. Registering a name again in the same session replaces the
   earlier registration (re-running a cell). :func:`unregister` removes only what this session
   registered.

:attr:`StrategyInfo.name` is the name that selects the strategy: the short name for its owner,
``provider:name`` for every other strategy declaring it.

A plugin that fails to import is reported, with the reason, when a run asks for it.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from tlkit import hookspecs
from tlkit.errors import PluginError, StrategyOptionError, UnknownStrategyError
from tlkit.strategy_checks import FAMILIES, OBSERVER_HOOKS, check_hooks, check_strategy

#: The distribution whose entry points are first-party.
FIRST_PARTY = "tlkit"
SESSION = "session"

__all__ = [
    "FAMILIES",
    "PluginError",
    "PluginName",
    "StrategyInfo",
    "StrategyOptionError",
    "UnknownStrategyError",
    "get",
    "make_plugin_manager",
    "normalize_selection",
    "register",
    "strategies",
    "unregister",
]


@dataclass
class StrategyInfo:
    """One installed strategy: what it is, who provides it, and how to instantiate it.

    ``name`` selects it (``adapt=info.name``): the short name when this strategy owns it, else
    ``provider:name``; ``short_name`` is the name it declares.
    """

    name: str
    family: str
    summary: str
    provider: str
    obj: Any = field(repr=False)
    short_name: str = ""

    def __post_init__(self) -> None:
        self.short_name = self.short_name or self.name.split(":", 1)[-1]

    @property
    def qualified_name(self) -> str:
        return f"{self.provider}:{self.short_name}"

    def create(self, **options: Any) -> Any:
        """A fresh plugin object for one run (classes are instantiated with ``options``)."""
        if inspect.isclass(self.obj):
            try:
                inspect.signature(self.obj).bind(**options)
            except TypeError as exc:
                raise StrategyOptionError(
                    f"strategy '{self.name}' does not accept options {sorted(options)} ({exc}). "
                    f"Its options: {_options_of(self.obj)}."
                ) from None
            try:
                return self.obj(**options)
            except ValueError as exc:  # StrategyOptionError included
                raise StrategyOptionError(f"strategy '{self.name}': {exc}") from exc
        if options:
            raise StrategyOptionError(
                f"strategy '{self.name}' takes no options (it is a module or an instance); "
                f"got {sorted(options)}."
            )
        return self.obj


def _options_of(cls: type) -> str:
    params = [p for p in inspect.signature(cls).parameters.values() if p.name != "self"]
    return (
        ", ".join(
            f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else p.name
            for p in params
        )
        or "none"
    )


class StrategyTable(list):
    """A list of :class:`StrategyInfo` that prints as a table (text and HTML)."""

    _columns = ("name", "family", "summary", "provider")

    def rows(self) -> list[tuple[str, ...]]:
        return [(_selectable_name(s), s.family, str(s.summary), s.provider) for s in self]

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


_installed: dict[str, StrategyInfo] = {}  # qualified name -> info
_owner: dict[str, str] = {}  # short name -> qualified name of its owner
_contested: dict[str, list[str]] = {}  # short name -> qualified names that claim it (no owner)
_broken: dict[str, str] = {}  # short name -> why its entry point failed to load
_adopted: dict[str, str] = {}  # short name -> installed strategy this session registered again
_entry_points_loaded = False


def _selectable_name(info: StrategyInfo) -> str:
    return info.name


# -- checking a strategy ----------------------------------------------------------------------
def _describe(obj: Any, *, name: str | None, family: str | None, provider: str) -> StrategyInfo:
    """Check ``obj`` (:func:`tlkit.strategy_checks.check_strategy`) and describe it."""
    name, family, summary = check_strategy(obj, name=name, family=family)
    return StrategyInfo(name=name, family=family, summary=summary, provider=provider, obj=obj)


# -- discovery --------------------------------------------------------------------------------
def _load_entry_points() -> None:
    """Load the ``tlkit`` entry-point group once; a broken plugin warns, naming itself."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    claims: dict[str, list[StrategyInfo]] = {}
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        provider = ep.dist.name if ep.dist is not None else "unknown"
        try:
            obj = ep.load()
            info = _describe(obj, name=ep.name, family=None, provider=provider)
            _warn_if_renamed(obj, ep, provider)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken plugin must not break tlkit
            reason = f"{type(exc).__name__}: {exc}"
            _broken.setdefault(ep.name, f"package '{provider}' ({ep.value}): {reason}")
            warnings.warn(
                f"tlkit: skipped plugin '{ep.name}' ({ep.value}) from package '{provider}': "
                f"{reason}",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        if info.qualified_name in _installed:
            continue
        _installed[info.qualified_name] = info
        claims.setdefault(info.name, []).append(info)
    for short, infos in claims.items():
        first = [i for i in infos if i.provider == FIRST_PARTY]
        if first:
            _owner[short] = first[0].qualified_name
            shadows = [i.qualified_name for i in infos if i.provider != FIRST_PARTY]
            if shadows:
                others = " or ".join(f"'{q}'" for q in shadows)
                warnings.warn(
                    f"tlkit: {', '.join(shadows)} uses the name of the built-in strategy "
                    f"'{short}'; '{short}' (or '{first[0].qualified_name}') selects the built-in "
                    f"one, {others} the other.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        elif len(infos) == 1:
            _owner[short] = infos[0].qualified_name
        else:
            _contested[short] = sorted(i.qualified_name for i in infos)
            warnings.warn(
                f"tlkit: packages {', '.join(i.provider for i in infos)} all declare a strategy "
                f"'{short}'; select one by its qualified name ({', '.join(_contested[short])}).",
                RuntimeWarning,
                stacklevel=3,
            )
    for info in _installed.values():  # the name that selects it
        if _owner.get(info.short_name) != info.qualified_name:
            info.name = info.qualified_name


def _warn_if_renamed(obj: Any, ep: Any, provider: str) -> None:
    """An entry point selects its strategy by the entry point's name; a class calling itself
    otherwise would show one name in tables and errors and answer to another."""
    own = getattr(obj, "name", None)
    if isinstance(own, str) and own and own != ep.name:
        warnings.warn(
            f"tlkit: package '{provider}' installs a strategy as '{ep.name}' ({ep.value}), but it "
            f"names itself '{own}'; it is selected as '{ep.name}'. Make the entry-point name and "
            "the class's `name` the same.",
            RuntimeWarning,
            stacklevel=4,
        )


def register(obj: Any = None, *, name: str | None = None, family: str | None = None) -> Any:
    """Make a strategy available by name for this session; usable as a class decorator.

    ``obj`` is a class (instantiated per run), an instance or a module with ``@tlkit.hookimpl``
    methods. Registering a name again replaces this session's earlier registration, so
    re-running a notebook cell just updates the strategy; a name that an installed strategy owns
    is refused (pick another one).
    """
    if obj is None:
        return lambda o: register(o, name=name, family=family)
    _load_entry_points()
    info = _describe(obj, name=name, family=family, provider=SESSION)
    owner = _owner.get(info.name)
    if owner is not None and not owner.startswith(f"{SESSION}:"):
        taken = _installed[owner]
        if taken.obj is obj:  # the installed strategy itself: a package's own test fixture
            _adopted[info.name] = owner
            return obj
        raise PluginError(
            f"the name '{info.name}' belongs to the {taken.family} strategy from package "
            f"'{taken.provider}'; register yours under another name (tlkit.register(..., "
            f"name='my_{info.name}'))."
        )
    if info.name in _contested:
        raise PluginError(
            f"the name '{info.name}' is declared by {', '.join(_contested[info.name])}; register "
            "yours under another name."
        )
    _installed[info.qualified_name] = info
    _owner[info.name] = info.qualified_name
    return obj


def unregister(name: str) -> None:
    """Forget a strategy registered in this session (installed ones cannot be removed)."""
    _load_entry_points()
    if _adopted.pop(name, None) is not None:  # registered again, still installed
        return
    qualified = name if ":" in name else _owner.get(name)
    if qualified is None or qualified not in _installed:
        return
    if not qualified.startswith(f"{SESSION}:"):
        raise PluginError(
            f"'{name}' is installed from package '{_installed[qualified].provider}', not "
            "registered in this session, so it cannot be unregistered (uninstall the package)."
        )
    _installed.pop(qualified, None)
    short = qualified.split(":", 1)[1]
    if _owner.get(short) == qualified:
        del _owner[short]


def strategies(family: str | None = None) -> StrategyTable:
    """The installed strategies as a table, optionally of one family."""
    _load_entry_points()
    items = sorted(_installed.values(), key=lambda s: (s.family, s.name, s.provider))
    return StrategyTable(s for s in items if family is None or s.family == family)


def get(name: str, family: str | None = None) -> StrategyInfo:
    """Look a strategy up by short or qualified name; every failure says what to do."""
    _load_entry_points()
    if not isinstance(name, str):
        raise PluginError(f"a strategy is selected by its name (a string), got {name!r}.")
    qualified = name if ":" in name else _owner.get(name)
    info = _installed.get(qualified) if qualified else None
    if info is None:
        if name in _contested:
            raise UnknownStrategyError(
                f"the strategy name '{name}' is declared by several packages; select one of "
                f"{', '.join(_contested[name])}."
            )
        short = name.split(":", 1)[-1]
        if short in _broken:
            raise UnknownStrategyError(
                f"strategy '{name}' is installed but failed to import: {_broken[short]}. Fix or "
                "reinstall that package."
            )
        known = [_selectable_name(s) for s in strategies(family)]
        what = f"{family} strategy" if family else "strategy"
        raise UnknownStrategyError(
            f"unknown {what} '{name}'. Known: {', '.join(known) or '(none installed)'}. "
            "Install a plugin package or tlkit.register(...) one in this session."
        )
    if family is not None and info.family != family:
        raise PluginError(
            f"'{name}' is a {info.family} strategy, not a {family} one, so it cannot be passed "
            f"as {FAMILIES[family]}=. Pass it as {FAMILIES[info.family]}='{name}'."
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
    if not isinstance(value, (tuple, list)):
        raise PluginError(
            f"a strategy selection is a name, (name, {{options}}) or a list of those; got {value!r}."
        )
    out: list[tuple[str, dict[str, Any]]] = []
    for item in value:
        out.extend(normalize_selection(item))
    return out


class PluginName(str):
    """The name a plugin is registered under in a run's plugin manager, with what it is.

    pluggy keys plugins by a unique string, which is this object; messages read :attr:`role` and
    :attr:`label` (:meth:`describe`) instead of taking the string apart. A strategy's is its run
    name; an observer's is made unique by its position (two observers may share a label)."""

    role: str  # "strategy" or "observer"
    label: str  # what messages call it

    def __new__(cls, key: str, *, role: str, label: str) -> PluginName:
        name = super().__new__(cls, key)
        name.role, name.label = role, label
        return name

    def describe(self) -> str:
        """``strategy 'dann'`` / ``observer 'LiveCurves'``: who a message is about."""
        return f"{self.role} '{self.label}'"


def make_plugin_manager(
    selected: Iterable[tuple[StrategyInfo, dict[str, Any]]], observers: Iterable[Any] = ()
) -> pluggy.PluginManager:
    """A fresh manager with a run's strategies (created with their options) and its observers,
    each registered under a :class:`PluginName`; ``pm.get_plugin(info.name)`` returns a
    strategy's object."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for info, options in selected:
        name = run_name(info)
        pm.register(info.create(**options), name=PluginName(name, role="strategy", label=name))
    for i, observer in enumerate(observers):
        name = getattr(observer, "name", None) or type(observer).__name__
        try:
            impls = check_hooks(observer, name)
        except PluginError as exc:
            raise PluginError(str(exc).replace("strategy", "observer", 1)) from None
        strategy_hooks = [h for h in impls if h not in OBSERVER_HOOKS]
        if strategy_hooks:
            raise PluginError(
                f"observer '{name}' implements {strategy_hooks}: observers watch training "
                f"({', '.join(OBSERVER_HOOKS)}); a hook that changes it belongs to a strategy "
                "(tlkit.register it and select it by name)."
            )
        pm.register(observer, name=PluginName(f"observer-{i}-{name}", role="observer", label=name))
    return pm


def run_name(info: StrategyInfo) -> str:
    """The name a strategy goes by in a run (history, checkpoints, errors): its short name, or
    ``provider:name`` when another strategy owns the short one."""
    return _selectable_name(info)
