(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");  // .../_static/html-manager/
  var dir = here.replace(/\/$/, "");
  window.__jupyter_widgets_assets_path__ = here;
  window.require = { paths: { "@jupyter-widgets/html-manager/dist": dir, "@jupyter-widgets": dir } };
})();
