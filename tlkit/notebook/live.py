"""Live plots that work in a widget, in a cell's output, and on a static page.

Why this module exists: training curves are redrawn while a run is going, sometimes from a
background thread (the dashboard). pyplot is neither thread-safe nor quiet (the inline backend
shows every open figure again at the end of a cell), so every figure here is a bare
:class:`matplotlib.figure.Figure` rendered to PNG bytes with the Agg canvas, and a *sink* shows
the bytes:

* :class:`WidgetSink` sets an ``ipywidgets.Image``'s value (the dashboard);
* :class:`DisplaySink` shows the first image with ``display(..., display_id=True)`` and replaces it
  with ``handle.update(...)``. A notebook executed without a browser (nbval, the book build) keeps
  the last image as a plain ``image/png`` output, so the static page shows the final curves.

:class:`LiveCurves` is a tlkit observer (``observers=[LiveCurves(sink)]``) that redraws the curves
from ``trainer.step_logs`` and ``trainer.history`` -- every scalar the engine or a strategy logs
(loss terms, mask rate, domain-discriminator accuracy...) appears without code here naming it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib.figure import Figure

from tlkit.hookspecs import hookimpl

#: Step-log keys that are not curves.
_NOT_CURVES = ("step", "epoch", "lr")
#: Step-log keys ending like this are rates in [0, 1] (mask rate, domain accuracy...), drawn apart
#: from the loss terms.
_RATE_SUFFIXES = ("accuracy", "rate", "agreement", "acc")

Sink = Callable[[bytes], None]


# -- figures ----------------------------------------------------------------------------------
def new_figure(width: float = 10.0, height: float = 3.2) -> Figure:
    """A pyplot-free figure (safe to draw from any thread, never shown twice by the backend)."""
    return Figure(figsize=(width, height), layout="constrained")


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def split_scalars(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Step-log keys split into loss terms and rates (names ending in accuracy/rate/...)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in _NOT_CURVES]
    rates = [k for k in keys if k.endswith(_RATE_SUFFIXES)]
    losses = [k for k in keys if k not in rates]
    return losses, rates


def held_out_keys(history: Sequence[dict[str, Any]]) -> list[str]:
    """History keys measured on held-out sets (``source_accuracy``, ``target_accuracy``...)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys and k.startswith(("source_", "target_"))]
    return keys


def _plot_series(ax, rows: Sequence[dict[str, Any]], xkey: str, keys: Sequence[str]) -> None:
    for k in keys:
        pts = [(r[xkey], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, label=k)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _epoch_axis(ax, last: int) -> None:
    """Whole epochs from 1 to ``last``: a single epoch is a point on a real axis, not a dot
    on one from 0.96 to 1.04, and a live run grows into its axis instead of rescaling it."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, max(1, last) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def shown_epochs(done: int, planned: int | None) -> int:
    """How far the epoch axis reaches: the planned epochs when there are few, else about
    twice the epochs done (so one epoch of 300 is not a dot squeezed against the y axis)."""
    if not planned or planned <= 20:
        return max(done, planned or 0, 1)
    return max(done, min(planned, max(10, 2 * done)))


def draw_training(
    fig: Figure,
    step_logs: Sequence[dict[str, Any]],
    history: Sequence[dict[str, Any]],
    *,
    epochs: int | None = None,
) -> Figure:
    """Loss terms per step, held-out metrics per epoch (axis up to ``epochs``, the planned
    number), and -- only when a strategy logs any -- rates per step (mask rate, domain
    accuracy...)."""
    fig.clear()
    losses, rates = split_scalars(step_logs)
    axes = fig.subplots(1, 3 if rates else 2)
    ax_loss, ax_eval = axes[0], axes[1]
    _plot_series(ax_loss, step_logs, "step", losses)
    ax_loss.set(xlabel="step", title="training loss terms")
    metrics = held_out_keys(history)
    _plot_series(ax_eval, history, "epoch", metrics)
    ax_eval.set(xlabel="epoch", title="held-out metrics")
    _epoch_axis(ax_eval, shown_epochs(len(history), epochs))
    values = [r[k] for r in history for k in metrics if isinstance(r.get(k), (int, float))]
    if values and all(k.endswith("accuracy") for k in metrics):
        ax_eval.set_ylim(min(0.0, min(values)), 1.02)
    if not history:
        ax_eval.text(
            0.5,
            0.5,
            "after the first epoch",
            ha="center",
            va="center",
            color="grey",
            transform=ax_eval.transAxes,
        )
    if rates:
        _plot_series(axes[2], step_logs, "step", rates)
        axes[2].set(xlabel="step", title="rates logged by strategies", ylim=(-0.02, 1.02))
    return fig


def draw_confusion(fig: Figure, cm: Any, classes: Sequence[str] = (), title: str = "") -> Figure:
    """Confusion matrix with counts in the cells (rows: true class, columns: prediction),
    coloured by row (the share of each true class), and the accuracy in the title."""
    fig.clear()
    ax = fig.subplots()
    counts = cm.long() if hasattr(cm, "long") else cm
    cm = counts.float()
    total = float(cm.sum())
    accuracy = float(cm.diagonal().sum()) / total if total else float("nan")
    share = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    k = cm.shape[0]
    labels = list(classes) or [str(i) for i in range(k)]
    ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    size = 9 if k <= 12 else 7
    if k <= 20:  # counts stay readable up to about 20 classes
        for i in range(k):
            for j in range(k):
                n = int(counts[i, j])
                if n:
                    color = "white" if share[i, j] > 0.6 else "black"
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=size - 1, color=color)
    ax.set_xticks(range(k), labels, rotation=90 if k > 12 else 0, fontsize=size)
    ax.set_yticks(range(k), labels, fontsize=size)
    head = f"{title}: " if title else ""
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"{head}accuracy {accuracy:.1%} of {int(total)}", fontsize=10)
    return fig


def draw_embedding(fig: Figure, points: Any, groups: Sequence[str], title: str = "") -> Figure:
    """2-d points coloured by group (e.g. ``"source"`` / ``"target"``)."""
    fig.clear()
    ax = fig.subplots()
    for name in dict.fromkeys(groups):
        mask = [g == name for g in groups]
        sel = points[mask]
        ax.scatter(sel[:, 0], sel[:, 1], s=8, alpha=0.6, label=name)
    ax.legend(fontsize=8)
    ax.set(title=title or "feature embedding", xticks=[], yticks=[])
    return fig


def draw_comparison(
    fig: Figure, runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], metrics: Sequence[str]
) -> Figure:
    """One panel per metric, one line per run (label, history)."""
    fig.clear()
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for label, history in runs:
            pts = [(r["epoch"], r[metric]) for r in history if metric in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, label=label)
        ax.set(xlabel="epoch", title=metric)
        _epoch_axis(ax, max((r["epoch"] for _, h in runs for r in h), default=1))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return fig


# -- sinks ------------------------------------------------------------------------------------
class DisplaySink:
    """Shows PNG bytes in the current cell's output and replaces them on each call.

    The first call displays with a fresh ``display_id``; later calls update that output, so an
    executed notebook keeps exactly one image: the final state.
    """

    def __init__(self) -> None:
        self.handle: Any = None
        self.updates = 0

    def __call__(self, png: bytes) -> None:
        from IPython.display import Image, display

        image = Image(data=png, format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)
        self.updates += 1


class WidgetSink:
    """Sets an ``ipywidgets.Image``'s value (the front end redraws it; thread-safe enough)."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.updates = 0

    def __call__(self, png: bytes) -> None:
        self.image.value = png
        self.updates += 1


# -- the observer -----------------------------------------------------------------------------
class LiveCurves:
    """A tlkit observer redrawing the training curves into a sink while a run trains.

    Redraws at most every ``min_interval`` seconds between epochs (drawing costs more than a
    small-CNN step on a laptop), and always at the end of each epoch and of the run.
    """

    def __init__(self, sink: Sink, *, min_interval: float = 1.0, dpi: int = 80) -> None:
        self.sink = sink
        self.min_interval = min_interval
        self.dpi = dpi
        self.fig = new_figure(9.0, 3.0)
        self.draws = 0
        self._last = 0.0

    def draw(self, trainer: Any) -> None:
        """Redraw now from the trainer's step logs and history."""
        draw_training(
            self.fig,
            list(trainer.step_logs),
            list(trainer.history),
            epochs=trainer.config.epochs,
        )
        self.sink(figure_png(self.fig, self.dpi))
        self.draws += 1
        self._last = time.monotonic()

    @hookimpl
    def tlkit_on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        if logs and time.monotonic() - self._last >= self.min_interval:
            self.draw(trainer)

    @hookimpl
    def tlkit_on_epoch_end(self, trainer: Any) -> None:
        self.draw(trainer)

    @hookimpl
    def tlkit_on_fit_end(self, trainer: Any) -> None:
        self.draw(trainer)


__all__ = [
    "DisplaySink",
    "LiveCurves",
    "WidgetSink",
    "draw_comparison",
    "draw_confusion",
    "draw_embedding",
    "draw_training",
    "figure_png",
    "held_out_keys",
    "new_figure",
    "split_scalars",
]
