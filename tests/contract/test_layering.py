"""The engine's layering: no import cycle among tlkit's modules (imports inside functions and
under TYPE_CHECKING count too), and no module imports a layer above it:

    errors/trainer_view/options/hookspecs/step -> registry -> engine -> run -> api -> notebook / cli

Importing ``a.b.c`` runs the package ``a.b``'s ``__init__`` first, so an import also depends on the
packages above the imported module (other than the importer's own): ``run`` importing
``tlkit.engine.checkpoint`` executes ``tlkit/engine/__init__.py``, and through it the trainer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tlkit

ROOT = Path(tlkit.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """``module -> tlkit modules it imports`` (resolved to the longest existing module name)."""
    files = {}
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        files[".".join(parts)] = f
    graph = {m: set() for m in files}
    for module, f in files.items():
        package = module if f.name == "__init__.py" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in files:
                    name = name.rsplit(".", 1)[0] if "." in name else ""
                while name:  # the module, then the packages whose __init__ runs first
                    if name != module and not module.startswith(name + "."):
                        graph[module].add(name)
                    name = name.rsplit(".", 1)[0] if "." in name else ""
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LOWER_MUST_NOT_IMPORT = {
    # module (or package prefix): what it must never import
    "tlkit.errors": ("tlkit.",),
    "tlkit.trainer_view": ("tlkit.",),  # the trainer's type: step and hookspecs both name it
    "tlkit.options": ("tlkit.registry", "tlkit.engine", "tlkit.run", "tlkit.api", "tlkit.notebook"),
    "tlkit.hookspecs": ("tlkit.registry", "tlkit.engine.trainer", "tlkit.run", "tlkit.api"),
    "tlkit.step": ("tlkit.registry", "tlkit.engine.trainer", "tlkit.run", "tlkit.api"),
    "tlkit.registry": ("tlkit.engine", "tlkit.run", "tlkit.api", "tlkit.notebook"),
    "tlkit.datasets": (
        "tlkit.engine",
        "tlkit.run",
        "tlkit.api",
        "tlkit.notebook",
        "tlkit.registry",
    ),
    "tlkit.backbones": (
        "tlkit.engine",
        "tlkit.run",
        "tlkit.api",
        "tlkit.notebook",
        "tlkit.registry",
    ),
    "tlkit.engine": ("tlkit.run", "tlkit.api", "tlkit.notebook", "tlkit.cli"),
    "tlkit.run": ("tlkit.api", "tlkit.engine.trainer", "tlkit.notebook", "tlkit.cli"),
}


@pytest.mark.parametrize("layer", sorted(LOWER_MUST_NOT_IMPORT))
def test_no_module_imports_a_layer_above_it(layer):
    graph = import_graph()
    banned = LOWER_MUST_NOT_IMPORT[layer]
    wrong = {
        (module, target)
        for module, targets in graph.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if any(
            target == b.rstrip(".")
            or target.startswith(b if b.endswith(".") else b + ".")
            or target == b
            for b in banned
        )
        and not target.startswith(layer)
    }
    assert not wrong, f"{layer} imports a layer above it: {sorted(wrong)}"


# -- the plugin boundary ----------------------------------------------------------------------
# Plugins (first-party included) use tlkit's public surface only: no tlkit.engine, no private
# (underscore) module or name of tlkit; tlkit never imports a plugin package.

PLUGINS = ROOT.parent / "plugins"
PLUGIN_PACKAGES = ("tlkit_strategies", "tlkit_example_plugin")


def imported_names(source: str) -> list[tuple[int, str]]:
    """``[(line, dotted name)]`` of every import in ``source`` (``from a import b`` gives
    ``a.b``), inside functions and under TYPE_CHECKING too."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def plugin_violations(source: str) -> list[tuple[int, str]]:
    """Imports of a plugin module that reach past tlkit's public surface."""
    wrong = []
    for line, name in imported_names(source):
        parts = name.split(".")
        if parts[0] != "tlkit":
            continue
        if parts[:2] == ["tlkit", "engine"] or any(p.startswith("_") for p in parts[1:]):
            wrong.append((line, name))
    return wrong


def core_violations(source: str) -> list[tuple[int, str]]:
    """Imports of a tlkit module that reach into a plugin package."""
    return [(line, n) for line, n in imported_names(source) if n.split(".")[0] in PLUGIN_PACKAGES]


def test_the_plugin_boundary_checks_find_what_they_should():
    source = (
        "import tlkit\nfrom tlkit import options, _secret\nfrom tlkit.engine.ema import EMA\n"
        "import tlkit.engine\nfrom tlkit.strategy_tools import EMA\n"
        "def f():\n    from tlkit.datasets._files import x\n"
        "from tlkit_strategies.adapt._grl import GRL\n"
    )
    assert [line for line, _ in plugin_violations(source)] == [2, 3, 4, 7]
    core = "import torch\ndef g():\n    from tlkit_strategies.adapt import fda\n"
    assert core_violations(core) == [(3, "tlkit_strategies.adapt.fda")]


def test_plugins_use_only_the_public_surface():
    files = sorted(PLUGINS.rglob("*.py"))
    assert any(f.name == "dsbn.py" for f in files)  # the walk reaches the first-party strategies
    wrong = [
        f"{f.relative_to(ROOT.parent)}:{line}: {name}"
        for f in files
        for line, name in plugin_violations(f.read_text())
    ]
    assert not wrong, "plugins import tlkit.engine or a private tlkit module:\n" + "\n".join(wrong)


def test_tlkit_never_imports_a_plugin_package():
    wrong = [
        f"{f.relative_to(ROOT.parent)}:{line}: {name}"
        for f in sorted(ROOT.rglob("*.py"))
        for line, name in core_violations(f.read_text())
    ]
    assert not wrong, "tlkit imports the plugin package:\n" + "\n".join(wrong)
