"""The book's structure: every notebook is in the TOC, executed, asserting; the hook reference
is generated from tlkit.hookspecs and covers every hook. Fast: nothing is executed or built here
(nbval re-runs the notebooks; `jupyter-book build` builds the pages)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

import tlkit
from tlkit import hookspecs

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def hookref():
    """book/_ext/tlkit_hookref.py, the Sphinx extension that generates the hook reference."""
    path = ROOT / "book" / "_ext" / "tlkit_hookref.py"
    spec = importlib.util.spec_from_file_location("tlkit_hookref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


# -- table of contents --------------------------------------------------------------------------
def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6


def test_every_notebook_is_in_the_toc():
    listed = set(toc_files())
    missing = [nb.stem for nb in NOTEBOOKS if f"notebooks/{nb.stem}" not in listed]
    assert not missing, f"add these to _toc.yml: {missing}"


def test_every_toc_entry_exists():
    for entry in toc_files():
        candidates = [ROOT / f"{entry}{suffix}" for suffix in (".md", ".ipynb")]
        assert any(c.exists() for c in candidates), f"_toc.yml lists {entry}, which is missing"


# -- configuration ------------------------------------------------------------------------------
def test_book_renders_stored_outputs_and_fails_on_errors():
    cfg = config()
    assert cfg["execute"]["execute_notebooks"] == "off"  # nbval runs them; the book renders
    assert cfg["only_build_toc_files"] is True
    sphinx = cfg["sphinx"]["config"]
    assert sphinx["nb_execution_raise_on_error"] is True
    assert "intersphinx_mapping" not in sphinx  # would fetch inventories: fails -W offline
    assert "github.com" in cfg["repository"]["url"]


def test_pages_load_no_javascript_from_the_network():
    sphinx = config()["sphinx"]["config"]
    assert sphinx["html_static_path"] == ["book/vendor"]
    assert not sphinx["mathjax_path"].startswith(("http:", "https:", "//"))
    assert sphinx["nb_ipywidgets_js"], "the widget renderer must be configured explicitly"
    for path in sphinx["nb_ipywidgets_js"]:
        assert not path.startswith(("http:", "https:", "//")), path
    assert not (ROOT / "_static").exists(), "JB1 would inject every js/css under _static"
    vendor = importlib.util.spec_from_file_location("vendor", ROOT / "book" / "vendor.py")
    module = importlib.util.module_from_spec(vendor)
    vendor.loader.exec_module(module)
    names = [name for name, _, _ in module.PACKAGES]
    assert names == ["mathjax", "requirejs", "@jupyter-widgets/html-manager"]
    for name, version, integrity in module.PACKAGES:
        assert integrity.startswith("sha512-"), f"{name}@{version} must be pinned by its hash"
    assert module.up_to_date(), "book/vendor/ does not match vendor.PACKAGES: run book/vendor.py"
    assert module.tarball_url("@jupyter-widgets/html-manager", "1.0.15") == (
        "https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.15.tgz"
    )


def test_pages_declare_no_script_twice_and_number_no_lone_table():
    """sphinx_thebe (thebe is off) declared `const THEBE_JS_URL` twice per page, a script error
    on every page; global numfig captioned the hook reference's only table "Table 2"; the widget
    renderer needs MathJax 2's Hub.Queue shim before it loads."""
    cfg = config()
    sphinx = cfg["sphinx"]["config"]
    assert "sphinx_thebe" not in sphinx["extensions"] and cfg["launch_buttons"]["thebe"] is False
    assert "tlkit_hookref" in sphinx["extensions"]  # the list replaces Jupyter Book's defaults
    assert sphinx["numfig"] is False and cfg["latex"]["use_jupyterbook_latex"] is False
    scripts = list(sphinx["nb_ipywidgets_js"])
    assert scripts.index("html-manager/mathjax-hub.js") < scripts.index("html-manager/embed-amd.js")


# -- notebooks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_without_errors(path):
    nb = load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and source(c).strip()]
    assert code, "a notebook without code belongs in book/ as a page"
    counts = [c.get("execution_count") for c in code]
    assert None not in counts, "execute the notebook before committing it (stored outputs)"
    assert counts == sorted(counts), "cells were run out of order; re-run the whole notebook"
    assert any(c.get("outputs") for c in code)
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"stored error output: {errors[0].get('ename')}"
    assert nb["cells"][0]["cell_type"] == "markdown" and source(nb["cells"][0]).startswith("# ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_asserts_its_claims(path):
    code = "\n".join(source(c) for c in load(path)["cells"] if c["cell_type"] == "code")
    assert re.search(r"^\s*assert\b", code, re.M), "check the claims with assert statements"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_compares_its_deterministic_outputs_strictly(path):
    """nbval runs with --nbval-lax: only cells marked NBVAL_CHECK_OUTPUT are compared. Every
    chapter marks at least one (data sizes, tables) and stores the output to compare with."""
    marked = [
        c
        for c in load(path)["cells"]
        if c["cell_type"] == "code" and source(c).startswith("# NBVAL_CHECK_OUTPUT\n")
    ]
    assert marked, "mark a cell whose output does not depend on training with # NBVAL_CHECK_OUTPUT"
    for cell in marked:
        assert cell.get("outputs"), f"{source(cell)[:60]!r} has no stored output to compare"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_are_stable_text(path):
    """No memory addresses in text outputs (they change on every run and break --nbval)."""
    for cell in load(path)["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            text = text if isinstance(text, str) else "".join(text)
            assert not re.search(r" at 0x[0-9a-f]{6,}", text), f"{source(cell)[:60]!r}: {text[:80]}"


def glued_names(nb: dict) -> set[str]:
    """Names a notebook's stored outputs glue (MyST-NB's ``glue``) for its prose."""
    return {
        out.get("metadata", {}).get("scrapbook", {}).get("name")
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
    } - {None}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_states_objectives_and_ends_with_checked_exercises(path):
    """Learning objectives at the top; exercises at the end, each followed by its solution:
    hidden (in the book and in JupyterLab), executed, and checking itself with assert."""
    cells = load(path)["cells"]
    assert "**Learning objectives.**" in source(cells[0]), "state the objectives in the first cell"
    starts = [i for i, c in enumerate(cells) if source(c).startswith("## Exercises")]
    assert starts, "end the chapter with a '## Exercises' section"
    tail = cells[starts[-1] :]
    exercises = [i for i, c in enumerate(tail) if re.match(r"\*\*Exercise \d+\.\*\*", source(c))]
    assert len(exercises) >= 2, "two exercises or more"
    for i in exercises:
        solution = tail[i + 1]
        assert solution["cell_type"] == "code", f"exercise {source(tail[i])[:40]!r} has no solution"
        meta = solution.get("metadata", {})
        assert "hide-cell" in meta.get("tags", []), "hide the solution in the book (hide-cell)"
        assert meta.get("jupyter", {}).get("source_hidden") is True, "and in JupyterLab"
        assert re.search(r"^\s*assert\b", source(solution), re.M), "a solution checks itself"
        assert solution.get("execution_count"), "solutions are executed like every cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_numbers_in_prose_come_from_cells_or_results_files(path):
    """Prose quotes measured numbers through glue (computed in a cell, or read from
    benchmarks/results); a mean ± spread typed into markdown is how numbers went stale."""
    nb = load(path)
    prose = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    typed = re.findall(r"\d[\d.]*\s*%?\s*±\s*\d", prose)
    assert not typed, f"hand-typed mean ± spread in the prose: {typed[:3]}; glue it"
    missing = set(re.findall(r"\{glue:text\}`([\w.-]+?)(?::[^`]*)?`", prose)) - glued_names(nb)
    assert not missing, f"prose quotes {sorted(missing)}, which no cell glues"


# -- generated references ------------------------------------------------------------------------
def test_hook_reference_is_generated_from_hookspecs():
    cfg = config()
    assert cfg["sphinx"]["local_extensions"] == {"tlkit_hookref": "book/_ext"}
    assert "```{tlkit-hooks}" in (ROOT / "book" / "hooks.md").read_text()
    rst = hookref().render_hooks_rst()
    for name in hookspecs.HOOK_NAMES:
        assert f".. autofunction:: tlkit.hookspecs.{name}\n" in rst, name
        assert f":py:func:`{name} <tlkit.hookspecs.{name}>`" in rst, name


def test_hook_reference_entries_match_the_specs():
    entries = {e["name"]: e for e in hookref().hook_entries()}
    assert sorted(entries) == sorted(hookspecs.HOOK_NAMES)
    for name, entry in entries.items():
        spec = getattr(hookspecs, name).tlkit_spec
        assert entry["firstresult"] == bool(spec.get("firstresult")), name
        assert entry["summary"], f"{name} has no docstring"
    lines = [e["line"] for e in hookref().hook_entries()]
    assert lines == sorted(lines)  # in the order the contract defines them


def test_strategy_table_lists_every_installed_strategy():
    assert "```{tlkit-strategies}" in (ROOT / "book" / "strategies.md").read_text()
    rst = hookref().render_strategies_rst()
    for info in tlkit.strategies():
        assert f"   * - ``{info.name}``" in rst
