"""Vendor the JavaScript the built book needs, so that its pages render maths and widgets offline.

Jupyter Book 1 (Sphinx + MyST-NB) loads MathJax, require.js and the ipywidgets renderer from CDNs
by default. ``book/vendor/`` holds pinned copies instead -- committed, so that building the book
(and CI) never needs the network -- and ``_config.yml`` lists it in ``html_static_path`` and
points ``mathjax_path`` and ``nb_ipywidgets_js`` at it. The folder must NOT be named
``_static``: Jupyter Book injects every .js/.css under a root ``_static`` folder into every page.

This script re-creates the folder from the npm registry (the tarballs, checked against their
sha512 integrity; no ``npm`` needed), keeping only what pages load (about 7 MB of 30): run it
after changing a version below, then rebuild the book and run ``book/check_offline.py``.

    python book/vendor.py            # re-vendor when PACKAGES changes (needs the network)
    python book/vendor.py --check    # exit 1 unless book/vendor matches PACKAGES

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

# The widget renderer typesets widget descriptions with MathJax 2's API, `MathJax.Hub.Queue(...)`,
# whenever `window.MathJax` exists; the book loads MathJax 3, which has no `Hub`, so every
# described widget threw "Cannot read properties of undefined (reading 'Queue')". This script,
# loaded before the renderer, gives each MathJax object the page gets a `Hub.Queue` that hands the
# element to MathJax 3's `typesetPromise` once MathJax is ready.
MATHJAX_HUB_JS = """\
(function () {
  function withHub(mj) {
    if (mj && typeof mj === "object" && mj.version && !mj.Hub) {
      mj.Hub = {
        Queue: function (job) {
          var element = Array.isArray(job) ? job[2] : undefined;
          var ready = (mj.startup && mj.startup.promise) || Promise.resolve();
          ready.then(function () {
            if (mj.typesetPromise) return mj.typesetPromise(element ? [element] : undefined);
          }).catch(function (err) { console.warn("MathJax typeset of a widget failed:", err); });
        },
      };
    }
    return mj;
  }
  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    enumerable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });
})();
"""
SHIMS = {
    "html-manager/assets-path.js": ASSETS_PATH_JS,
    "html-manager/mathjax-hub.js": MATHJAX_HUB_JS,
}


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
        and all(
            (DEST / path).exists() and (DEST / path).read_text() == text
            for path, text in SHIMS.items()
        )
    )


# What the pages load, per package (glob patterns relative to the package root), and where it goes.
KEEP = {
    "mathjax": [
        # tex-chtml.js bundles the TeX input and CommonHTML output; it loads its fonts, the TeX
        # extensions it autoloads (e.g. \boldsymbol) and the menu's lazy parts relative to itself.
        ("es5/tex-chtml.js", "mathjax"),
        ("es5/output/chtml/fonts/woff-v2/*", "mathjax/output/chtml/fonts/woff-v2"),
        ("es5/input/tex/extensions/**/*.js", "mathjax/input/tex/extensions"),
        ("es5/ui/*.js", "mathjax/ui"),
        ("es5/a11y/*.js", "mathjax/a11y"),
        ("LICENSE", "mathjax"),
    ],
    "requirejs": [("require.js", ".")],  # its MIT licence is in the file's header
    "@jupyter-widgets/html-manager": [
        # embed-amd.js bundles @jupyter-widgets/base and controls (nothing is fetched for
        # built-in widgets); of its icon fonts, browsers load the woff2 ones.
        ("dist/embed-amd.js", "html-manager"),
        ("dist/*.woff2", "html-manager"),
        ("dist/embed.js.LICENSE.txt", "html-manager"),
    ],
}


def vendor() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp) / "vendor"
        staging.mkdir()
        for name, version, integrity in PACKAGES:
            print(f"  {name}@{version}")
            root = unpack(fetch(name, version, integrity), Path(tmp) / name.replace("/", "_"))
            for pattern, where in KEEP[name]:
                matches = sorted(p for p in root.glob(pattern) if p.is_file())
                if not matches:
                    raise SystemExit(f"{name}@{version} has no {pattern}: update KEEP")
                base = root / pattern.split("*", 1)[0] if "*" in pattern else None
                for path in matches:
                    inner = path.relative_to(base) if base is not None else Path(path.name)
                    target = staging / where / inner
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, target)
        for path, text in SHIMS.items():
            (staging / path).write_text(text)
        (staging / "VERSIONS").write_text(STAMP + "\n")
        # Swap in the complete folder only now: an interrupted run leaves the old one intact.
        if DEST.exists():
            shutil.rmtree(DEST)
        shutil.move(str(staging), DEST)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        if up_to_date():
            print(f"book/vendor matches {STAMP}")
            return 0
        print(f"book/vendor does not match {STAMP}: run python book/vendor.py")
        return 1
    stamp = DEST / "VERSIONS"
    if stamp.exists() and stamp.read_text().strip() == STAMP:
        for path, text in SHIMS.items():  # our own small scripts: no download needed
            (DEST / path).write_text(text)
        print(f"book/vendor is up to date ({STAMP})")
        return 0
    print("vendoring the book's JavaScript into book/vendor/:")
    vendor()
    size = sum(f.stat().st_size for f in DEST.rglob("*") if f.is_file())
    print(f"done: {size / 1e6:.1f} MB ({STAMP})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
