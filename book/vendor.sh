#!/usr/bin/env bash
# Vendor the JavaScript the built book needs, so that pages render maths and widgets offline.
#
# Jupyter Book 1 (Sphinx + MyST-NB) loads MathJax, require.js and the ipywidgets renderer from
# CDNs by default. This script installs pinned copies from npm (the only step that needs the
# network) into book/vendor/ (gitignored), which _config.yml lists in html_static_path and points
# `mathjax_path` and `nb_ipywidgets_js` at. The folder must NOT be named `_static`: Jupyter Book
# injects every .js/.css under a root `_static` folder into every page.
#
#   bash book/vendor.sh            # once per checkout (CI runs it before `jupyter-book build`)
set -euo pipefail
cd "$(dirname "$0")"

MATHJAX=mathjax@3.2.2
REQUIREJS=requirejs@2.3.7
HTML_MANAGER=@jupyter-widgets/html-manager@1.0.15   # the renderer for ipywidgets 8

dest=vendor
if [ -f "$dest/VERSIONS" ] && [ "$(cat "$dest/VERSIONS")" = "$MATHJAX $REQUIREJS $HTML_MANAGER" ] \
    && [ -f "$dest/html-manager/assets-path.js" ]; then
    echo "book/vendor is up to date ($(cat "$dest/VERSIONS"))"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --prefix "$tmp" --no-audit --no-fund --no-save --loglevel=error \
    "$MATHJAX" "$REQUIREJS" "$HTML_MANAGER" >/dev/null

rm -rf "$dest"
mkdir -p "$dest/html-manager"
# MathJax 3: the whole es5 tree (tex-chtml.js loads its fonts and extensions relative to itself).
cp -r "$tmp/node_modules/mathjax/es5" "$dest/mathjax"
cp "$tmp/node_modules/requirejs/require.js" "$dest/require.js"
# embed-amd.js bundles @jupyter-widgets/base and controls (nothing is fetched for built-in
# widgets); the icon fonts beside it are loaded relative to it.
cp -r "$tmp/node_modules/@jupyter-widgets/html-manager/dist/." "$dest/html-manager/"
rm -f "$dest"/html-manager/embed.js* "$dest"/html-manager/libembed-amd.js  # unused bundles, maps
# The renderer resolves its icon fonts relative to the URLs that require.js gives its AMD modules
# ("@jupyter-widgets/..."), which by default are relative to the page and do not exist. This
# script, loaded before require.js, maps those module names to the folder it lives in.
cat > "$dest/html-manager/assets-path.js" <<'JS'
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");  // .../_static/html-manager/
  var dir = here.replace(/\/$/, "");
  window.__jupyter_widgets_assets_path__ = here;
  window.require = { paths: { "@jupyter-widgets/html-manager/dist": dir, "@jupyter-widgets": dir } };
})();
JS
echo "$MATHJAX $REQUIREJS $HTML_MANAGER" > "$dest/VERSIONS"
du -sh "$dest"
