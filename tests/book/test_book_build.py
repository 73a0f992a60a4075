"""The book builds from a clean output folder with warnings as errors, offline, and every page
renders its maths, plots and widgets in Chromium with the network cut off.

The notebooks are not executed here (the book renders their stored outputs; nbval re-runs them:
``pytest notebooks/``). The JavaScript the pages load is committed in ``book/vendor/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser


def toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc["parts"]:
        walk(part["chapters"])
    return pages


def jupyter_book() -> str:
    beside = Path(sys.executable).parent / "jupyter-book"
    found = str(beside) if beside.exists() else shutil.which("jupyter-book")
    if found is None:
        pytest.fail('jupyter-book is not installed: pip install -e ".[dev]"')
    return found


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [jupyter_book(), "build", "-W", "--keep-going", "--path-output", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return out / "_build" / "html"


def test_every_toc_page_is_built(built_book):
    missing = [page for page in toc_pages() if not (built_book / f"{page}.html").exists()]
    assert not missing, missing
    assert (built_book / "index.html").exists()


def test_pages_use_only_vendored_javascript(built_book):
    for page in toc_pages():
        html = (built_book / f"{page}.html").read_text(encoding="utf-8")
        for cdn in ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com"):
            assert f'src="https://{cdn}' not in html, f"{page} loads a script from {cdn}"
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert (built_book / "_static" / "html-manager" / "embed-amd.js").exists()


def test_every_page_renders_offline_in_chromium(built_book, chromium):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "book" / "check_offline.py"),
            "--html",
            str(built_book),
            "--browser",
            chromium,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rendered, total = summary.split(" ", 1)[0].split("/")
    assert rendered == total and int(total) == len(toc_pages()) + 1, summary  # + index.html


def test_check_offline_fails_on_script_errors_wide_equations_and_cut_buttons(tmp_path, chromium):
    """The page check itself can fail: a script error, an equation that does not fit the
    column and a widget button with a cut label are reported, and the exit status says so (the
    real book passes above)."""
    mathjax = (ROOT / "book" / "vendor" / "mathjax" / "tex-chtml.js").as_uri()
    wide = " + ".join(f"x_{{{i}}}^2" for i in range(80))
    (tmp_path / "index.html").write_text(
        f'<html><head><script defer src="{mathjax}"></script></head>'
        f'<body><div class="math" style="width:400px">\\[{wide}\\]</div>'
        '<div class="jupyter-widgets"><button style="width:30px;overflow:hidden;'
        'white-space:nowrap">Accept confident</button></div>'
        "<script>window.notDefinedAnywhere()</script></body></html>"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "book" / "check_offline.py"), "--html", str(tmp_path)]
        + ["--browser", chromium],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert "script errors" in result.stdout and "notDefinedAnywhere" in result.stdout
    assert "equations wider than the column" in result.stdout
    assert "widget buttons with cut labels" in result.stdout and "Accept confident" in result.stdout
    assert "0/1 pages render offline" in result.stdout
