"""The dashboard in a real browser: JupyterLab + Chromium, driven by Python Playwright.

Why: the widget tests click buttons in Python, which proves the handlers but not that the front
end renders the widgets, that clicks reach the kernel while a background thread trains, or that
the live images refresh on screen. This test starts JupyterLab on 127.0.0.1 (a free port, a
token, config dirs in a temp folder, no network), opens ``tests/browser/dashboard.ipynb``, runs
it, clicks Train, waits for the progress and a curve update, clicks Stop, checks in the kernel
that the run stopped early with a best checkpoint, and saves a screenshot to
``$TLKIT_TEST_ARTIFACTS`` (default ``tests/artifacts/``, git-ignored).

It uses the system Chromium (``playwright install`` downloads are not needed); it is skipped only
when no Chromium is installed.
"""

from __future__ import annotations

import json
import os
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
NOTEBOOK = HERE / "browser" / "dashboard.ipynb"
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


@pytest.fixture
def lab(chromium, tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebook; yields (url, folder)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
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
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", root
    finally:
        server.send_signal(signal.SIGTERM)  # Jupyter shuts its kernels down, then exits
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


def run_in_kernel(page, code: str) -> None:
    page.evaluate(
        """async (code) => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            await kernel.requestExecute({code}).done;
        }""",
        code,
    )


@pytest.mark.browser
def test_dashboard_trains_updates_and_stops_in_a_real_browser(chromium, lab):
    from playwright.sync_api import sync_playwright  # a test dependency, like jupyterlab

    url, root = lab
    shot = artifacts_dir() / "browser-dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            drive_dashboard(page, url, root)
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000


def drive_dashboard(page, url: str, root: Path) -> None:
    page.goto(url)
    page.wait_for_function(
        "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
        " && window.jupyterapp.shell.currentWidget.sessionContext"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session"
        " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
        timeout=60_000,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    train = page.get_by_role("button", name="Train")
    train.wait_for(timeout=60_000)
    status = page.locator(".tlkit-status")
    curves = page.locator("img.tlkit-curves")
    train.click()
    wait_for(lambda: "step" in status.inner_text(), 60, "the status line to show steps")
    bar = page.locator(".tlkit-progress .progress-bar")
    wait_for(lambda: _width(bar) > 0, 30, "the progress bar to move")
    first = wait_for(lambda: curves.get_attribute("src"), 30, "the first curve image")
    wait_for(lambda: curves.get_attribute("src") != first, 30, "the curves to redraw")
    wait_for(lambda: "ended" in status.inner_text(), 60, "the first epoch to end")
    page.get_by_role("button", name="Stop").click()
    wait_for(lambda: "stopped" in status.inner_text(), 60, "the run to stop")
    assert "best checkpoint" in status.inner_text()
    run_in_kernel(
        page,
        "import json; dash.wait(30); r = dash.runs[-1]; json.dump({'stopped': r.run.stopped_early, "
        "'epochs': len(r.run.history), 'best': str(r.best_checkpoint), "
        "'alive': dash.running}, open('state.json', 'w'))",
    )
    state = json.loads(wait_for(lambda: _read(root / "state.json"), 30, "the kernel's report"))
    assert state["stopped"] is True and not state["alive"]
    assert 1 <= state["epochs"] < 300 and Path(state["best"]).name == "best.pt"


def _width(bar) -> float:
    style = bar.get_attribute("style") or ""
    for part in style.split(";"):
        key, _, value = part.partition(":")
        if key.strip() == "width":
            return float(value.strip().rstrip("%") or 0)
    return 0.0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() and path.stat().st_size else None
