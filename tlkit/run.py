"""Run: what a fit returns -- the trained model, its history, evaluation, plots and saving."""

from __future__ import annotations

import base64
import io
import warnings
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tlkit.backbones import create_model
from tlkit.backbones.base import TransferModel
from tlkit.datasets.domain import DataError, DataWarning, Domain, DomainPair
from tlkit.engine import checkpoint
from tlkit.engine.checkpoint import load_weights
from tlkit.engine.config import FitConfig, count_option
from tlkit.engine.evaluate import batches_of, evaluate_model, predict
from tlkit.errors import CheckpointError, ConfigError
from tlkit.prediction_table import prediction_domain, prediction_table, unread

if TYPE_CHECKING:
    from tlkit.engine.lr_finder import LRFinder


class Run:
    """A finished (or stopped) training run.

    Attributes:
        model: the trained :class:`TransferModel`: the last epoch's weights, or with
            ``restore_best=True`` the best epoch's (``restored_from`` says which).
        history: one dict per epoch (``pandas.DataFrame(run.history)`` gives a table).
        step_logs: losses logged every ``log_every`` steps, for finer curves.
        best: ``{"metric", "value", "epoch"}`` of the monitored metric.
        config: the :class:`FitConfig` used.
        stop_reason: why the run ended before its last epoch (``patience=``), else ``None``.
        restored_from: ``{"epoch", "metric", "value"}`` that chose the returned weights
            (``restore_best=True``), else ``None``.
        lr_finder: what ``lr="find"`` swept (``.suggestion``, ``.plot()``), kept by
            :meth:`save` and by the training checkpoints (``last.pt`` / ``best.pt``);
            ``None`` for a given lr.
    """

    def __init__(
        self,
        model: TransferModel,
        config: FitConfig,
        *,
        history: list[dict[str, Any]] | None = None,
        step_logs: list[dict[str, float]] | None = None,
        best: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
        data: DomainPair | None = None,
        stopped_early: bool = False,
        stop_reason: str | None = None,
        restored_from: dict[str, Any] | None = None,
        lr_finder: LRFinder | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.history = history or []
        self.step_logs = step_logs or []
        self.best = best or {}
        self.spec = spec or {}
        self.data = data
        self.stopped_early = stopped_early
        self.stop_reason = stop_reason
        self.restored_from = restored_from
        self.lr_finder = lr_finder
        self.pretrain_run: Run | None = None  # fit_two_stage: the stage-1 run

    @classmethod
    def from_trainer(cls, trainer: Any) -> Run:
        """The result of a :class:`tlkit.Trainer` (called by ``Trainer.fit``)."""
        # With EMA on, the history was measured with the averaged weights: return those.
        model = trainer.ema.module if trainer.ema is not None else trainer.model
        model.eval()  # ready for inference: run.model(x) must not update BatchNorm statistics
        return cls(
            model,
            trainer.config,
            history=trainer.history,
            step_logs=trainer.step_logs,
            best=trainer.best,
            spec=trainer.model_spec(),
            data=trainer.data,
            stopped_early=trainer.state.stopped_early,
            stop_reason=trainer.stopping.reason,
            restored_from=trainer.stopping.restored,
            lr_finder=getattr(trainer, "lr_finder", None),  # set when lr="find" swept
        )

    # -- facts -----------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.spec.get("classes", []))

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def last(self) -> dict[str, Any]:
        """The last epoch's row of the history (empty before the first epoch ends)."""
        return self.history[-1] if self.history else {}

    def to_dataframe(self):
        """The history as a pandas DataFrame (pandas is optional; install it for this)."""
        import pandas as pd

        return pd.DataFrame(self.history).set_index("epoch")

    # -- use -------------------------------------------------------------------------------
    def evaluate(
        self,
        data: Domain | DomainPair | None = None,
        *,
        batch_size: int = 256,
        device=None,
        num_workers: int = 0,
    ) -> dict[str, Any]:
        """Metrics on a domain (its clean labels), or on every held-out set of a task.

        Classification: ``accuracy``, ``per_class_accuracy`` and ``confusion_matrix``;
        regression: ``mae`` and ``rmse``. A task gives ``{"source": {...}, "target": {...}}``.
        File-backed domains are decoded with the run's evaluation transform (resize, centre crop
        at the training size) in ``num_workers`` DataLoader workers.
        """
        data = data if data is not None else self.data
        if data is None:
            raise DataError("evaluate() needs data: run.evaluate(task.target_test), say.")
        if isinstance(data, DomainPair):
            sets = data.eval_sets()
            if not sets:
                raise DataError(f"task '{data.name}' has no test sets to evaluate on.")
            return {
                name: self.evaluate(
                    d, batch_size=batch_size, device=device, num_workers=num_workers
                )
                for name, d in sets.items()
            }
        if data.task == "classification" and data.num_classes != self.model.out_features:
            raise DataError(
                f"'{data.name}' has {data.num_classes} classes but the model predicts "
                f"{self.model.out_features}; evaluate on data with the training label set."
            )
        return evaluate_model(
            self.model,
            data,
            batch_size=batch_size,
            device=device,
            image_size=self.image_size,
            num_workers=num_workers,
            resize=self.spec.get("resize", "crop"),
        )

    @property
    def image_size(self) -> int | None:
        """The side images are cropped to for this model (file-backed data), if known."""
        return self.spec.get("image_size") or self.model.backbone.input_size

    def predict(
        self,
        data: torch.Tensor | Domain | str | Path | list,
        *,
        batch_size: int = 256,
        top_k: int = 3,
        num_workers: int = 0,
        progress: bool = True,
    ):
        """Predictions.

        * Images (or a tensor domain's rows) as a tensor: class ids ``(N,)`` (regression: the
          outputs ``(N, D)``), as a tensor.
        * A :class:`Domain`, a folder of images, a CSV of paths (column ``path``), one image path
          or a list of paths -- for a text model (trained on a :class:`tlkit.Tokenizer`'s
          domain) a list of raw strings: a ``pandas.DataFrame`` with one row per sample -- ``path``
          (``index`` for in-memory samples), ``label`` (the class name), ``class_id``,
          ``probability``, and the ``top_k`` classes and probabilities (``top_labels``,
          ``top_probabilities``, lists); for regression, ``prediction``. Files are decoded in
          ``num_workers`` DataLoader workers, with a progress bar; files get an ``error``
          column, empty where the file was read and the reason where it was not (that row has
          no prediction), and one warning names the unreadable files.
        """
        batch_size = count_option("batch_size", batch_size, minimum=1)
        top_k = count_option("top_k", top_k, minimum=1)
        num_workers = count_option("num_workers", num_workers, minimum=0)
        if isinstance(data, torch.Tensor):
            outputs = self.predict_outputs(data, batch_size=batch_size)
            return outputs.argmax(dim=1) if self.task == "classification" else outputs
        domain = prediction_domain(data, getattr(self.model.backbone, "tokenizer", None))
        resize = self.spec.get("resize", "crop")
        with warnings.catch_warnings():  # one warning below names every unreadable file
            warnings.simplefilter("ignore", DataWarning)
            p = predict(
                self.model,
                _progress(domain, batch_size, self.image_size, num_workers, progress, resize),
                batch_size=batch_size,
            )
        failures = unread(domain, p.indices)
        if failures:
            _, first, why = failures[0]
            warnings.warn(
                f"{len(failures)} of {len(domain)} files could not be read and have no "
                f"prediction (e.g. '{first}': {why}); their rows say why in the 'error' column.",
                DataWarning,
                stacklevel=2,
            )
        return prediction_table(
            domain, p.outputs, p.indices, self.task, self.classes, top_k, failures
        )

    def predict_proba(
        self, images: torch.Tensor | Domain, *, batch_size: int = 256
    ) -> torch.Tensor:
        """Class probabilities ``(N, K)``."""
        return self.predict_outputs(images, batch_size=batch_size).softmax(dim=1)

    def predict_outputs(
        self, images: torch.Tensor | Domain, *, batch_size: int = 256
    ) -> torch.Tensor:
        """Model outputs ``(N, K)`` for images, a tensor domain's rows or a Domain."""
        return predict(
            self.model,
            _as_inputs(images),
            batch_size=batch_size,
            image_size=self.image_size,
            resize=self.spec.get("resize", "crop"),
        ).outputs

    def features(self, images: torch.Tensor | Domain, *, batch_size: int = 256) -> torch.Tensor:
        """Backbone features ``(N, D)`` -- what the head sees -- for embeddings (PCA, t-SNE),
        nearest neighbours or a probe of your own. Eval mode: BatchNorm statistics are used,
        never updated."""
        return predict(
            self.model,
            _as_inputs(images),
            batch_size=batch_size,
            outputs=False,
            image_size=self.image_size,
            resize=self.spec.get("resize", "crop"),
        ).features

    def export(self, path: str | Path) -> Path:
        """Write the model for inference without tlkit: ``.pt2`` (``torch.export``) or
        ``.onnx`` (needs the ``[export]`` extra), any batch size. The program takes float
        images in [0, 1] at the run's size (normalisation inside) or a tensor domain's rows; the
        preprocessing and the class names are written beside it. See :mod:`tlkit.export`."""
        from tlkit.export import export_model

        return export_model(self, path)

    def suspicious_labels(
        self, data: Domain | None = None, *, method: str = "confident_learning", **options: Any
    ):
        """Training samples whose labels look wrong, most suspicious first.

        ``data`` defaults to the run's labelled source. ``method`` is ``"confident_learning"``
        (per-class confidence thresholds and the estimated noise joint, Northcutt et al. 2021)
        or ``"small_loss"`` (rank by the loss of the given label). Options pass through:
        ``prune=`` (``"by_class"``, the default; ``"by_pair"``, the paper's prune-by-noise-rate;
        ``"both"``...) and ``rank_by=`` (``"normalized_margin"`` or ``"self_confidence"``). A
        model scores its own training labels optimistically: out-of-fold probabilities
        (:func:`tlkit.cross_validation.cross_validated_suspicious_labels`) flag far better. See
        :func:`tlkit.label_issues.suspicious_labels`.
        """
        from tlkit.label_issues import suspicious_labels

        if data is None:
            if self.data is None:
                raise DataError("suspicious_labels() needs data: pass the labelled Domain.")
            data = self.data.source
        return suspicious_labels(self.model, data, method=method, **options)

    # -- saving ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model, its config and history (atomically) for :func:`tlkit.load`.

        Never leaves a partial file. When ``path`` cannot be written (a full disk, a read-only
        folder) the model goes to a new folder under the temporary directory instead, and the
        error (a :class:`~tlkit.engine.safe_write.SaveError`, an ``OSError``) says where."""
        data = checkpoint.payload(
            config=self.config,
            spec=self.spec,
            model=self.model,
            history=self.history,
            best=self.best,
            step_logs=self.step_logs,
            lr_finder=self.lr_finder.to_dict() if self.lr_finder is not None else None,
        )
        return checkpoint.write(data, path, rescue="the model")

    # -- display ---------------------------------------------------------------------------
    def plot(self, metrics: list[str] | None = None):
        """Learning curves: training losses (left) and held-out metrics (right), per epoch."""
        from tlkit.plots import plot_history

        return plot_history(self.history, metrics=metrics, title=self._title())

    def plot_confusion_matrix(self, data: Domain, *, normalize: bool = True):
        """The confusion matrix on ``data`` as a heat map."""
        from tlkit.plots import plot_confusion_matrix

        cm = self.evaluate(data)["confusion_matrix"]
        return plot_confusion_matrix(cm, self.classes, normalize=normalize, title=data.name)

    def _title(self) -> str:
        name = self.data.name if self.data is not None else "run"
        return f"{name} / {self.spec.get('backbone', '?')}"

    def _summary_rows(self) -> list[tuple[str, str]]:
        rows = [("backbone", str(self.spec.get("backbone"))), ("mode", self.config.mode)]
        rows.append(("epochs", f"{len(self.history)}/{self.config.epochs}"))
        for k, v in self.last.items():
            if k.endswith(("accuracy", "mae", "rmse", "loss")) and isinstance(v, float):
                rows.append((k, f"{v:.4f}"))
        if self.best.get("epoch"):
            rows.append(
                (
                    "best",
                    f"{self.best['metric']}={self.best['value']:.4f} @ epoch {self.best['epoch']}",
                )
            )
        if self.restored_from:
            kept = self.restored_from
            rows.append(
                ("model", f"epoch {kept['epoch']} (best {kept['metric']}={kept['value']:.4f})")
            )
        if self.stopped_early:
            rows.append(("stopped", self.stop_reason or "early (stop request or max_steps)"))
        return rows

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v}" for k, v in self._summary_rows())
        return f"Run({body})"

    def _repr_html_(self) -> str:
        """The summary table next to the learning curves, as one self-contained HTML block (the
        PNG is a ``data:`` URI: it survives saving the notebook, nbconvert and the static book)."""
        table = self.summary_html()
        png = self.curves_png()
        if png is None:
            return table
        src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        img = f"<img alt='learning curves' style='max-width:100%' src='{src}'/>"
        return (
            "<div style='display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start'>"
            f"<div>{table}</div><div>{img}</div></div>"
        )

    def curves_png(self, dpi: int = 72) -> bytes | None:
        """:meth:`plot` as PNG bytes (the figure is closed), or ``None`` without a history."""
        if not self.history:
            return None
        import matplotlib.pyplot as plt

        fig = self.plot()
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
            return buf.getvalue()
        finally:
            plt.close(fig)

    def summary_html(self) -> str:
        """The summary table alone, as HTML."""
        rows = "".join(
            f"<tr><th style='text-align:left'>{escape(k)}</th><td>{escape(v)}</td></tr>"
            for k, v in self._summary_rows()
        )
        return f"<table><caption>tlkit run: {escape(self._title())}</caption>{rows}</table>"


def _build_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    """The backbone's own constructor arguments (an MLP's input width, a text encoder's
    vocabulary); its dropout only matters in training, and ``dropout`` names the head's here."""
    kwargs = dict(spec.get("build_kwargs") or {})
    kwargs.pop("dropout", None)
    return kwargs


def _as_inputs(images: torch.Tensor | Domain) -> torch.Tensor | Domain:
    if isinstance(images, Domain):
        return images
    imgs = torch.as_tensor(images)
    return imgs.unsqueeze(1) if imgs.ndim == 3 and imgs.dtype == torch.uint8 else imgs


def _progress(
    domain: Domain, batch_size: int, image_size: int | None, workers: int, show: bool, resize: str
):
    """The domain's evaluation batches, with a progress bar for files."""
    batches = batches_of(domain, batch_size, image_size, workers, resize)
    if not show or domain.in_memory:
        return batches
    from tqdm.auto import tqdm

    total = -(-len(domain) // batch_size)
    return tqdm(batches, total=total, desc="predict", unit="batch", disable=None)  # not in logs


def load(path: str | Path, *, model: TransferModel | None = None, device: str = "cpu") -> Run:
    """Load a run saved with :meth:`Run.save` (or a trainer's ``best.pt`` / ``last.pt``).

    The architecture is rebuilt from the backbone name stored in the file; for a custom
    ``nn.Module`` backbone pass ``model=`` built the same way.
    """
    ckpt = checkpoint.read(path, map_location=device)
    spec = ckpt["model_spec"]
    try:
        config = FitConfig.from_dict(ckpt["config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint '{path}' has no usable config ({exc}).") from None
    if model is None:
        if spec.get("backbone") in (None, "custom"):
            raise CheckpointError(
                f"checkpoint '{path}' was trained with a custom nn.Module backbone; rebuild it "
                "and pass tlkit.load(path, model=tlkit.backbones.create_model(module, num_classes))."
            )
        try:
            model = create_model(
                spec["backbone"],
                spec["out_features"],
                task=spec["task"],
                pretrained=False,
                dropout=spec.get("dropout", 0.0),
                input_size=spec.get("input_size"),
                **_build_kwargs(spec),
            )
        except KeyError as exc:
            raise CheckpointError(
                f"checkpoint '{path}': its model description lacks {exc}; the file is damaged."
            ) from None
    # with EMA on, the averaged weights are the model the history measured (and Run.save keeps)
    weights = ckpt.get("ema") if isinstance(ckpt.get("ema"), dict) else None
    load_weights(model, weights or ckpt["model"], "model", path)
    history, best, step_logs = ckpt["history"], ckpt["best"], ckpt["step_logs"]
    return Run(
        model.to(device),
        config,
        history=list(history),
        step_logs=list(step_logs),
        best=dict(best),
        spec=spec,
        lr_finder=_lr_finder(ckpt.get("lr_finder"), path),
    )


def _lr_finder(saved: Any, path: str | Path) -> LRFinder | None:
    """The sweep a saved ``lr="find"`` run kept, or ``None``."""
    if saved is None:
        return None
    from tlkit.engine.lr_finder import LRFinder

    try:
        return LRFinder.from_dict(saved)
    except ValueError as exc:
        raise CheckpointError(
            f"checkpoint '{path}': its lr_finder record does not describe a sweep ({exc}). "
            "Load another copy of the run, or save it again with run.lr_finder = None."
        ) from None
