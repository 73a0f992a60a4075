"""The notebook widgets in a real browser: JupyterLab + Chromium, driven by Python Playwright.

Why: the widget tests click buttons in Python, which proves the handlers but not that the front
end renders the widgets, that clicks reach the kernel while a background thread trains, that the
layout holds in a normal window, or what ends up in the saved notebook. One JupyterLab server on
127.0.0.1 (a free port, a token, config dirs in a temp folder, no network) serves both tests:

* the dashboard (``tests/notebook/browser/dashboard.ipynb``) at 1100 px with the file browser open and at
  1600 px: no horizontal scrollbar or cut button inside the form, hints before a run and images at
  their natural size after, Train / live curves / Stop, and the per-epoch table in the notebook
  file JupyterLab saves;
* the annotation assistant (``tests/notebook/browser/annotate.ipynb``): *Ask next* trains in the background
  (the status says so and the kernel answers meanwhile), a label click and *Undo*, a previewed
  bulk accept and its *Undo*.

Screenshots go to ``$TLKIT_TEST_ARTIFACTS`` (default ``tests/notebook/artifacts/``, git-ignored). It uses the
system Chromium (``playwright install`` downloads are not needed); it is skipped only when no
Chromium is installed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE / "browser"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TLKIT_TEST_ARTIFACTS", HERE / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if path == HERE / "artifacts" and not ignore.exists():
        ignore.write_text("*\n")  # screenshots are test output, never committed
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving copies of the notebooks; yields (url, folder)."""
    tmp_path = tmp_path_factory.mktemp("lab")
    root = tmp_path / "root"
    root.mkdir()
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        shutil.copy(notebook, root / notebook.name)
    config = tmp_path / "config"
    (config / "labconfig").mkdir(parents=True)
    disabled = {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
    (config / "labconfig" / "page_config.json").write_text(json.dumps(disabled))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    port, token = free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root"]
    cmd += ["--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    cmd += ["--LabApp.expose_app_in_browser=True"]
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.poll() is None, (tmp_path / "jupyter.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, "JupyterLab to start")
        yield base, token, root
    finally:
        server.send_signal(signal.SIGTERM)  # Jupyter shuts its kernels down, then exits
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


@pytest.fixture
def browser(chromium):
    from playwright.sync_api import sync_playwright  # a test dependency, like jupyterlab

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def open_notebook(browser, lab, name: str, width: int):
    """A page with ``name`` open in JupyterLab (file browser shown) and all its cells run."""
    base, token, _ = lab
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")  # reset: no tabs restored
    page.wait_for_function(
        "(name) => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.context.path === name"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
        arg=name,
        timeout=60_000,
    )
    if page.evaluate("() => window.jupyterapp.shell.leftCollapsed"):
        page.evaluate("() => window.jupyterapp.commands.execute('filebrowser:activate')")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    return page


def run_in_kernel(page, code: str) -> None:
    page.evaluate(
        """async (code) => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            await kernel.requestExecute({code}).done;
        }""",
        code,
    )


def kernel(page, code: str, root: Path, timeout: float = 30) -> dict:
    """Run ``code`` in the page's kernel; it must write a JSON object to ``out.json``."""
    out = root / "out.json"
    out.unlink(missing_ok=True)
    run_in_kernel(page, code)
    return json.loads(wait_for(lambda: _read(out), timeout, "the kernel's answer"))


LAYOUT_PROBLEMS = """(selector) => {
    const root = document.querySelector(selector);
    if (!root) return ['no ' + selector];
    const visible = (el) => el.offsetParent !== null && el.getBoundingClientRect().width > 0;
    const problems = [];
    const edge = root.getBoundingClientRect().right + 1;
    for (const el of root.querySelectorAll('*')) {
        if (!visible(el)) continue;
        const style = getComputedStyle(el);
        const scrolls = ['auto', 'scroll'].includes(style.overflowX);
        if (scrolls && el.scrollWidth > el.clientWidth + 1)
            problems.push('horizontal scrollbar: ' + el.className);
        if (el.tagName === 'BUTTON' && el.scrollWidth > el.clientWidth + 1)
            problems.push('cut button: ' + el.textContent.trim());
        if (['SELECT', 'INPUT', 'BUTTON'].includes(el.tagName) &&
            el.getBoundingClientRect().right > edge)
            problems.push('clipped ' + el.tagName + ': ' + (el.value || el.textContent).trim());
    }
    for (const img of root.querySelectorAll('img')) {
        if (!visible(img)) continue;
        if (!img.naturalWidth) { problems.push('broken image: ' + img.className); continue; }
        const w = img.getBoundingClientRect().width, h = img.getBoundingClientRect().height;
        if (w > img.naturalWidth + 1) problems.push(`stretched image ${img.className}: ${w}px`);
        if (Math.abs(h / w - img.naturalHeight / img.naturalWidth) > 0.02)
            problems.push('distorted image: ' + img.className);
    }
    return problems;
}"""


def natural_size(page, selector: str) -> tuple[float, int]:
    return tuple(
        page.eval_on_selector(
            selector, "img => [img.getBoundingClientRect().width, img.naturalWidth]"
        )
    )


@pytest.mark.browser
def test_dashboard_layout_train_stop_and_saved_epoch_table(browser, lab):
    _, _, root = lab
    page = open_notebook(browser, lab, "dashboard.ipynb", 1100)
    shot = artifacts_dir() / "browser-dashboard-1100.png"
    try:
        train = page.get_by_role("button", name="Train")
        train.wait_for(timeout=60_000)
        assert not page.evaluate("() => window.jupyterapp.shell.leftCollapsed")  # files shown
        assert page.evaluate(LAYOUT_PROBLEMS, ".tlkit-widget") == []  # before a run: hints
        assert page.locator(".tlkit-curves-area").inner_text().startswith("Learning curves")
        status = page.locator(".tlkit-status")
        train.click()
        curves = page.locator("img.tlkit-curves")
        wait_for(lambda: "ETA" in page.locator(".tlkit-progress-text").inner_text(), 60, "an ETA")
        first = wait_for(lambda: curves.get_attribute("src"), 30, "the first curve image")
        wait_for(lambda: curves.get_attribute("src") != first, 30, "the curves to redraw")
        wait_for(lambda: "ended" in status.inner_text(), 60, "the first epoch to end")
        page.get_by_role("button", name="Stop").click()
        wait_for(lambda: "stopped" in status.inner_text(), 60, "the run to stop")
        assert "accuracy=" in status.inner_text() and "tlkit-dash" not in status.inner_text()
        assert page.evaluate(LAYOUT_PROBLEMS, ".tlkit-widget") == []  # images after the run
        page.screenshot(path=str(artifacts_dir() / "browser-dashboard-run.png"), full_page=True)
        # the per-epoch table is a plain output of the cell, in the notebook file saved
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        state = kernel(
            page,
            "import json; dash.wait(30); r = dash.runs[-1]; json.dump({'stopped': "
            "r.run.stopped_early, 'epochs': len(r.run.history), 'best': str(r.best_checkpoint),"
            " 'alive': dash.running}, open('out.json', 'w'))",
            root,
        )
        assert state["stopped"] is True and not state["alive"]
        assert 1 <= state["epochs"] < 300 and Path(state["best"]).name == "best.pt"

        def saved_table() -> str | None:
            cell = json.loads((root / "dashboard.ipynb").read_text())["cells"][0]
            html = ["".join(o.get("data", {}).get("text/html", "")) for o in cell["outputs"]]
            tables = [h for h in html if "tlkit-epochs" in h and "<td>1</td>" in h]
            return tables[0] if tables else None

        table = wait_for(saved_table, 30, "the saved notebook to hold the epoch table")
        assert table.count("<tr>") >= 1 + state["epochs"] and "<th>time</th>" in table
        # a wide window: the same widget, the form on one row, images at their natural size
        page.set_viewport_size({"width": 1600, "height": 1000})
        page.wait_for_timeout(500)
        assert page.evaluate(LAYOUT_PROBLEMS, ".tlkit-widget") == []
        shown, natural = natural_size(page, "img.tlkit-curves")
        assert abs(shown - natural) <= 1, (shown, natural)
        page.screenshot(path=str(artifacts_dir() / "browser-dashboard-1600.png"), full_page=True)
    finally:
        page.screenshot(path=str(shot), full_page=True)  # the last state, also on a failure
        page.close()


FITS = """(args) => {
    // how far the elements run past the bottom of the notebook's visible area, in px
    const [top, bottom] = args;
    const panel = document.querySelector('.jp-WindowedPanel-outer') ||
        document.querySelector('.jp-NotebookPanel-notebook');
    const view = panel.getBoundingClientRect();
    const first = document.querySelector(top).getBoundingClientRect();
    const last = document.querySelector(bottom).getBoundingClientRect();
    return {height: last.bottom - first.top, visible: view.bottom - Math.max(view.top, 0)};
}"""


def scroll_to_top(page, selector: str) -> None:
    page.eval_on_selector(selector, "el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


@pytest.mark.browser
def test_dashboard_fits_1100_by_800_and_reports_typos_and_exports(browser, lab):
    _, _, root = lab
    page = open_notebook(browser, lab, "dashboard.ipynb", 1100)
    page.set_viewport_size({"width": 1100, "height": 800})
    shot = artifacts_dir() / "browser-dashboard-1100x800.png"
    try:
        train = page.get_by_role("button", name="Train")
        train.wait_for(timeout=60_000)
        assert page.evaluate(LAYOUT_PROBLEMS, ".tlkit-widget") == []
        # a typo in a number field is an error naming the field; the text stays to be fixed
        lr = page.locator(".tlkit-field-lr input")
        assert lr.input_value() == "0.003"
        lr.fill("abc")
        lr.press("Tab")
        train.click()
        error = page.locator(".widget-html.tlkit-error")
        wait_for(lambda: error.count() and "lr='abc'" in error.inner_text(), 30, "the lr error")
        assert "is not valid" in error.inner_text() and lr.input_value() == "abc"
        lr.fill("3e-3")
        lr.press("Tab")
        train.click()
        # while training the form folds to one line, so it and the curves share the screen
        curves = page.locator("img.tlkit-curves")
        wait_for(lambda: curves.get_attribute("src"), 60, "the first curve image")
        wait_for(lambda: "ETA" in page.locator(".tlkit-progress-text").inner_text(), 60, "an ETA")
        assert page.locator(".tlkit-field-lr input").is_hidden()  # folded to its title
        scroll_to_top(page, ".tlkit-form")
        fit = page.evaluate(FITS, [".tlkit-form", "img.tlkit-curves"])
        page.screenshot(path=str(artifacts_dir() / "browser-dashboard-800-curves.png"))
        assert fit["height"] <= fit["visible"], fit
        page.get_by_role("button", name="Stop").click()
        status = page.locator(".tlkit-status")
        wait_for(lambda: "stopped" in status.inner_text(), 60, "the run to stop")
        # the compare tab at 1100 px: no sideways scrolling, the export button's label whole
        page.get_by_role("tab", name="compare runs").click()
        wait_for(lambda: page.locator(".tlkit-runs").count(), 30, "the comparison table")
        assert page.evaluate(LAYOUT_PROBLEMS, ".tlkit-widget") == []
        export = page.get_by_role("button", name="Export CSV + PNG")
        clipped = export.evaluate("b => b.scrollWidth > b.clientWidth + 1")
        assert export.inner_text().strip() == "Export CSV + PNG" and not clipped
        page.screenshot(path=str(artifacts_dir() / "browser-dashboard-compare.png"))
        export.click()
        wait_for(lambda: "exported" in status.inner_text(), 30, "the export")
        folder = Path(status.inner_text().split(" to ", 1)[1].strip())
        assert folder.parent.resolve() == root.resolve() and (folder / "histories.csv").is_file()
    finally:
        page.screenshot(path=str(shot), full_page=True)
        page.close()


@pytest.mark.browser
def test_annotation_assistant_trains_in_the_background_and_undoes(browser, lab):
    _, _, root = lab
    page = open_notebook(browser, lab, "annotate.ipynb", 1100)
    shot = artifacts_dir() / "browser-annotate.png"
    try:
        ask = page.get_by_role("button", name="Ask next")
        ask.wait_for(timeout=60_000)
        status = page.locator(".tlkit-annotate-status")
        ask.click()
        wait_for(lambda: "training the first model" in status.inner_text(), 30, "the status")
        # the kernel answers while the model trains in its thread
        start = time.monotonic()
        busy = kernel(
            page, "import json; json.dump({'training': ui.training}, open('out.json', 'w'))", root
        )
        assert busy["training"] is True and time.monotonic() - start < 10
        cards = page.locator(".tlkit-card")
        wait_for(lambda: cards.count() == 8, 120, "the first batch of cards")
        assert "test accuracy" in status.inner_text()
        assert page.evaluate(LAYOUT_PROBLEMS, ".tlkit-annotate-widget") == []
        # the buttons and the eight cards fit one 1100 x 800 screen
        page.set_viewport_size({"width": 1100, "height": 800})
        page.wait_for_timeout(500)
        scroll_to_top(page, ".tlkit-annotate-widget")
        page.screenshot(path=str(artifacts_dir() / "browser-annotate-800.png"))
        fit = page.evaluate(FITS, [".tlkit-annotate-widget", ".tlkit-annotate-grid"])
        assert fit["height"] <= fit["visible"], fit
        assert page.evaluate(LAYOUT_PROBLEMS, ".tlkit-annotate-widget") == []
        first = cards.nth(0)
        first.get_by_role("button", name="3", exact=True).click()
        wait_for(lambda: "✔ 3" in first.inner_text(), 30, "the chosen label on the card")
        # the status is a second widget message after the card's: wait for it, do not race it
        wait_for(lambda: "1 human labels" in status.inner_text(), 30, "the status count")
        page.get_by_role("button", name="Undo").click()
        wait_for(lambda: "0 human labels" in status.inner_text(), 30, "the undo")
        assert "✔" not in first.inner_text()
        # (has_text: the accessible name starts with the icon font's glyph)
        bulk = page.locator("button", has_text=re.compile(r"^\s*Accept \d+\s*$"))
        n = int(bulk.inner_text().split()[-1])
        assert n > 0 and f"label {n} images" in page.locator(".tlkit-annotate-preview").inner_text()
        bulk.click()
        wait_for(lambda: f"{n} accepted" in status.inner_text(), 30, "the bulk accept")
        page.screenshot(path=str(artifacts_dir() / "browser-annotate-bulk.png"), full_page=True)
        page.get_by_role("button", name="Undo").click()
        wait_for(lambda: "0 accepted" in status.inner_text(), 30, "the bulk undo")
        labels = kernel(
            page,
            "import json; json.dump({'human': ui.learner.human_labels, 'accepted': "
            "ui.learner.accepted_labels}, open('out.json', 'w'))",
            root,
        )
        assert labels == {"human": 0, "accepted": 0}
    finally:
        page.screenshot(path=str(shot), full_page=True)  # the last state, also on a failure
        page.close()


def _width(bar) -> float:
    style = bar.get_attribute("style") or ""
    for part in style.split(";"):
        key, _, value = part.partition(":")
        if key.strip() == "width":
            return float(value.strip().rstrip("%") or 0)
    return 0.0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() and path.stat().st_size else None
