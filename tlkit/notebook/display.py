"""Rich display of a finished run: its summary table *and* its learning curves, as one HTML block.

Why: a bare ``run`` at the end of a cell is the most common way people look at a result. The
summary table alone hides whether training converged; the curves answer that at a glance. The
PNG is embedded as a ``data:`` URI so the HTML is self-contained: it survives saving the notebook,
nbconvert, the static book, and needs no JavaScript or network.

``tlkit.Run._repr_html_`` can delegate here (``return run_html(self)``); this module therefore
builds the table itself instead of calling ``run._repr_html_()``.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from tlkit.notebook.live import figure_png


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src=...>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def curves_png(run: Any, dpi: int = 72) -> bytes | None:
    """``run.plot()`` as PNG bytes (the pyplot figure is closed), or ``None`` without history."""
    if not getattr(run, "history", None):
        return None
    import matplotlib.pyplot as plt

    fig = run.plot()
    try:
        return figure_png(fig, dpi)
    finally:
        plt.close(fig)


def summary_table(run: Any) -> str:
    """The run's summary rows (backbone, epochs, last metrics, best) as an HTML table."""
    rows = "".join(
        f"<tr><th style='text-align:left'>{escape(k)}</th><td>{escape(v)}</td></tr>"
        for k, v in run._summary_rows()
    )
    return f"<table><caption>tlkit run: {escape(run._title())}</caption>{rows}</table>"


def run_html(run: Any, *, curves: bool = True) -> str:
    """Summary table next to the learning curves (when the run has a history)."""
    table = summary_table(run)
    png = curves_png(run) if curves else None
    if png is None:
        return table
    img = f"<img alt='learning curves' style='max-width:100%' src='{png_data_uri(png)}'/>"
    return (
        "<div style='display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start'>"
        f"<div>{table}</div><div>{img}</div></div>"
    )


__all__ = ["curves_png", "png_data_uri", "run_html", "summary_table"]
