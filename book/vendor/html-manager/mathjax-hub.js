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
