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

ROOT = Path(__file__).resolve().parents[2]
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


CHAPTERS = [p for p in NOTEBOOKS if re.match(r"\d\d[a-z]?_", p.name)]  # 06b follows 06


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_states_objectives_and_ends_with_checked_exercises(path):
    """Learning objectives at the top; at the end, three exercises or more, each a statement, a
    stub the student fills in (``answer = ...``) and a cell calling ``tlkit.exercises.check``
    with an id the module knows. No solution in the notebook: it shows only when asked for."""
    import tlkit.exercises

    known = tlkit.exercises.list()
    cells = load(path)["cells"]
    assert "**Learning objectives.**" in source(cells[0]), "state the objectives in the first cell"
    starts = [i for i, c in enumerate(cells) if source(c).startswith("## Exercises")]
    assert starts, "end the chapter with a '## Exercises' section"
    tail = cells[starts[-1] :]
    statements = [i for i, c in enumerate(tail) if re.match(r"\*\*Exercise (\d+[a-z]?|S)\.\d+", source(c))]
    assert len(statements) >= 3, "three exercises or more"
    ids = []
    for i in statements:
        stub, call = tail[i + 1], tail[i + 2]
        assert stub["cell_type"] == "code" and re.search(r"^answer = \.\.\.", source(stub), re.M), (
            f"{source(tail[i])[:40]!r}: follow the statement with a stub cell `answer = ...`"
        )
        match = re.match(r'tlkit\.exercises\.check\("([^"]+)", answer\b', source(call))
        assert call["cell_type"] == "code" and match, f"{source(tail[i])[:40]!r}: add a check cell"
        assert match.group(1) in known, f"tlkit.exercises.list() has no exercise {match.group(1)!r}"
        ids.append(match.group(1))
        assert not stub.get("outputs"), f"{match.group(1)}: the stub stores no output"
        for out in call.get("outputs", []):  # an executed, unfilled stub: "not attempted yet"
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            text = text if isinstance(text, str) else "".join(text)
            assert "not attempted yet" in text, f"{match.group(1)}: stored answer {text[:60]!r}"
    assert len(set(ids)) == len(ids), f"an exercise is checked twice: {ids}"
    code = "\n".join(source(c) for c in tail if c["cell_type"] == "code")
    for exercise_id in ids:
        first = tlkit.exercises.solution(exercise_id).splitlines()[0]
        assert first not in code, f"the solution of {exercise_id} is in the notebook"
    assert "tlkit.exercises.solution(" in source(tail[-1]), "say how to see a solution"


PROSE_CELL = re.compile(r'^prose\(r"""\n(.*)\n"""\)\s*$', re.S)


def prose_cells(nb: dict) -> list[tuple[int, str]]:
    """(index, text) of each cell that displays prose with numbers (``tlkit.book.prose``)."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        match = PROSE_CELL.match(source(cell)) if cell["cell_type"] == "code" else None
        if match:
            found.append((i, match.group(1)))
    return found


def quoted_before(nb: dict, index: int) -> list[re.Pattern]:
    """Names the code cells above ``index`` pass to ``quote()``; an f-string name such as
    ``f"bench_{key}_mean"`` becomes the pattern ``bench_.+_mean``."""
    patterns = []
    for cell in nb["cells"][:index]:
        if cell["cell_type"] != "code":
            continue
        for is_f, name in re.findall(r'quote\(\s*(f?)"([^"]+)"', source(cell)):
            body = re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(name)) if is_f else re.escape(name)
            patterns.append(re.compile(body + "$"))
    return patterns


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_renders_the_same_in_every_front_end(path):
    """No MyST-NB glue anywhere: JupyterLab, VS Code and Colab show ``{glue:text}`` raw. Numbers
    reach the prose through ``tlkit.book.prose`` cells, whose code is hidden in JupyterLab and
    removed in the book, and whose stored output is the rendered Markdown."""
    nb = load(path)
    for cell in nb["cells"]:
        assert "{glue" not in source(cell), f"{path.name}: glue in {source(cell)[:60]!r}"
    for i, _text in prose_cells(nb):
        meta = nb["cells"][i].get("metadata", {})
        assert "remove-input" in meta.get("tags", []), f"{path.name} cell {i}: tag remove-input"
        assert meta.get("jupyter", {}).get("source_hidden") is True, f"{path.name} cell {i}"
        shown = [o for o in nb["cells"][i].get("outputs", []) if "text/markdown" in o.get("data", {})]
        assert len(shown) == 1, f"{path.name} cell {i}: re-execute the chapter to store its prose"
        rendered = shown[0]["data"]["text/markdown"]
        rendered = rendered if isinstance(rendered, str) else "".join(rendered)
        assert not re.search(r"\{[A-Za-z_][\w.]*:[^{}\s]*\}", rendered), f"{path.name} cell {i}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_numbers_in_prose_come_from_cells_or_results_files(path):
    """Prose quotes measured numbers it was handed by ``quote()`` in a cell above (computed
    there, or read from the shipped benchmark results); a mean ± spread typed into markdown is
    how numbers went stale."""
    nb = load(path)
    markdown = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    typed = re.findall(r"\d[\d.]*\s*%?\s*±\s*\d", markdown + "".join(t for _, t in prose_cells(nb)))
    assert not typed, f"hand-typed mean ± spread in the prose: {typed[:3]}; quote() it"
    for i, text in prose_cells(nb):
        names = set(re.findall(r"\{([A-Za-z_][\w.]*):[^{}\s]*\}", text))
        known = quoted_before(nb, i)
        missing = sorted(n for n in names if not any(p.match(n) for p in known))
        assert not missing, f"{path.name} cell {i} quotes {missing}, which no cell above quote()s"


def test_shipped_results_match_the_benchmarks():
    """tlkit.book reads the copies the package ships; they are the benchmarks' results files."""
    from tlkit.book import RESULTS

    shipped = sorted(RESULTS.glob("*.md"))
    assert shipped
    for path in shipped:
        assert path.read_text() == (ROOT / "benchmarks" / "results" / path.name).read_text(), (
            f"{path.name}: copy benchmarks/results/{path.name} to tlkit/book_results/"
        )


def test_prose_fills_quoted_numbers_and_names_a_missing_one():
    from tlkit import book

    assert book.fill(r"{a:.1f}% and $\mathcal{S}$", {"a": 47.06}) == r"47.1% and $\mathcal{S}$"
    with pytest.raises(KeyError, match="no cell above"):
        book.fill("{missing:.0f}", {})
    assert book.within_seeds(50.0, [47.1, 42.6, 22.3], margin=5) is True
    assert book.within_seeds(60.0, [47.1, 42.6, 22.3], margin=5) is False


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
