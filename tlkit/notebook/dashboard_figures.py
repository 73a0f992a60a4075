"""The dashboard's figure areas: learning curves, confusion matrix, embedding, run comparison
and source -> target translations, each in its own tab.

:class:`Dashboard <tlkit.notebook.dashboard.Dashboard>` inherits :class:`_FigureAreas`, which
builds the tabs and draws into them; :class:`_Figure` is one image area (a hint until the first
figure, then the PNG at its natural size). tlkit's figures are drawn without pyplot (see
:mod:`tlkit.notebook.live`); the source -> target grid is :func:`tlkit.plots.source_to_target_grid`
of the strategies' previews. It is a module of its own so that :mod:`tlkit.notebook.dashboard` reads as the
dashboard's layout and training loop; the public names stay importable from there.
"""

from __future__ import annotations

import copy
import csv
from html import escape
from pathlib import Path
from typing import Any

import torch

from tlkit.hookspecs import SourcePreview
from tlkit.notebook import live
from tlkit.notebook.embedding import embedding_features


class _FigureAreas:
    """The figure half of :class:`~tlkit.notebook.dashboard.Dashboard` (a mixin): the tabs below
    the form and what draws into them. Reads the dashboard's ``runs``, ``run``, ``running``,
    ``_trainer``, ``_task``, ``checkpoint_root`` and ``_guard``."""

    def _build_figure_tabs(self) -> Any:
        """Create the figure areas, the run comparison and the export button; the tabs."""
        import ipywidgets as w

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
        self.embedding_button.on_click(lambda _: self._guard(self.refresh_embedding))
        self.export_button.on_click(lambda _: self._guard(self.export))
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
        return tabs

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
        """Source images next to their target-style versions, for runs with a strategy that
        previews its transform of the source batch (:class:`tlkit.hookspecs.SourcePreview`:
        PixelDA's generator, FDA's spectrum swap, a third party's)."""
        if not any(isinstance(p, SourcePreview) for p in trainer.strategies.values()):
            return
        import matplotlib.pyplot as plt

        from tlkit.plots import source_to_target_grid

        try:
            fig = source_to_target_grid(trainer, trainer.data.source, trainer.target, n=8)
        except ValueError as exc:  # data the preview cannot show (a preview says why)
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
        # files are read as the model's evaluation reads them: its size and resize rule
        owner = self._trainer if self.running else self.run
        feeder = getattr(owner, "feeder", None)
        resize = feeder.source.resize if feeder is not None else None
        feats, groups = embedding_features(
            model, self._task, image_size=getattr(owner, "image_size", None),
            resize=resize or (getattr(owner, "spec", None) or {}).get("resize"),
        )  # fmt: skip
        points = project(feats, self.embedding_method.value)
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
