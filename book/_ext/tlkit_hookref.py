"""Sphinx extension: reference tables generated from the code at build time, so they cannot go stale.

Directives (usable from MyST pages as ```` ```{tlkit-hooks} ```` etc.):

* ``tlkit-hooks`` -- the plugin hook reference: a summary table of every hook in
  ``tlkit.hookspecs.HOOK_NAMES`` (arguments, whether the first result wins, what it is for),
  then each hook's signature and docstring through ``autofunction``, grouped by the section
  comments of ``tlkit/hookspecs.py`` (setup, losses, evaluation, ...), in source order.
* ``tlkit-strategies`` -- the installed strategies (``tlkit.strategies()``), with the ``fit``
  argument that selects each family.

``render_hooks_rst()`` and ``render_strategies_rst()`` return the reStructuredText the directives
insert; ``tests/book/test_book.py`` checks them against ``tlkit.hookspecs`` directly.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from docutils.parsers.rst import Directive

_GROUP = re.compile(r"^# -- (?P<title>[^-].*?) -+$")


def _cell(text: str) -> str:
    """One list-table cell: a single line, with pipes and stars left harmless."""
    return " ".join(str(text).split()) or " "


def hook_entries() -> list[dict[str, Any]]:
    """Every hook of ``tlkit.hookspecs`` in source order, with its group and spec options."""
    from tlkit import hookspecs

    source_lines = inspect.getsource(hookspecs).splitlines()
    groups: list[tuple[int, str]] = []
    for lineno, line in enumerate(source_lines, start=1):
        m = _GROUP.match(line.strip())
        if m:
            groups.append((lineno, m.group("title").strip()))
    entries = []
    for name in hookspecs.HOOK_NAMES:
        fn = getattr(hookspecs, name)
        line = inspect.getsourcelines(fn)[1]
        group = "hooks"
        for start, title in groups:
            if start <= line:
                group = title
        spec = getattr(fn, f"{hookspecs.PROJECT}_spec", {}) or {}
        doc = inspect.getdoc(fn) or ""
        entries.append(
            {
                "name": name,
                "line": line,
                "group": group,
                "firstresult": bool(spec.get("firstresult")),
                "historic": bool(spec.get("historic")),
                "arguments": list(inspect.signature(fn).parameters),
                "summary": doc.strip().split("\n\n")[0],
            }
        )
    entries.sort(key=lambda e: e["line"])
    return entries


def render_hooks_rst() -> str:
    """The hook reference as reStructuredText (summary table + one autofunction per hook)."""
    entries = hook_entries()
    out = [
        ".. list-table:: Every hook, in the order the contract defines them",
        "   :header-rows: 1",
        "   :widths: 22 22 10 46",
        "",
        "   * - hook",
        "     - arguments",
        "     - first result wins",
        "     - what for",
    ]
    for e in entries:
        out += [
            f"   * - :py:func:`{e['name']} <tlkit.hookspecs.{e['name']}>`",
            f"     - {_cell(', '.join(f'``{a}``' for a in e['arguments']))}",
            f"     - {'yes' if e['firstresult'] else 'no'}",
            f"     - {_cell(e['summary'])}",
        ]
    out.append("")
    group = None
    for e in entries:
        if e["group"] != group:
            group = e["group"]
            out += [f".. rubric:: {group.capitalize()}", ""]
        out += [f".. autofunction:: tlkit.hookspecs.{e['name']}", ""]
    return "\n".join(out) + "\n"


def render_strategies_rst() -> str:
    """The installed strategies (name, family, ``fit`` argument, summary, provider) as a table."""
    import tlkit
    from tlkit.registry import FAMILIES

    out = [
        ".. list-table:: Installed strategies (``tlkit.strategies()`` when this book was built)",
        "   :header-rows: 1",
        "   :widths: 16 12 14 46 12",
        "",
        "   * - name",
        "     - family",
        "     - selected by",
        "     - summary",
        "     - provider",
    ]
    for s in tlkit.strategies():
        out += [
            f"   * - ``{s.name}``",
            f"     - {_cell(s.family)}",
            f"     - ``{FAMILIES[s.family]}=``",
            f"     - {_cell(s.summary)}",
            f"     - {_cell(s.provider)}",
        ]
    return "\n".join(out) + "\n"


class _Generated(Directive):
    """Parse generated reStructuredText in place -- also inside a MyST page, where a plain
    ``nested_parse`` would read it as Markdown (this is what MyST's ``{eval-rst}`` does)."""

    has_content = False
    render = staticmethod(lambda: "")

    def run(self):  # noqa: D102 - docutils API
        from docutils.parsers.rst import Parser
        from docutils.utils import new_document

        document = self.state.document
        newdoc = new_document(document.get("source", "<tlkit_hookref>"), document.settings)
        newdoc.reporter = document.reporter
        Parser().parse(self.render(), newdoc)
        for node in newdoc.children:
            if node.get("names"):
                document.note_explicit_target(node, node)
        return list(newdoc.children)


class HooksDirective(_Generated):
    render = staticmethod(render_hooks_rst)


class StrategiesDirective(_Generated):
    render = staticmethod(render_strategies_rst)


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.add_directive("tlkit-hooks", HooksDirective)
    app.add_directive("tlkit-strategies", StrategiesDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
