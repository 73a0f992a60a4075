"""The training dashboard: pick data, backbone and strategies, train, watch, stop, compare.

Why a widget on top of :func:`tlkit.fit`: trying strategies is the core loop of transfer
learning, and a form with live curves makes that loop fast for people who do not want to edit
code between runs. Design choices:

* The choices come from the plugin registry (``tlkit.strategies(family)``) when the dashboard is
  built and on *Refresh*, so a strategy registered in a cell or installed from a package shows
  up without any change here. Strategy families are lists of checkboxes (a multi-select list
  needs Ctrl-click to deselect, which nobody guesses).
* The form's fields carry the names of :func:`tlkit.fit`'s options and start from its defaults
  (``mode="auto"``), so an error message naming ``image_size`` or ``adapt`` names a field.
* Setup (data, model, strategy checks) runs in the click handler, so a bad option or an
  impossible combination is reported in the widget at once -- as a message, not a traceback.
  Training then runs in a background thread: the notebook stays usable, and *Stop* asks the
  trainer to end at the next batch boundary (``trainer.request_stop()``).
* Each run checkpoints into its own folder under *runs folder* (a field): by default a
  temporary folder deleted when the dashboard goes away, so nothing is left behind unasked.
* A per-epoch table (epoch, losses, metrics, time) is a plain HTML output below the widget,
  updated in place: it stays in the saved notebook, as fastai's does, when widget state does not.
* Figures are drawn without pyplot (see :mod:`tlkit.notebook.live`), safe from the thread, and
  shown at their natural size with a hint before the first run.

This module holds the dashboard's layout, training thread, status and tables. The form (the
fields and :class:`CheckList`) is in :mod:`tlkit.notebook.dashboard_form` and the figure areas in
:mod:`tlkit.notebook.dashboard_figures`: two halves :class:`Dashboard` inherits, kept apart so
that each file reads on its own. Their public names are importable from here too.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from tlkit.datasets.domain import DomainPair
from tlkit.engine.config import ConfigError, FitConfig
from tlkit.hookspecs import hookimpl
from tlkit.notebook import live
from tlkit.notebook.dashboard_figures import (  # noqa: F401 (re-exported: their historical home)
    _Figure,
    _FigureAreas,
    png_size,
    project,
)
from tlkit.notebook.dashboard_form import (  # noqa: F401 (re-exported: their historical home)
    CheckList,
    _as_list,
    _Form,
    backbone_names,
    strategy_names,
)

_FIT_FIELDS = set(FitConfig.__dataclass_fields__)
#: Seconds between two updates of the progress text (each update is a message to the browser).
_PROGRESS_INTERVAL = 0.25

_TABLE_CSS = (
    "<style>.tlkit-table{border-collapse:collapse;font-size:12px;margin:2px 0}"
    ".tlkit-table th,.tlkit-table td{border:1px solid #ccc;padding:2px 6px;white-space:nowrap;"
    "text-align:right}.tlkit-table th{background:#f3f3f3}.tlkit-table td.l{text-align:left}"
    ".tlkit-table caption{text-align:left;font-weight:bold;padding:2px 0}</style>"
)


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


def progress_text(step: int, total: int, elapsed: float, first_step: int = 0) -> str:
    """``step 120/600 · 0:12 elapsed · ETA 0:48``: the numbers beside the progress bar."""
    text = f"step {step}/{total} · {format_seconds(elapsed)} elapsed"
    done = step - first_step
    if 0 < done and step < total:
        text += f" · ETA {format_seconds(elapsed / done * (total - step))}"
    return text


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
            for v in _as_list(self.options.get(k))
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


class _Observer:
    """Feeds the dashboard's progress, status, epoch table and confusion matrix from the
    trainer (only through its documented attributes)."""

    def __init__(self, dashboard: Dashboard, record: RunRecord) -> None:
        self.d, self.record = dashboard, record
        self._start = self._epoch_start = time.perf_counter()
        self._first_step = 0
        self._shown = 0.0

    def _progress(self, trainer: Any, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._shown < _PROGRESS_INTERVAL:
            return
        self._shown = now
        s = trainer.state
        self.d.progress.value = s.step
        self.d.progress_text.value = progress_text(
            s.step, s.total_steps, now - self._start, self._first_step
        )

    @hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        self._start = self._epoch_start = time.perf_counter()
        self._first_step = trainer.state.step
        self.d.progress.max = max(1, trainer.state.total_steps)
        self._progress(trainer, force=True)

    @hookimpl
    def tlkit_on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self._progress(trainer)
        if logs:
            self.d._status(trainer, logs)

    @hookimpl
    def tlkit_on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.record.epoch_seconds.append(now - self._epoch_start)
        self._epoch_start = now
        self.record.history = list(trainer.history)
        self._progress(trainer, force=True)
        self.d._status(trainer, metrics, ended=epoch)
        self.d._show_epochs()
        self.d._draw_confusion(trainer)

    @hookimpl
    def tlkit_on_fit_end(self, trainer: Any) -> None:
        self.d._draw_translations(trainer)
        self.record.history = list(trainer.history)
        s = trainer.state
        self.d.progress.value = s.step
        elapsed = format_seconds(time.perf_counter() - self._start)
        how = " · stopped" if s.stopped_early else ""
        self.d.progress_text.value = f"step {s.step}/{s.total_steps} · {elapsed} elapsed{how}"


class Dashboard(_Form, _FigureAreas):
    """The training dashboard; display it as the last expression of a cell.

    Args:
        data: extra tasks by name (your own ``DomainPair``), listed before the bundled ones.
        dataset: the task selected at first (default: the first of ``data``, else
            ``"synth-digits->digits"``).
        backbone, epochs, lr, batch_size, image_size (0 = the backbone's default), mode, loss,
        pseudo_label, adapt, regularize, validate, monitor, seed: the form's initial values
            (:func:`tlkit.fit`'s defaults where it has one).
        checkpoint_root: the *runs folder*, where each run's checkpoint folder goes. Default: a
            temporary folder, deleted with the dashboard (type a folder in the form to keep runs).
        redraw_interval: seconds between two redraws of the curves within an epoch.
        **fit_options: other :class:`tlkit.FitConfig` fields used for every run
            (``log_every``, ``max_steps``, ``augment``...).

    Every button is also a method -- :meth:`train`, :meth:`stop`, :meth:`refresh`,
    :meth:`refresh_embedding`, :meth:`export` -- and :meth:`wait` joins the training thread.
    """

    def __init__(
        self,
        *,
        data: Mapping[str, DomainPair] | None = None,
        dataset: str | None = None,
        backbone: str = "small_cnn",
        epochs: int = 5,
        lr: float = 1e-3,
        batch_size: int = 64,
        image_size: int = 0,
        mode: str = "auto",
        loss: str = "auto",
        pseudo_label: str | None = None,
        adapt: Sequence[str] = (),
        regularize: Sequence[str] = (),
        validate: Sequence[str] = (),
        monitor: str = "auto",
        seed: int = 0,
        checkpoint_root: str | Path | None = None,
        redraw_interval: float = 1.0,
        **fit_options: Any,
    ) -> None:
        unknown = sorted(set(fit_options) - _FIT_FIELDS)
        if unknown:
            raise ConfigError(f"unknown options {unknown}; known: {sorted(_FIT_FIELDS)}.")
        self.data = dict(data or {})
        self.fit_options = {"progress": False, **fit_options}
        self._temp_root: Path | None = None
        if checkpoint_root is None:
            self._temp_root = Path(tempfile.mkdtemp(prefix="tlkit-dash-"))
            # nothing left behind: the temporary runs folder goes with the dashboard
            self._cleanup = weakref.finalize(
                self, shutil.rmtree, str(self._temp_root), ignore_errors=True
            )
        self.redraw_interval = redraw_interval
        self.runs: list[RunRecord] = []
        self.run: Any = None
        self.last_error: BaseException | None = None
        self._trainer: Any = None
        self._thread: threading.Thread | None = None
        self._active = False
        self._tasks: dict[tuple[str, int], DomainPair] = {}
        self._task: DomainPair | None = None
        self._table_id: str | None = None
        self._build_widgets()
        self.runs_folder.value = str(checkpoint_root or self._temp_root)
        self.refresh()
        initial = dict(
            dataset=dataset or (next(iter(self.data)) if self.data else "synth-digits->digits"),
            backbone=backbone,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            image_size=image_size,
            mode=mode,
            loss=loss,
            pseudo_label=pseudo_label or "",
            adapt=tuple(adapt),
            regularize=tuple(regularize),
            validate=tuple(validate),
            seed=seed,
        )
        for name, value in initial.items():
            self._initial(getattr(self, name), name, value)
        self._update_monitor()
        self._initial(self.monitor, "monitor", monitor)

    # -- widgets -------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        import ipywidgets as w

        form = self._build_form()  # the fields (dashboard_form)
        self.train_button = w.Button(description="Train", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.stop_button.disabled = True
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="18em"))
        self.progress_text = w.HTML("")
        self.status = w.HTML("ready: pick the options and press Train")
        self.error = w.HTML("")
        tabs = self._build_figure_tabs()  # the figure areas (dashboard_figures)
        self.train_button.on_click(lambda _: self.train())
        self.stop_button.on_click(lambda _: self.stop())
        self.refresh_button.on_click(lambda _: self.refresh())

        buttons = w.HBox([self.train_button, self.stop_button, self.refresh_button])
        progress = w.HBox(
            [self.progress, self.progress_text],
            layout=w.Layout(flex_flow="row wrap", align_items="center", grid_gap="8px"),
        )
        self.widget = w.VBox(
            [
                form,
                w.VBox([self.runs_folder, self.runs_note]),
                buttons,
                progress,
                self.status,
                self.error,
                tabs,
            ]
        )
        self.form = form
        for name, obj in (
            ("widget", self.widget),
            ("form", form),
            ("progress", self.progress),
            ("progress-text", self.progress_text),
            ("status", self.status),
            ("error", self.error),
            ("compare", self.compare_table),
        ):
            obj.add_class(f"tlkit-{name}")  # stable hooks for CSS and tests

    def _ipython_display_(self) -> None:
        """The widget, then the per-epoch table as a plain HTML output that later epochs
        update in place (``display_id``): it stays in the saved notebook without widget state."""
        from IPython.display import HTML, display

        display(self.widget)
        if self._table_id is None:
            self._table_id = f"tlkit-epochs-{id(self):x}-{time.monotonic_ns():x}"
        display(HTML(self.epochs_html()), display_id=self._table_id)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- errors and status ---------------------------------------------------------------------
    def _show_error(self, exc: BaseException) -> None:
        self.last_error = exc
        self.error.value = error_html(exc)

    def _guard(self, fn: Any, *args: Any) -> Any:
        self.error.value = ""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the widget reports every failure
            self._show_error(exc)
            return None

    def _status(self, trainer: Any, values: Mapping[str, Any], ended: int | None = None) -> None:
        s, total = trainer.state, trainer.config.epochs
        shown = "  ".join(
            f"{k}={v:.4g}"
            for k, v in values.items()
            if isinstance(v, float) and k not in ("lr", "epoch", "step")
        )
        where = f"epoch {ended}/{total} ended" if ended else f"epoch {s.epoch + 1}/{total}"
        self.status.value = f"{where} · {escape(shown)}"

    # -- training ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a run is training (False once its results are shown)."""
        return self._active

    def _load_task(self, name: str, seed: int) -> DomainPair:
        if name in self.data:
            return self.data[name]
        if (name, seed) not in self._tasks:
            from tlkit.datasets import load

            self._tasks[(name, seed)] = load(name, seed=seed)
        return self._tasks[(name, seed)]

    def train(self) -> RunRecord | None:
        """Check the form, build the trainer, and train in a background thread.

        Returns the new :class:`RunRecord`, or ``None`` when the form is invalid (the message
        is shown in the widget and kept in ``last_error``).
        """
        self.error.value = ""
        if self.running:
            self._show_error(RuntimeError("a run is in progress; Stop it or wait for it."))
            return None
        number = len(self.runs) + 1
        options = self.options()
        folder = self.checkpoint_root / f"run-{number}"
        try:
            config = FitConfig(**{**options, "checkpoint_dir": str(folder)})
            task = self._load_task(self.dataset.value, config.seed)
            self.check_form(task, options)
            record = RunRecord(number, self.dataset.value, options, folder)
            trainer = self._make_trainer(task, config, record)
        except Exception as exc:  # noqa: BLE001 - any setup failure is shown, not raised
            self._show_error(exc)
            return None
        self.runs.append(record)
        self._task, self._trainer = task, trainer
        self._set_running(True)
        self.status.value = f"run #{number}: starting…"
        self.progress_text.value = ""
        self._show_epochs()
        self._thread = threading.Thread(
            target=self._train_thread, args=(trainer, record), name="tlkit-dashboard", daemon=True
        )
        self._thread.start()
        return record

    def _make_trainer(self, task: DomainPair, config: FitConfig, record: RunRecord) -> Any:
        from tlkit.api import Trainer

        self._live = live.LiveCurves(
            live.WidgetSink(self.curves), min_interval=self.redraw_interval
        )
        return Trainer(task, config, observers=[_Observer(self, record), self._live])

    def _train_thread(self, trainer: Any, record: RunRecord) -> None:
        start = time.perf_counter()
        try:
            record.run = trainer.fit()
            self.run = record.run
            record.history = list(record.run.history)
        except Exception as exc:  # noqa: BLE001 - reported in the widget
            record.error = f"{type(exc).__name__}: {exc}"
            self._show_error(exc)
        record.seconds = time.perf_counter() - start
        try:
            self._finished(record)
        except Exception as exc:  # noqa: BLE001 - a drawing failure must not wedge the form
            self._show_error(exc)
        finally:
            self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self._active = running
        self.train_button.disabled = running
        self.stop_button.disabled = not running

    def _finished(self, record: RunRecord) -> None:
        self._update_comparison()
        self._show_epochs()
        run = record.run
        if run is None:
            self.status.value = f"run #{record.number} failed (see the message below)"
            return
        done = "stopped" if run.stopped_early else "done"
        epochs = f"{len(run.history)}/{record.options.get('epochs')} epochs"
        parts = [f"run #{record.number} {done}", f"{epochs} in {format_seconds(record.seconds)}"]
        best = run.best or {}
        if best.get("epoch"):
            parts.append(f"best epoch {best['epoch']} by {best['metric']}")
        metrics = "  ".join(
            f"{k}={v:.4f}" for k, v in run.last.items() if k in live.held_out_keys([run.last])
        )
        if metrics:
            parts.append(metrics)
        self.status.value = escape(" · ".join(parts))

    def stop(self) -> None:
        """End the current run at the next batch boundary (its best checkpoint is kept)."""
        if self._trainer is not None and self.running:
            self._trainer.request_stop()
            self.status.value = "stopping at the next batch…"

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the current run ends (or ``timeout`` seconds); the last finished Run."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.run

    def close(self) -> None:
        """Stop training, close the widgets, and delete the temporary runs folder (if any)."""
        self.stop()
        self.wait(60)
        self.widget.close()
        if self._temp_root is not None:
            self._cleanup()

    # -- the epoch table -----------------------------------------------------------------------
    def epochs_html(self) -> str:
        """Every run's per-epoch table, newest first (what the output below the widget shows)."""
        if not self.runs:
            return (
                "<div class='tlkit-epochs-none' style='color:#777'><i>tlkit dashboard: "
                "per-epoch results appear here once a run is trained.</i></div>"
            )
        tables = "".join(epoch_table_html(r) for r in reversed(self.runs))
        return f"{_TABLE_CSS}<div class='tlkit-epochs-all'>{tables}</div>"

    def _show_epochs(self) -> None:
        if self._table_id is None:
            return
        from IPython.display import HTML, update_display

        update_display(HTML(self.epochs_html()), display_id=self._table_id)

    # -- the run comparison (its figure: dashboard_figures) ------------------------------------
    def _update_comparison(self) -> None:
        self.compare_table.value = comparison_html(self.runs)
        fig = self._comparison_figure()
        if fig is not None:
            self.compare_plot.show(live.figure_png(fig))


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
            f"{best['metric']}={best['value']:.3f} @ {best['epoch']}" if best.get("epoch") else ""
        )
        epochs = f"{len(run.history)}/{r.options.get('epochs')}" if run is not None else ""
        cells = [r.label, r.dataset, epochs, status]
        cells += [f"{last[k]:.3f}" if k in last else "" for k in metric_keys]
        cells += [best_text, f"{r.seconds:.1f}", str(r.checkpoint_dir)]
        left = {0, 1, 3, len(cells) - 1}
        rows.append(
            "<tr>"
            + "".join(
                f"<td class='l'>{escape(str(c))}</td>"
                if i in left
                else f"<td>{escape(str(c))}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"{_TABLE_CSS}<table class='tlkit-table tlkit-runs'><tr>{header}</tr>{''.join(rows)}</table>"


__all__ = [
    "CheckList",
    "Dashboard",
    "RunRecord",
    "comparison_html",
    "epoch_table_html",
    "project",
    "strategy_names",
]
