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
"""

from __future__ import annotations

import copy
import csv
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

import torch

from tlkit import registry
from tlkit.datasets.domain import DomainPair
from tlkit.engine.config import MODES, ConfigError, FitConfig
from tlkit.engine.evaluate import predict_features
from tlkit.hookspecs import hookimpl
from tlkit.notebook import live

#: Strategy families shown as checkbox lists: (form field, registry family).
_CHECK_FAMILIES = (("adapt", "adapt"), ("regularize", "regularizer"), ("validate", "validator"))
#: Form fields that use the unlabelled target images (the engine refuses them without a target).
_NEEDS_TARGET = ("pseudo_label", "adapt", "validate")
_FIT_FIELDS = set(FitConfig.__dataclass_fields__)
#: Seconds between two updates of the progress text (each update is a message to the browser).
_PROGRESS_INTERVAL = 0.25

_TABLE_CSS = (
    "<style>.tlkit-table{border-collapse:collapse;font-size:12px;margin:2px 0}"
    ".tlkit-table th,.tlkit-table td{border:1px solid #ccc;padding:2px 6px;white-space:nowrap;"
    "text-align:right}.tlkit-table th{background:#f3f3f3}.tlkit-table td.l{text-align:left}"
    ".tlkit-table caption{text-align:left;font-weight:bold;padding:2px 0}</style>"
)


def strategy_names(family: str) -> list[str]:
    """Names of the installed strategies of one family, sorted."""
    return [s.name for s in registry.strategies(family)]


def backbone_names() -> list[str]:
    """Backbone names the form offers (``timm:<name>`` needs typing, so it is left out)."""
    from tlkit.backbones import list_backbones

    return [b for b in list_backbones() if "<" not in b]


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


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


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


class CheckList:
    """A list of checkboxes with a selector's API (``options``, ``value`` as a tuple).

    Why: ``SelectMultiple`` needs Ctrl-click to deselect; a checkbox is one click each way.
    """

    def __init__(self, description: str) -> None:
        import ipywidgets as w

        self.description = description
        self.boxes: dict[str, Any] = {}
        self._callbacks: list[Any] = []
        self.label = w.HTML(f"<b>{escape(description)}</b>")
        self.empty = w.HTML("<i style='color:#777'>none installed</i>")
        self.list = w.VBox(layout=w.Layout(width="auto"))
        self.widget = w.VBox([self.label, self.list], layout=w.Layout(width="auto"))
        self.widget.add_class(f"tlkit-{description}")

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(self.boxes)

    @options.setter
    def options(self, names: Sequence[str]) -> None:
        import ipywidgets as w

        old = self.value
        boxes = {}
        for name in names:
            box = self.boxes.get(name) or w.Checkbox(
                description=name, indent=False, layout=w.Layout(width="auto")
            )
            if name not in self.boxes:
                box.observe(self._changed, names="value")
            box.value = name in old
            boxes[name] = box
        self.boxes = boxes
        self.list.children = list(boxes.values()) or [self.empty]

    @property
    def value(self) -> tuple[str, ...]:
        return tuple(name for name, box in self.boxes.items() if box.value)

    @value.setter
    def value(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.boxes]
        if missing:
            raise ConfigError(
                f"{self.description}={missing} is not offered; choose from {list(self.boxes)}."
            )
        for name, box in self.boxes.items():
            box.value = name in names

    def observe(self, callback: Any) -> None:
        """Call ``callback()`` whenever a box is ticked or unticked."""
        self._callbacks.append(callback)

    def _changed(self, _change: dict) -> None:
        for callback in self._callbacks:
            callback()


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


class Dashboard:
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

    def _initial(self, widget: Any, name: str, value: Any) -> None:
        """Set a form value; a name the form does not offer is a ConfigError naming the choices
        (a backbone the list leaves out, e.g. ``timm:...``, is added to it instead)."""
        offered = getattr(widget, "options", None)
        if offered is not None:
            values = [o[1] if isinstance(o, tuple) else o for o in offered]
            missing = [
                v for v in (value if isinstance(value, tuple) else (value,)) if v not in values
            ]
            if missing and name == "backbone":
                widget.options = [*offered, value]
            elif missing:
                raise ConfigError(f"{name}={missing} is not offered; choose from {values}.")
        widget.value = value

    # -- widgets -------------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        import ipywidgets as w

        desc = {"description_width": "7.5em"}
        field = w.Layout(width="19em")

        def dropdown(name: str, **kw: Any) -> Any:
            return w.Dropdown(description=name, style=desc, layout=field, **kw)

        def number(kind: Any, name: str, **kw: Any) -> Any:
            return kind(description=name, style=desc, layout=w.Layout(width="14em"), **kw)

        self.dataset = dropdown("dataset")
        self.backbone = dropdown("backbone")
        self.loss = dropdown("loss")
        self.pseudo_label = dropdown("pseudo_label")
        self.mode = dropdown("mode", options=list(MODES))
        self.monitor = dropdown("monitor", tooltip="the metric that picks best.pt")
        self.adapt = CheckList("adapt")
        self.regularize = CheckList("regularize")
        self.validate = CheckList("validate")
        self.epochs = number(w.IntText, "epochs")
        self.lr = number(w.FloatText, "lr")
        self.batch_size = number(w.IntText, "batch_size")
        self.image_size = number(w.IntText, "image_size", tooltip="0 = the backbone's default")
        self.seed = number(w.IntText, "seed")
        self.runs_folder = w.Text(
            description="runs folder",
            style=desc,
            layout=w.Layout(width="38em", max_width="100%"),
            tooltip="each run is saved in its own run-N folder here (best.pt, last.pt)",
        )
        self.runs_note = w.HTML()
        self.train_button = w.Button(description="Train", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.stop_button.disabled = True
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="18em"))
        self.progress_text = w.HTML("")
        self.status = w.HTML("ready: pick the options and press Train")
        self.error = w.HTML("")
        self.curves = _Figure(
            "Learning curves appear here while a run trains (press Train).", "curves"
        )
        self.confusion = _Figure(
            "The confusion matrix on the held-out set appears after each epoch.", "confusion"
        )
        self.embedding = _Figure(
            "After a run, press Refresh embedding to project source and target features to 2-d.",
            "embedding",
        )
        self.embedding_method = w.Dropdown(
            options=["pca", "tsne"], description="method", layout=w.Layout(width="12em")
        )
        self.embedding_button = w.Button(
            description="Refresh embedding", icon="refresh", layout=w.Layout(width="auto")
        )
        self.translations = _Figure(
            "Pixel-level adaptation (adapt 'pixelda' or 'fda') shows source images and their "
            "target-style versions here after a run.",
            "translations",
        )
        self.compare_table = w.HTML("<i>no finished runs yet</i>")
        self.compare_plot = _Figure("One curve per run and metric, once a run has finished.")
        self.export_button = w.Button(
            description="Export CSV + PNG", icon="download", layout=w.Layout(width="auto")
        )
        self.export_note = w.HTML()
        self.train_button.on_click(lambda _: self.train())
        self.stop_button.on_click(lambda _: self.stop())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.embedding_button.on_click(lambda _: self._guard(self.refresh_embedding))
        self.export_button.on_click(lambda _: self._guard(self.export))
        self.validate.observe(self._update_monitor)
        self.runs_folder.observe(lambda _: self._note_runs_folder(), names="value")

        def column(*children: Any) -> Any:
            return w.VBox(list(children), layout=w.Layout(width="auto", flex="0 0 auto"))

        # One flex row that wraps: at 1100 px with the file browser open the columns stack
        # instead of each getting its own scrollbar.
        form = w.Box(
            [
                column(self.dataset, self.backbone, self.loss, self.pseudo_label, self.mode),
                column(self.adapt.widget, self.regularize.widget, self.validate.widget),
                column(self.epochs, self.lr, self.batch_size, self.image_size, self.seed),
                column(self.monitor),
            ],
            layout=w.Layout(
                display="flex", flex_flow="row wrap", grid_gap="4px 18px", width="100%"
            ),
        )
        buttons = w.HBox([self.train_button, self.stop_button, self.refresh_button])
        progress = w.HBox(
            [self.progress, self.progress_text],
            layout=w.Layout(flex_flow="row wrap", align_items="center", grid_gap="8px"),
        )
        tabs = w.Tab(
            children=[
                self.curves.widget,
                self.confusion.widget,
                w.VBox(
                    [
                        w.HBox(
                            [self.embedding_method, self.embedding_button],
                            layout=w.Layout(flex_flow="row wrap"),
                        ),
                        self.embedding.widget,
                    ]
                ),
                w.VBox(
                    [
                        w.Box([self.compare_table], layout=w.Layout(overflow="auto")),
                        w.HBox([self.export_button, self.export_note]),
                        self.compare_plot.widget,
                    ]
                ),
                self.translations.widget,
            ],
            titles=("curves", "confusion matrix", "embedding", "compare runs", "source → target"),
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

    def _note_runs_folder(self) -> None:
        path = self.runs_folder.value.strip()
        if self._temp_root is not None and Path(path) == self._temp_root:
            text = "a temporary folder, deleted with this dashboard: type a folder to keep runs"
        else:
            text = "runs are kept here (run-1, run-2...; load one with tlkit.load)"
        self.runs_note.value = f"<span style='color:#555;font-size:90%'>{escape(text)}</span>"

    @property
    def checkpoint_root(self) -> Path:
        """The runs folder the form currently names."""
        return Path(self.runs_folder.value.strip() or ".").expanduser()

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

    @staticmethod
    def _set_options(widget: Any, options: list[Any]) -> None:
        """Replace a selector's options, keeping the current selection where still offered."""
        old = widget.value
        values = [o[1] if isinstance(o, tuple) else o for o in options]
        widget.options = options
        if isinstance(old, tuple):
            widget.value = tuple(v for v in old if v in values)
        elif old in values:
            widget.value = old

    def refresh(self) -> None:
        """Re-read datasets, backbones and strategies (e.g. after ``tlkit.register`` in a cell)."""
        from tlkit.datasets import names

        self._set_options(self.dataset, [*self.data, *names()])
        self._set_options(self.backbone, backbone_names())
        self._set_options(self.loss, ["auto", *strategy_names("loss")])
        self._set_options(
            self.pseudo_label, [("none", ""), *((n, n) for n in strategy_names("pseudo_label"))]
        )
        for name, family in _CHECK_FAMILIES:
            getattr(self, name).options = strategy_names(family)
        self._update_monitor()

    def _update_monitor(self) -> None:
        """Offer the held-out metrics and the ticked validators' scores; ticking a validator
        while monitor is ``auto`` selects its score (else adaptation runs would keep the epoch
        with the best *source* accuracy)."""
        scores = [f"score_{v}" for v in self.validate.value]
        options = ["auto", "source_accuracy", "target_accuracy", "train_loss", *scores]
        old = self.monitor.value
        self.monitor.options = options
        if old in options and not (old == "auto" and scores):
            self.monitor.value = old
        else:
            self.monitor.value = scores[0] if scores else "auto"

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

    def options(self) -> dict[str, Any]:
        """The FitConfig options the form currently describes (plus the constructor's extras)."""
        return {
            **self.fit_options,
            "backbone": self.backbone.value,
            "epochs": self.epochs.value,
            "lr": self.lr.value,
            "batch_size": self.batch_size.value,
            "image_size": self.image_size.value or None,
            "mode": self.mode.value,
            "loss": self.loss.value,
            "pseudo_label": self.pseudo_label.value or None,
            "adapt": list(self.adapt.value) or None,
            "regularize": list(self.regularize.value) or None,
            "validate": list(self.validate.value) or None,
            "monitor": self.monitor.value,
            "seed": self.seed.value,
        }

    def _load_task(self, name: str, seed: int) -> DomainPair:
        if name in self.data:
            return self.data[name]
        if (name, seed) not in self._tasks:
            from tlkit.datasets import load

            self._tasks[(name, seed)] = load(name, seed=seed)
        return self._tasks[(name, seed)]

    def check_form(self, task: DomainPair, options: Mapping[str, Any]) -> None:
        """Refuse combinations the engine would refuse, in the form's words: which field, which
        choice, and what to change in the form (not code advice)."""
        dataset = self.dataset.value
        if task.target is None:
            picked = [
                f"{name}={_as_list(options.get(name))}"
                for name in _NEEDS_TARGET
                if _as_list(options.get(name))
            ]
            if picked:
                raise ConfigError(
                    f"{', '.join(picked)} need unlabelled target images, but dataset "
                    f"'{dataset}' has no target. Pick a pair in dataset (a name with '->', such "
                    f"as 'synth-digits->digits'), or untick {' and '.join(picked)}."
                )
        monitor = options.get("monitor", "auto")
        if monitor.startswith("target_") and task.target_test is None:
            raise ConfigError(
                f"monitor={monitor!r} needs a labelled target test set, which dataset "
                f"'{dataset}' does not have; pick another monitor."
            )
        if monitor.startswith("score_") and monitor[6:] not in _as_list(options.get("validate")):
            raise ConfigError(
                f"monitor={monitor!r} is computed by the validator '{monitor[6:]}': tick it "
                "under validate, or pick another monitor."
            )

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

    # -- figures -------------------------------------------------------------------------------
    def _draw_confusion(self, trainer: Any) -> None:
        """From ``trainer.eval_results`` (the engine evaluated the epoch already): target test
        set when it is labelled, else source test set."""
        if trainer.task != "classification":
            return
        results = getattr(trainer, "eval_results", None) or {}
        for name in ("target", "source"):
            metrics = results.get(name)
            if metrics and "confusion_matrix" in metrics:
                fig = live.draw_confusion(
                    live.new_figure(4.6, 4.2),
                    metrics["confusion_matrix"],
                    trainer.data.classes,
                    f"{name} test set",
                )
                self.confusion.show(live.figure_png(fig))
                return

    def _draw_translations(self, trainer: Any) -> None:
        """Source images next to their target-style versions, for runs whose strategies
        transform the source batch (PixelDA's generator, FDA's spectrum swap)."""
        if not any(hasattr(p, "tlkit_transform_source") for p in trainer.strategies.values()):
            return
        try:
            import matplotlib.pyplot as plt
            from tlkit_strategies.adapt._pixel_plots import source_to_target_grid

            fig = source_to_target_grid(trainer, trainer.data.source, trainer.target, n=8)
        except Exception as exc:  # noqa: BLE001 - a figure must never break a finished run
            self.translations.hint.value = f"<i style='color:#777'>no grid: {escape(str(exc))}</i>"
            return
        try:
            self.translations.show(live.figure_png(fig))
        finally:
            plt.close(fig)

    def refresh_embedding(self) -> None:
        """Project source and target features of the current model to 2-d (PCA or t-SNE)."""
        model = self._trainer.model if self.running else getattr(self.run, "model", None)
        if model is None or self._task is None:
            raise RuntimeError("train a model first; the embedding shows its features.")
        model = copy.deepcopy(model).cpu().eval()  # a snapshot, safe while training goes on
        feats, groups = [], []
        task = self._task
        for name in ("source", "target"):
            domain = getattr(task, f"{name}_test")
            domain = domain if domain is not None else getattr(task, name)
            if domain is None:
                continue
            g = torch.Generator().manual_seed(0)
            idx = torch.randperm(len(domain), generator=g)[:300]
            feats.append(predict_features(model, domain.images[idx]))
            groups += [name] * len(idx)
        points = project(torch.cat(feats), self.embedding_method.value)
        fig = live.draw_embedding(live.new_figure(4.6, 4.2), points, groups)
        self.embedding.show(live.figure_png(fig))

    def _comparison_figure(self) -> Any:
        done = [r for r in self.runs if r.run is not None]
        if not done:
            return None
        metrics: list[str] = []
        for r in done:
            metrics += [k for k in live.held_out_keys(r.run.history) if k not in metrics]
        runs = [(r.label, r.run.history) for r in done]
        keys = ["train_loss", *metrics]
        return live.draw_comparison(live.new_figure(3.0 * len(keys) + 1, 3.0), runs, keys)

    def _update_comparison(self) -> None:
        self.compare_table.value = comparison_html(self.runs)
        fig = self._comparison_figure()
        if fig is not None:
            self.compare_plot.show(live.figure_png(fig))

    def export(self, folder: str | Path | None = None) -> list[Path]:
        """Write every run's history as CSV (one row per run and epoch) and the figures on
        screen as PNG files into ``folder`` (default: ``<runs folder>/export``)."""
        out = Path(folder) if folder is not None else self.checkpoint_root / "export"
        if not any(r.history for r in self.runs):
            raise RuntimeError("nothing to export yet: train a run for at least one epoch.")
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "histories.csv"]
        keys: list[str] = []
        for r in self.runs:
            for row in r.history:
                keys += [k for k in row if k not in keys]
        with written[0].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["run", "label", "dataset", *keys, "epoch_seconds"])
            for r in self.runs:
                for i, row in enumerate(r.history):
                    secs = r.epoch_seconds[i] if i < len(r.epoch_seconds) else ""
                    writer.writerow(
                        [r.number, r.label, r.dataset, *(row.get(k, "") for k in keys)] + [secs]
                    )
        fig = self._comparison_figure()
        if fig is not None:
            (out / "comparison.png").write_bytes(live.figure_png(fig, dpi=110))
            written.append(out / "comparison.png")
        for name in ("curves", "confusion", "embedding"):
            png = getattr(self, name).png
            if png:
                (out / f"{name}.png").write_bytes(png)
                written.append(out / f"{name}.png")
        names = ", ".join(p.name for p in written)
        self.export_note.value = f"<span>saved {escape(names)} in {escape(str(out))}</span>"
        return written


class _Figure:
    """An image area: a hint until the first figure arrives, then the PNG at its natural size
    (never stretched to the column; scaled down only when the column is narrower)."""

    def __init__(self, hint: str, name: str | None = None) -> None:
        import ipywidgets as w

        self.hint = w.HTML(f"<i style='color:#777'>{escape(hint)}</i>")
        self.image = w.Image(format="png")
        self.image.layout = w.Layout(
            display="none",
            width="auto",
            height="auto",
            max_width="100%",
            margin="0",  # the widget margin on top of 100% would add a scrollbar
            align_self="flex-start",
        )
        # the image joins the area with its first figure: an empty Image widget renders as a
        # broken <img> in a saved notebook or the book, even when hidden
        self.widget = w.VBox([self.hint], layout=w.Layout(align_items="flex-start"))
        self.png: bytes = b""
        if name:
            self.image.add_class(f"tlkit-{name}")
            self.widget.add_class(f"tlkit-{name}-area")

    @property
    def value(self) -> bytes:
        return self.png

    @value.setter
    def value(self, png: bytes) -> None:
        self.show(png)

    def show(self, png: bytes) -> None:
        """Show a PNG at its natural pixel size (the ``width`` attribute), hiding the hint."""
        width, height = png_size(png)
        self.png = png
        self.image.value = png
        self.image.width, self.image.height = str(width), str(height)
        self.image.layout.display = None
        self.hint.layout.display = "none"
        if self.image not in self.widget.children:
            self.widget.children = (*self.widget.children, self.image)


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels from a PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@torch.no_grad()
def project(features: torch.Tensor, method: str = "pca") -> Any:
    """``(N, D)`` features -> ``(N, 2)`` numpy points by PCA or t-SNE (scikit-learn)."""
    x = features.float()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = max(2.0, min(30.0, (len(x) - 1) / 3))
        return TSNE(2, init="pca", perplexity=perplexity, random_state=0).fit_transform(x.numpy())
    x = x - x.mean(dim=0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).numpy()


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
