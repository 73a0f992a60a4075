"""Open the built book in a real browser with the network cut off, and check that it renders.

Every page of ``_build/html`` is loaded from disk in Debian's Chromium (through Playwright) while
every request that is not a local file is blocked and recorded. A page passes when

* it made no network request and every local file it asked for exists;
* its maths was typeset by the vendored MathJax (pages with ``class="math..."`` elements);
* its stored widgets were rendered by the vendored ipywidgets renderer (pages with widget views);
* every image loaded, no display equation is wider than the text column, and no widget
  button's label is cut;
* no script failed: an uncaught exception (``pageerror``) or a ``console.error`` message fails
  the page, since a broken script usually means a feature of the page silently does not work.

    python book/check_offline.py                       # after `jupyter-book build .`
    python book/check_offline.py --screenshots shots/  # and keep a full-page PNG of each page

Needs ``pip install playwright`` and ``apt-get install chromium`` (Playwright's own browser
download is not used). Exits 1 when a page fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ("file:", "data:", "blob:", "about:")


def check_page(browser, path: Path, html_root: Path, screenshots: Path | None) -> dict:
    html = path.read_text(encoding="utf-8")
    wants_math = 'class="math' in html
    wants_widgets = "application/vnd.jupyter.widget-view+json" in html
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    blocked: list[str] = []
    missing: list[str] = []
    errors: list[str] = []

    def route(r):
        if r.request.url.startswith(LOCAL):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("requestfailed", lambda req: req.url.startswith("file:") and missing.append(req.url))
    page.on("pageerror", lambda exc: errors.append(f"uncaught {exc.name}: {exc.message}"[:200]))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text[:200]))
    page.goto(path.as_uri(), wait_until="load")
    if wants_math:
        page.wait_for_function(
            "document.querySelectorAll('mjx-container').length > 0", timeout=30_000
        )
    if wants_widgets:
        page.wait_for_function(
            "document.querySelectorAll('.jupyter-widgets').length > 0", timeout=30_000
        )
    page.wait_for_timeout(1500)  # late fonts and images
    found = page.evaluate(
        """() => ({
            math: document.querySelectorAll('mjx-container').length,
            widgets: document.querySelectorAll('.jupyter-widgets').length,
            broken_images: [...document.images].filter(i => !i.complete || !i.naturalWidth)
                .map(i => i.src.slice(0, 80)),
            // widget buttons whose label is cut ("0..." for "0", "Accept confid...")
            cut_buttons: [...document.querySelectorAll('.jupyter-widgets button')]
                .filter(b => b.offsetParent !== null && b.scrollWidth > b.clientWidth + 1)
                .map(b => b.textContent.trim().slice(0, 30)),
            // display equations wider than the text column (cut off, or a scrollbar to read them)
            wide_math: [...document.querySelectorAll('mjx-container[display="true"]')]
                .filter(c => {
                    const inner = c.querySelector('mjx-math');
                    const width = inner ? inner.getBoundingClientRect().width : 0;
                    return Math.max(width, c.scrollWidth) > c.clientWidth + 2;
                })
                .map(c => (c.getAttribute('aria-label') || c.textContent || '').slice(0, 60)),
        })"""
    )
    if screenshots is not None:
        name = path.relative_to(html_root).as_posix().replace("/", "_").removesuffix(".html")
        page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
    context.close()
    problems = []
    if blocked:
        problems.append(f"network requests: {blocked[:3]}")
    if missing:
        problems.append(f"missing local files: {missing[:3]}")
    if wants_math and not found["math"]:
        problems.append("maths not typeset")
    if wants_widgets and not found["widgets"]:
        problems.append("widgets not rendered")
    if found["broken_images"]:
        problems.append(f"broken images: {found['broken_images'][:3]}")
    if found["cut_buttons"]:
        problems.append(f"widget buttons with cut labels: {found['cut_buttons'][:5]}")
    if found["wide_math"]:
        problems.append(f"equations wider than the column: {found['wide_math'][:3]}")
    if errors:
        problems.append(f"script errors: {errors[:3]}")
    return {"math": found["math"], "widgets": found["widgets"], "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--screenshots", help="folder for one full-page PNG per page")
    parser.add_argument("--browser", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    html_root = Path(args.html).resolve()
    pages = sorted(html_root.glob("index.html")) + sorted(html_root.glob("*/*.html"))
    pages = [p for p in pages if p.parent.name in ("book", "notebooks") or p.name == "index.html"]
    if not pages:
        print(f"no built pages under {html_root}; run `jupyter-book build .` first")
        return 1
    shots = Path(args.screenshots) if args.screenshots else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    report = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=args.browser,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            for path in pages:
                key = path.relative_to(html_root).as_posix()
                try:
                    report[key] = check_page(browser, path, html_root, shots)
                except Exception as exc:  # noqa: BLE001 - one broken page must not hide others
                    report[key] = {"problems": [f"{type(exc).__name__}: {exc}"[:300]]}
        finally:
            browser.close()
    print(json.dumps(report, indent=1))
    failed = [k for k, v in report.items() if v["problems"]]
    print(
        f"{len(report) - len(failed)}/{len(report)} pages render offline"
        + (f"; FAILED: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
