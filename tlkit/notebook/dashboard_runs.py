"""What the dashboard keeps of each run and the HTML tables that show it.

A :class:`RunRecord` is one press of *Train*: the options asked for, the :class:`tlkit.Run` that
came out (or the error), the per-epoch history and timings. The tables are plain HTML (no widget
state), so the per-epoch table below the widget stays in the saved notebook and the comparison
reads the same in the compare tab and in an exported file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from tlkit.notebook import live

#: Table style: borders, no wrapping in numbers; long text cells (labels, folders) may wrap, so
#: the comparison fits a narrow notebook column instead of scrolling sideways.
TABLE_CSS = (
    "<style>.tlkit-table{border-collapse:collapse;font-size:12px;margin:2px 0}"
    ".tlkit-table th,.tlkit-table td{border:1px solid #ccc;padding:2px 6px;white-space:nowrap;"
    "text-align:right}.tlkit-table th{background:#f3f3f3}"
    ".tlkit-table td.l{text-align:left;white-space:normal}"
    ".tlkit-table td.p{text-align:left;white-space:normal;overflow-wrap:anywhere;min-width:6em}"
    ".tlkit-table th{white-space:normal}"
    ".tlkit-table caption{text-align:left;font-weight:bold;padding:2px 0}</style>"
)


def as_list(value: Any) -> list[Any]:
    """``None`` -> ``[]``, a list or tuple as a list, anything else as a one-item list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def error_html(exc: BaseException) -> str:
    """A one-line, escaped error message (the widget's replacement for a traceback)."""
    return (
        "<div class='tlkit-error' style='color:#b00020;white-space:pre-wrap'>"
        f"<b>{escape(type(exc).__name__)}:</b> {escape(str(exc))}</div>"
    )


def format_seconds(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:03``."""
    s = int(round(max(0.0, seconds)))
    h, m = divmod(s, 3600)
    m, s = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class RunRecord:
    """One run started from the dashboard: what was asked, what came out, where it was saved."""

    number: int
    dataset: str
    options: dict[str, Any]
    checkpoint_dir: Path
    run: Any = None
    error: str | None = None
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        strategies = [
            str(v)
            for k in ("loss", "pseudo_label", "adapt", "regularize")
            for v in as_list(self.options.get(k))
            if v not in (None, "auto")
        ]
        what = "+".join(strategies) or "source only"
        return f"#{self.number} {self.options.get('backbone')} {what}"

    @property
    def best_checkpoint(self) -> Path | None:
        path = self.checkpoint_dir / "best.pt"
        return path if path.exists() else None

    @property
    def stopped(self) -> bool:
        return bool(self.run is not None and self.run.stopped_early)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    return str(value)


def epoch_table_html(record: RunRecord) -> str:
    """One run's per-epoch table: epoch, loss terms, held-out metrics and scores, seconds."""
    rows = record.history
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in ("epoch", "step", "lr")]
    head = ["epoch", *keys, "time"]
    body = []
    for i, row in enumerate(rows):
        secs = record.epoch_seconds[i] if i < len(record.epoch_seconds) else None
        cells = [str(row["epoch"]), *(_fmt(row[k]) if k in row else "" for k in keys)]
        cells.append(format_seconds(secs) if secs is not None else "")
        body.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    caption = f"{record.label} on {record.dataset}"
    if not rows:
        caption += " · waiting for the first epoch"
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (
        f"<table class='tlkit-table tlkit-epochs'><caption>{escape(caption)}</caption>"
        f"<tr>{header}</tr>{''.join(body)}</table>"
    )


def epochs_html(records: list[RunRecord]) -> str:
    """Every run's per-epoch table, newest first (what the output below the widget shows)."""
    if not records:
        return (
            "<div class='tlkit-epochs-none' style='color:#777'><i>tlkit dashboard: "
            "per-epoch results appear here once a run is trained.</i></div>"
        )
    tables = "".join(epoch_table_html(r) for r in reversed(records))
    return f"{TABLE_CSS}<div class='tlkit-epochs-all'>{tables}</div>"


def comparison_html(records: list[RunRecord]) -> str:
    """The runs side by side: options, epochs, held-out metrics, best epoch, where saved."""
    if not records:
        return "<i>no runs yet</i>"
    metric_keys: list[str] = []
    for r in records:
        if r.run is not None:
            metric_keys += [k for k in live.held_out_keys(r.run.history) if k not in metric_keys]
    head = ["run", "dataset", "epochs", "status", *metric_keys, "best", "seconds", "saved in"]
    rows = []
    for r in records:
        run = r.run
        last = run.last if run is not None else {}
        if run is None:
            status = f"failed: {r.error}" if r.error else "running"
        else:
            status = "stopped" if run.stopped_early else "done"
        best = run.best if run is not None else {}
        best_text = (
            f"{best['value']:.3f} @ {best['epoch']} ({best['metric']})" if best.get("epoch") else ""
        )
        epochs = f"{len(run.history)}/{r.options.get('epochs')}" if run is not None else ""
        cells = [r.label, r.dataset, epochs, status]
        cells += [f"{last[k]:.3f}" if k in last else "" for k in metric_keys]
        cells += [best_text, f"{r.seconds:.1f}", str(r.checkpoint_dir)]
        kinds = {0: "l", 1: "l", 3: "l", len(cells) - 3: "p", len(cells) - 1: "p"}
        rows.append(
            "<tr>"
            + "".join(
                f"<td class='{kinds[i]}'>{escape(str(c))}</td>"
                if i in kinds
                else f"<td>{escape(str(c))}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    header = "".join(f"<th>{escape(h).replace('_', '_&#8203;')}</th>" for h in head)
    return (
        f"{TABLE_CSS}<table class='tlkit-table tlkit-runs'><tr>{header}</tr>{''.join(rows)}</table>"
    )
