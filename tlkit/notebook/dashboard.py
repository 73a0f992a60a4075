"""The training dashboard: pick data, backbone and strategies, train, watch, stop, compare.

Why a widget on top of :func:`tlkit.fit`: trying strategies is the core loop of transfer
learning, and a form with live curves makes that loop fast for people who do not want to edit
code between runs. Design choices:

* The choices come from the plugin registry (``tlkit.strategies(family)``) when the dashboard is
  built and on *Refresh*, so a strategy registered in a cell or installed from a package shows
  up without any change here.
* Setup (data, model, strategy checks) runs in the click handler, so a bad option or an
  impossible combination is reported in the widget at once -- as a message, not a traceback.
  Training then runs in a background thread: the notebook stays usable, and *Stop* asks the
  trainer to end at the next batch boundary (``trainer.request_stop()``).
* Each run checkpoints into its own folder under a temporary directory, so a stopped run keeps
  its ``best.pt`` (written whenever the monitored metric improves) and ``last.pt``.
* Figures are drawn without pyplot (see :mod:`tlkit.notebook.live`), safe from the thread.
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import torch

from tlkit import registry
from tlkit.datasets.domain import DomainPair
from tlkit.engine.config import MODES, ConfigError, FitConfig
from tlkit.engine.evaluate import evaluate_model, predict_features
from tlkit.hookspecs import hookimpl
from tlkit.notebook import live

#: FitConfig fields the form sets itself; other fields may be passed to the constructor.
_FORM_FIELDS = (
    "backbone",
    "epochs",
    "lr",
    "batch_size",
    "image_size",
    "mode",
    "loss",
    "pseudo_label",
    "adapt",
    "regularize",
    "seed",
)
_FIT_FIELDS = set(FitConfig.__dataclass_fields__)


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


class _Observer:
    """Feeds the dashboard's progress bar, status line and confusion matrix from the trainer."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.d = dashboard

    @hookimpl
    def tlkit_on_fit_start(self, trainer: Any) -> None:
        self.d.progress.max = max(1, trainer.state.total_steps)
        self.d.progress.value = trainer.state.step

    @hookimpl
    def tlkit_on_step_end(self, trainer: Any, logs: dict[str, float]) -> None:
        self.d.progress.value = trainer.state.step
        if logs:
            self.d._status(trainer, logs)

    @hookimpl
    def tlkit_on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self.d._status(trainer, metrics, ended=epoch)
        self.d._draw_confusion(trainer)


class Dashboard:
    """The training dashboard; display it as the last expression of a cell.

    Args:
        data: extra tasks by name (your own ``DomainPair``), listed before the bundled ones.
        dataset: the task selected at first (default: the first of ``data``, else
            ``"synth-digits->digits"``).
        backbone, epochs, lr, batch_size, image_size (0 = the backbone's default), mode, loss,
        pseudo_label, adapt, regularize, seed: the form's initial values.
        checkpoint_root: where each run's checkpoint folder goes (default: a fresh temp dir).
        redraw_interval: seconds between two redraws of the curves within an epoch.
        **fit_options: other :class:`tlkit.FitConfig` fields used for every run
            (``log_every``, ``max_steps``, ``augment``...).

    Every button is also a method -- :meth:`train`, :meth:`stop`, :meth:`refresh`,
    :meth:`refresh_embedding` -- and :meth:`wait` joins the training thread.
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
        mode: str = "full",
        loss: str = "auto",
        pseudo_label: str | None = None,
        adapt: tuple[str, ...] | list[str] = (),
        regularize: tuple[str, ...] | list[str] = (),
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
        self.checkpoint_root = Path(checkpoint_root or tempfile.mkdtemp(prefix="tlkit-dash-"))
        self.redraw_interval = redraw_interval
        self.runs: list[RunRecord] = []
        self.run: Any = None
        self.last_error: BaseException | None = None
        self._trainer: Any = None
        self._thread: threading.Thread | None = None
        self._active = False
        self._tasks: dict[tuple[str, int], DomainPair] = {}
        self._task: DomainPair | None = None
        self._build_widgets()
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
            seed=seed,
        )
        for name, value in initial.items():
            self._initial(getattr(self, name), name, value)

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

        desc = {"description_width": "7em"}
        self.dataset = w.Dropdown(description="dataset", style=desc)
        self.backbone = w.Dropdown(description="backbone", style=desc)
        self.loss = w.Dropdown(description="loss", style=desc)
        self.pseudo_label = w.Dropdown(description="pseudo-label", style=desc)
        self.adapt = w.SelectMultiple(description="adapt", rows=4, style=desc)
        self.regularize = w.SelectMultiple(description="regularize", rows=2, style=desc)
        self.epochs = w.IntText(description="epochs", style=desc)
        self.lr = w.FloatText(description="lr", style=desc)
        self.batch_size = w.IntText(description="batch size", style=desc)
        self.image_size = w.IntText(description="image size", style=desc, tooltip="0 = default")
        self.mode = w.Dropdown(options=list(MODES), description="mode", style=desc)
        self.seed = w.IntText(description="seed", style=desc)
        self.train_button = w.Button(description="Train", button_style="success", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.stop_button.disabled = True
        self.progress = w.IntProgress(value=0, min=0, max=1, description="progress")
        self.status = w.HTML("ready")
        self.error = w.HTML("")
        self.curves = w.Image(format="png")
        self.confusion = w.Image(format="png")
        self.embedding = w.Image(format="png")
        self.embedding_method = w.Dropdown(options=["pca", "tsne"], description="method")
        self.embedding_button = w.Button(description="Refresh embedding", icon="refresh")
        self.compare_table = w.HTML("<i>no finished runs yet</i>")
        self.compare_plot = w.Image(format="png")
        self.train_button.on_click(lambda _: self.train())
        self.stop_button.on_click(lambda _: self.stop())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.embedding_button.on_click(lambda _: self._guard(self.refresh_embedding))
        form = w.HBox(
            [
                w.VBox([self.dataset, self.backbone, self.loss, self.pseudo_label, self.mode]),
                w.VBox([self.adapt, self.regularize]),
                w.VBox([self.epochs, self.lr, self.batch_size, self.image_size, self.seed]),
            ]
        )
        buttons = w.HBox([self.train_button, self.stop_button, self.refresh_button])
        tabs = w.Tab(
            children=[
                self.curves,
                self.confusion,
                w.VBox([w.HBox([self.embedding_method, self.embedding_button]), self.embedding]),
                w.VBox([self.compare_table, self.compare_plot]),
            ],
            titles=("curves", "confusion matrix", "embedding", "compare runs"),
        )
        self.widget = w.VBox([form, buttons, self.progress, self.status, self.error, tabs])
        for name in ("widget", "progress", "status", "error", "curves", "confusion"):
            getattr(self, name).add_class(f"tlkit-{name}")  # stable hooks for CSS and tests

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
        self._set_options(self.adapt, strategy_names("adapt"))
        self._set_options(self.regularize, strategy_names("regularizer"))

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
        self.status.value = f"{where} · step {s.step}/{s.total_steps} · {escape(shown)}"

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
            "seed": self.seed.value,
        }

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
            trainer = self._make_trainer(task, config)
        except Exception as exc:  # noqa: BLE001 - any setup failure is shown, not raised
            self._show_error(exc)
            return None
        record = RunRecord(number, self.dataset.value, options, folder)
        self.runs.append(record)
        self._task, self._trainer = task, trainer
        self._set_running(True)
        self.status.value = f"run #{number}: starting…"
        self._thread = threading.Thread(
            target=self._train_thread, args=(trainer, record), name="tlkit-dashboard", daemon=True
        )
        self._thread.start()
        return record

    def _make_trainer(self, task: DomainPair, config: FitConfig) -> Any:
        from tlkit.engine.trainer import Trainer

        self._live = live.LiveCurves(
            live.WidgetSink(self.curves), min_interval=self.redraw_interval
        )
        return Trainer(task, config, observers=[_Observer(self), self._live])

    def _train_thread(self, trainer: Any, record: RunRecord) -> None:
        start = time.perf_counter()
        try:
            record.run = trainer.fit()
            self.run = record.run
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
        run = record.run
        if run is None:
            self.status.value = f"run #{record.number} failed"
        else:
            done = f"stopped after {len(run.history)} epoch(s)" if run.stopped_early else "done"
            best = record.best_checkpoint
            kept = f"best checkpoint: {best}" if best else "no epoch ended, so no best.pt"
            self.status.value = f"run #{record.number} {done} · {escape(kept)}"

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

    # -- figures -------------------------------------------------------------------------------
    def _eval_domain(self, task: DomainPair) -> tuple[str, Any] | None:
        for name in ("target_test", "source_test"):
            if getattr(task, name) is not None:
                return name, getattr(task, name)
        return None

    def _draw_confusion(self, trainer: Any) -> None:
        found = self._eval_domain(trainer.data)
        if found is None or trainer.task != "classification":
            return
        name, domain = found
        model = trainer.ema.module if trainer.ema is not None else trainer.model
        cm = evaluate_model(model, domain, batch_size=trainer.config.eval_batch_size)
        fig = live.draw_confusion(
            live.new_figure(4.5, 4), cm["confusion_matrix"], trainer.data.classes, name
        )
        self.confusion.value = live.figure_png(fig)

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
        fig = live.draw_embedding(live.new_figure(4.5, 4), points, groups)
        self.embedding.value = live.figure_png(fig)

    def _update_comparison(self) -> None:
        done = [r for r in self.runs if r.run is not None]
        self.compare_table.value = comparison_html(self.runs)
        if not done:
            return
        metrics = []
        for r in done:
            metrics += [k for k in live.held_out_keys(r.run.history) if k not in metrics]
        runs = [(r.label, r.run.history) for r in done]
        fig = live.draw_comparison(live.new_figure(10, 3.2), runs, ["train_loss", *metrics])
        self.compare_plot.value = live.figure_png(fig)


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
    """The runs side by side: options, epochs, held-out metrics, best checkpoint."""
    if not records:
        return "<i>no runs yet</i>"
    metric_keys: list[str] = []
    for r in records:
        if r.run is not None:
            metric_keys += [k for k in live.held_out_keys(r.run.history) if k not in metric_keys]
    head = ["run", "dataset", "epochs", "status", *metric_keys, "best", "seconds"]
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
        cells += [best_text, f"{r.seconds:.1f}"]
        rows.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table class='tlkit-runs'><tr>{header}</tr>{''.join(rows)}</table>"


__all__ = ["Dashboard", "RunRecord", "comparison_html", "project", "strategy_names"]
