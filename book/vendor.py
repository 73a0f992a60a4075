"""Vendor the JavaScript the built book needs, so that its pages render maths and widgets offline.

Jupyter Book 1 (Sphinx + MyST-NB) loads MathJax, require.js and the ipywidgets renderer from CDNs
by default. This script downloads pinned npm packages (the tarballs, checked against the
registry's sha512 integrity; no ``npm`` needed) into ``book/vendor/`` (gitignored), which
``_config.yml`` lists in ``html_static_path`` and points ``mathjax_path`` and
``nb_ipywidgets_js`` at. The folder must NOT be named ``_static``: Jupyter Book injects every
.js/.css under a root ``_static`` folder into every page.

    python book/vendor.py          # once per checkout: the only step of the book that needs the network

Standard library only, so it runs before or without the project's virtual environment.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
# (package, version, npm "dist.integrity"): bump all three together.
PACKAGES = [
    (
        "mathjax",
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
    ),
    (
        "requirejs",
        "2.3.7",
        "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
    ),
    (  # the renderer for ipywidgets 8
        "@jupyter-widgets/html-manager",
        "1.0.15",
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
    ),
]
DEST = Path(__file__).resolve().parent / "vendor"
STAMP = " ".join(f"{name}@{version}" for name, version, _ in PACKAGES)

# The renderer resolves its icon fonts relative to the URLs that require.js gives its AMD modules
# ("@jupyter-widgets/..."), which by default are relative to the page and do not exist. This
# script, loaded before require.js, maps those module names to the folder it lives in.
ASSETS_PATH_JS = """\
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");  // .../_static/html-manager/
  var dir = here.replace(/\\/$/, "");
  window.__jupyter_widgets_assets_path__ = here;
  window.require = { paths: { "@jupyter-widgets/html-manager/dist": dir, "@jupyter-widgets": dir } };
})();
"""


def tarball_url(name: str, version: str) -> str:
    return f"{REGISTRY}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"


def fetch(name: str, version: str, integrity: str) -> bytes:
    """Download one package tarball and check it against the pinned sha512."""
    url = tarball_url(name, version)
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
    except OSError as exc:
        raise SystemExit(
            f"could not download {url} ({exc}); the book's JavaScript needs the network once "
            "(or copy a book/vendor/ folder from a machine that has it)"
        ) from exc
    algorithm, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{url}: {algorithm} mismatch (expected {expected}, got {actual})")
    return data


def unpack(data: bytes, into: Path) -> Path:
    """Extract an npm tarball (its files live under ``package/``) and return that folder."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        try:
            archive.extractall(into, filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters; the tarball is pinned
            archive.extractall(into)  # noqa: S202
    return into / "package"


def up_to_date() -> bool:
    stamp = DEST / "VERSIONS"
    return (
        stamp.exists()
        and stamp.read_text().strip() == STAMP
        and (DEST / "html-manager" / "assets-path.js").exists()
    )


def vendor() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "vendor"
        (staging / "html-manager").mkdir(parents=True)
        roots = {}
        for name, version, integrity in PACKAGES:
            print(f"  {name}@{version}")
            roots[name] = unpack(
                fetch(name, version, integrity), Path(tmp) / name.replace("/", "_")
            )
        # MathJax 3: the whole es5 tree (tex-chtml.js loads its fonts and extensions beside it).
        shutil.copytree(roots["mathjax"] / "es5", staging / "mathjax")
        shutil.copy(roots["requirejs"] / "require.js", staging / "require.js")
        # embed-amd.js bundles @jupyter-widgets/base and controls (nothing is fetched for built-in
        # widgets); the icon fonts beside it are loaded relative to it.
        manager = roots["@jupyter-widgets/html-manager"] / "dist"
        for item in manager.iterdir():
            if item.name.startswith(("embed.js", "libembed-amd.js")) or item.suffix == ".map":
                continue  # bundles and source maps the pages never load
            if item.is_file():
                shutil.copy(item, staging / "html-manager" / item.name)
        (staging / "html-manager" / "assets-path.js").write_text(ASSETS_PATH_JS)
        (staging / "VERSIONS").write_text(STAMP + "\n")
        # Swap in the complete folder only now: an interrupted run leaves the old one intact.
        if DEST.exists():
            shutil.rmtree(DEST)
        shutil.move(str(staging), DEST)


def main() -> int:
    if up_to_date():
        print(f"book/vendor is up to date ({STAMP})")
        return 0
    print("vendoring the book's JavaScript into book/vendor/:")
    vendor()
    size = sum(f.stat().st_size for f in DEST.rglob("*") if f.is_file())
    print(f"done: {size / 1e6:.1f} MB ({STAMP})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
