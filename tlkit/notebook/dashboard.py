"""The training dashboard: pick data, backbone and strategies, train, watch, stop, compare.

Why a widget on top of :func:`tlkit.fit`: trying strategies is the core loop of transfer
learning, and a form with live curves makes that loop fast for people who do not want to edit
code between runs. Design choices:

* The choices come from the plugin registry (``tlkit.strategies(family)``) when the dashboard is
  built and on *Refresh*, so a strategy registered in a cell or installed from a package shows
  up without any change here. Strategy families are lists of checkboxes (a multi-select list
  needs Ctrl-click to deselect, which nobody guesses).
* The form's fields carry the names of :func:`tlkit.fit`'s options and start from its defaults
  (``mode="auto"``), and its values are judged by the rules :func:`tlkit.fit` and the CLI use
  (:class:`tlkit.FitConfig`, :mod:`tlkit.engine.rules`): one mistake, one message, naming a field.
* Setup (data, model, strategy checks) runs in the click handler, so a bad option or an
  impossible combination is reported in the widget at once -- as a message, not a traceback.
  Training then runs in a background thread: the notebook stays usable, and *Stop* asks the
  trainer to end at the next batch boundary (``trainer.request_stop()``). The form folds away
  while a run trains, so that it and the curves fit one screen.
* Each run checkpoints into its own folder under *runs folder* (a field): by default a
  temporary folder deleted when the dashboard goes away, so nothing is left behind unasked.
  *Export* writes into a new folder beside the notebook, which the status line names.
* A per-epoch table (epoch, losses, metrics, time) is a plain HTML output below the widget,
  updated in place: it stays in the saved notebook, as fastai's does, when widget state does not.

The parts are small objects with their own modules: :class:`~.dashboard_form.Form` (the fields),
:class:`~.dashboard_figures.FigureAreas` (the tabs), :class:`~.dashboard_progress.RunObserver`
(progress and ETA), :mod:`~.dashboard_runs` (run records and tables) and
:mod:`~.dashboard_export` (files).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from tlkit.datasets.domain import DomainPair
from tlkit.engine.config import FitConfig, check_known_options
from tlkit.engine.rules import refuse_without_target, strategy_names
from tlkit.hookspecs import hookimpl
from tlkit.notebook import live
from tlkit.notebook.dashboard_export import GRID_KEY, default_export_folder, export_runs
from tlkit.notebook.dashboard_figures import FigureAreas, png_size, project
from tlkit.notebook.dashboard_form import FIELDS, CheckList, Form
from tlkit.notebook.dashboard_progress import RunObserver, progress_text
from tlkit.notebook.dashboard_runs import (
    RunRecord,
    comparison_html,
    epoch_table_html,
    epochs_html,
    error_html,
    format_seconds,
)

#: The figure areas and their buttons, attributes of the dashboard too (``dash.curves.png``).
FIGURE_AREAS = (
    "curves", "confusion", "embedding", "embedding_method", "embedding_button", "translations",
    "lr_finder", "compare_table", "compare_plot", "export_button", "export_note",
)  # fmt: skip
#: The advice that ends a "needs a target" message in the form: which fields to change.
FORM_NO_TARGET_FIX = (
    "Pick a pair in dataset (a name with '->', such as 'synth-digits->digits'), or untick them."
)


class LRFinderShown:
    """Shows what ``lr="find"`` swept when training starts: the sweep runs then, in the
    training thread, so that the Train click returns at once."""

    name = "dashboard-lr-finder"

    def __init__(self, show: Any) -> None:
        self.show = show

    @hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        finder = getattr(trainer, "lr_finder", None)
        if finder is not None:
            self.show(finder)


class Dashboard:
    """The training dashboard; display it as the last expression of a cell.

    Args:
        data: extra tasks by name (your own ``DomainPair``), listed before the bundled ones.
        dataset: the task selected at first (default: the first of ``data``, else
            ``"synth-digits->digits"``).
        backbone: the form's initial value, as are ``epochs``, ``lr``, ``batch_size``,
            ``image_size`` (0 = the backbone's default), ``mode``, ``loss``, ``pseudo_label``,
            ``adapt``, ``regularize``, ``validate``, ``monitor``, ``patience``,
            ``restore_best``, ``class_weight``, ``sampler``, ``log_dir`` and ``seed``
            (:func:`tlkit.fit`'s defaults where it has one). With ``log_dir`` each run logs into
            its ``run-N`` subfolder.
        checkpoint_root: the *runs folder*, where each run's checkpoint folder goes. Default: a
            temporary folder, deleted with the dashboard (type a folder in the form to keep runs).
        redraw_interval: seconds between two redraws of the curves within an epoch.
        **fit_options: other :class:`tlkit.FitConfig` fields used for every run
            (``log_every``, ``max_steps``, ``augment``...).

    Every button is also a method -- :meth:`train`, :meth:`stop`, :meth:`refresh`,
    :meth:`refresh_embedding`, :meth:`export` -- and :meth:`wait` joins the training thread.
    The fields are attributes (``dash.lr.value = "3e-4"``, ``dash.adapt.value = ("dann",)``).
    """

    def __init__(
        self,
        *,
        data: Mapping[str, DomainPair] | None = None,
        dataset: str | None = None,
        backbone: str = "small_cnn",
        epochs: int = 5,
        lr: float | str = 1e-3,
        batch_size: int | str = 64,
        image_size: int = 0,
        mode: str = "auto",
        loss: str = "auto",
        pseudo_label: str | None = None,
        adapt: Sequence[str] = (),
        regularize: Sequence[str] = (),
        validate: Sequence[str] = (),
        monitor: str = "auto",
        patience: int | None = None,
        restore_best: bool = False,
        class_weight: str | None = None,
        sampler: str | None = "shuffle",
        log_dir: str | Path | None = None,
        seed: int = 0,
        checkpoint_root: str | Path | None = None,
        redraw_interval: float = 1.0,
        **fit_options: Any,
    ) -> None:
        check_known_options(fit_options)
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
        self.last_export: Path | None = None
        self._trainer: Any = None
        self._thread: threading.Thread | None = None
        self._active = False
        self._tasks: dict[tuple[str, int], DomainPair] = {}
        self._task: DomainPair | None = None
        self._table_id: str | None = None
        self.form = Form(list(self.data), self.fit_options, self._temp_root)
        self.figures = FigureAreas()
        for name in FIELDS:  # the fields and figure areas are the dashboard's attributes
            setattr(self, name, getattr(self.form, name))
        for name in FIGURE_AREAS:
            setattr(self, name, getattr(self.figures, name))
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
            patience=patience,
            restore_best=bool(restore_best),
            class_weight=class_weight or "",
            sampler=sampler or "shuffle",
            log_dir=str(log_dir or ""),
            seed=seed,
        )
        for name, value in initial.items():
            self.form.set_initial(name, value)
        self.form.update_monitor()
        self.form.set_initial("monitor", monitor)

    # -- widgets -------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        import ipywidgets as w

        self.train_button = w.Button(description="Train", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.stop_button.disabled = True
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="18em"))
        self.progress_text = w.HTML("")
        self.status = w.HTML("ready: pick the options and press Train")
        self.error = w.HTML("")
        self.train_button.on_click(lambda _: self.train())
        self.stop_button.on_click(lambda _: self.stop())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.embedding_button.on_click(lambda _: self._guard(self.refresh_embedding))
        self.export_button.on_click(lambda _: self._guard(self.export))

        buttons = w.HBox([self.train_button, self.stop_button, self.refresh_button])
        progress = w.HBox(
            [self.progress, self.progress_text],
            layout=w.Layout(flex_flow="row wrap", align_items="center", grid_gap="8px"),
        )
        parts = [self.form.section, buttons, progress, self.status, self.error, self.figures.tabs]
        self.widget = w.VBox(parts)
        for name, obj in (
            ("widget", self.widget),
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

    # -- the form ------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The fit() options the form currently describes (plus the constructor's extras)."""
        return self.form.options()

    @property
    def checkpoint_root(self) -> Path:
        """The runs folder the form currently names."""
        return self.form.checkpoint_root

    def refresh(self) -> None:
        """Re-read datasets, backbones and strategies (e.g. after ``tlkit.register`` in a cell)."""
        self.form.refresh()

    def check_form(self, task: DomainPair, options: Mapping[str, Any]) -> None:
        """The engine's rule on target data, with advice in the form's words (the other rules
        are checked where the engine checks them, when the run is built)."""
        selected = {
            k: strategy_names(options.get(k)) for k in ("pseudo_label", "adapt", "validate")
        }
        refuse_without_target(
            selected, self.dataset.value, task.target is not None, FORM_NO_TARGET_FIX
        )

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
            if config.log_dir is not None:
                config.log_dir = str(Path(config.log_dir) / f"run-{number}")
            options = {k: getattr(config, k) for k in options}  # the values as converted
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
        self.form.collapse(f"{record.label}, lr {options['lr']}, {options['epochs']} epochs")
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

        def epoch_ended(trainer: Any) -> None:
            self._show_epochs()
            self.figures.draw_confusion(trainer)

        def fit_ended(trainer: Any) -> None:
            png = self.figures.draw_translations(trainer)
            if png:
                record.extra[GRID_KEY] = png

        observer = RunObserver(
            record,
            self.progress,
            self.progress_text,
            on_status=self._status,
            on_epoch=epoch_ended,
            on_end=fit_ended,
        )
        sweep = LRFinderShown(lambda finder: self._show_lr_finder(record, finder))
        return Trainer(task, config=config, observers=[observer, self._live, sweep])

    def _show_lr_finder(self, record: RunRecord, finder: Any) -> None:
        record.extra["lr_finder"] = finder.describe()
        self.figures.draw_lr_finder(finder)
        self.status.value += f" · {escape(finder.describe())}"

    def _draw_translations(self, trainer: Any) -> None:
        """Draw the source -> target grid of ``trainer`` (its strategies' previews), if any."""
        self.figures.draw_translations(trainer)

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
        self.figures.show_comparison(self.runs)
        self._show_epochs()
        run = record.run
        if run is None:
            self.form.expand()  # the fields are what to change next
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

    # -- figures and files ---------------------------------------------------------------------
    def refresh_embedding(self) -> None:
        """Project source and target features of the current model to 2-d (PCA or t-SNE)."""
        owner = self._trainer if self.running else self.run
        model = getattr(owner, "model", None)
        if model is None or self._task is None:
            raise RuntimeError("train a model first; the embedding shows its features.")
        self.figures.draw_embedding(model, self._task, owner)

    def export(self, folder: str | Path | None = None) -> list[Path]:
        """Write every run's history as CSV (one row per run and epoch), the figures on screen
        and each pixel-level run's source -> target grid as PNG files into ``folder`` (default:
        a new ``tlkit-export-<date>-<time>`` folder in the working directory, which is the
        notebook's folder in JupyterLab). The status line names the folder."""
        out = Path(folder) if folder is not None else default_export_folder()
        written = export_runs(self.runs, out, self.figures.pngs(self.runs))
        self.last_export = out.resolve()
        names = ", ".join(p.name for p in written)
        self.export_note.value = f"<span>saved {escape(names)}</span>"
        self.status.value = escape(f"exported {len(written)} files to {self.last_export}")
        return written

    # -- the epoch table -----------------------------------------------------------------------
    def epochs_html(self) -> str:
        """Every run's per-epoch table, newest first (what the output below the widget shows)."""
        return epochs_html(self.runs)

    def _show_epochs(self) -> None:
        if self._table_id is None:
            return
        from IPython.display import HTML, update_display

        update_display(HTML(self.epochs_html()), display_id=self._table_id)


__all__ = [
    "CheckList",
    "Dashboard",
    "RunRecord",
    "comparison_html",
    "epoch_table_html",
    "png_size",
    "progress_text",
    "project",
]
