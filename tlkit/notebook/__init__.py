"""The notebook layer: %tlkit magics, the training dashboard, live plots, the annotation assistant.

The names below are imported on first use, so ``import tlkit.notebook`` (or ``tlkit.widgets``)
stays cheap and ipywidgets is only needed by the widgets themselves:

* :class:`Dashboard` (``tlkit.dashboard()``) -- train, watch, stop and compare runs;
* :class:`ActiveLearner` / :class:`AnnotationAssistant` -- label the samples the model is least
  sure of, retrain, and follow the learning curve (``tlkit.notebook.annotate.annotate(task)``
  builds both);
* :class:`LiveCurves` -- an observer drawing live curves into a widget or a cell output;
* :func:`run_html` -- a run's summary with its learning curves, as self-contained HTML.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Dashboard": "tlkit.notebook.dashboard",
    "ActiveLearner": "tlkit.notebook.annotate",
    "AnnotationAssistant": "tlkit.notebook.annotate",
    "LiveCurves": "tlkit.notebook.live",
    "run_html": "tlkit.notebook.display",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tlkit.notebook' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = list(_EXPORTS)
