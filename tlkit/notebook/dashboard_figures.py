"""The dashboard's figure areas: learning curves, confusion matrix, embedding, run comparison
and source -> target translations, each in its own tab.

:class:`FigureAreas` builds the tabs and draws into them from what it is given (a trainer, a
model, the run records); :class:`Figure` is one image area (a hint until the first figure, then
the PNG at its natural size). tlkit's figures are drawn without pyplot (see
:mod:`tlkit.notebook.live`); the source -> target grid is :func:`tlkit.plots.source_to_target_grid`
of the strategies' previews.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from html import escape
from typing import Any

import torch

from tlkit.datasets.domain import DomainPair
from tlkit.hookspecs import SourcePreview
from tlkit.notebook import live
from tlkit.notebook.dashboard_runs import RunRecord, comparison_html
from tlkit.notebook.embedding import embedding_features


class FigureAreas:
    """The tabs below the form and what draws into them. The buttons of the embedding and
    compare tabs are created here and wired by the dashboard (they need its runs)."""

    def __init__(self) -> None:
        import ipywidgets as w

        self.curves = Figure(
            "Learning curves appear here while a run trains (press Train).", "curves"
        )
        self.confusion = Figure(
            "The confusion matrix on the held-out set appears after each epoch.", "confusion"
        )
        self.embedding = Figure(
            "After a run, press Refresh embedding to project source and target features to 2-d.",
            "embedding",
        )
        self.embedding_method = w.Dropdown(
            options=["pca", "tsne"], description="method", layout=w.Layout(width="12em")
        )
        self.embedding_button = w.Button(
            description="Refresh embedding", icon="refresh", layout=w.Layout(width="auto")
        )
        self.translations = Figure(
            "Pixel-level adaptation (adapt 'pixelda' or 'fda') shows source images and their "
            "target-style versions here after a run.",
            "translations",
        )
        self.lr_finder = Figure("", "lr-finder")  # shown when a run's lr is "find"
        self.compare_table = w.HTML("<i>no finished runs yet</i>")
        self.compare_plot = Figure("One curve per run and metric, once a run has finished.")
        self.export_button = w.Button(
            description="Export CSV + PNG",
            icon="download",
            tooltip="into a new tlkit-export-... folder beside the notebook",
            layout=w.Layout(width="auto", min_width="max-content", flex="0 0 auto"),
        )
        self.export_note = w.HTML(layout=w.Layout(min_width="0"))
        self.tabs = w.Tab(
            children=[
                w.VBox([self.curves.widget, self.lr_finder.widget]),
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
                        self.compare_table,
                        w.HBox(
                            [self.export_button, self.export_note],
                            layout=w.Layout(flex_flow="row wrap", align_items="center"),
                        ),
                        self.compare_plot.widget,
                    ]
                ),
                self.translations.widget,
            ],
            titles=("curves", "confusion matrix", "embedding", "compare runs", "source → target"),
        )

    def draw_confusion(self, trainer: Any) -> None:
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

    def draw_lr_finder(self, finder: Any) -> bytes:
        """The learning-rate finder's sweep (loss against rate, the pick marked), below the
        curves; the PNG."""
        from matplotlib.figure import Figure as PlainFigure

        fig = PlainFigure(figsize=(6, 3.2))  # pyplot-free; the finder lays it out itself
        finder.plot(fig.add_subplot())
        png = live.figure_png(fig)
        self.lr_finder.show(png)
        return png

    def draw_translations(self, trainer: Any) -> bytes | None:
        """Source images next to their target-style versions, for runs with a strategy that
        previews its transform of the source batch (:class:`tlkit.hookspecs.SourcePreview`:
        PixelDA's generator, FDA's spectrum swap, a third party's); the PNG, or None."""
        if not any(isinstance(p, SourcePreview) for p in trainer.strategies.values()):
            return None
        import matplotlib.pyplot as plt

        from tlkit.plots import source_to_target_grid

        try:
            fig = source_to_target_grid(trainer, trainer.data.source, trainer.target, n=8)
        except ValueError as exc:  # data the preview cannot show (a preview says why)
            self.translations.hint.value = f"<i style='color:#777'>no grid: {escape(str(exc))}</i>"
            return None
        try:
            png = live.figure_png(fig)
        finally:
            plt.close(fig)
        self.translations.show(png)
        return png

    def draw_embedding(self, model: Any, task: DomainPair, owner: Any) -> None:
        """Project source and target features of ``model`` to 2-d (PCA or t-SNE); ``owner`` (a
        trainer or a Run) says how its evaluation reads files (size and resize rule)."""
        model = copy.deepcopy(model).cpu().eval()  # a snapshot, safe while training goes on
        feeder = getattr(owner, "feeder", None)
        resize = feeder.source.resize if feeder is not None else None
        feats, groups = embedding_features(
            model, task, image_size=getattr(owner, "image_size", None),
            resize=resize or (getattr(owner, "spec", None) or {}).get("resize"),
        )  # fmt: skip
        points = project(feats, self.embedding_method.value)
        fig = live.draw_embedding(live.new_figure(4.6, 4.2), points, groups)
        self.embedding.show(live.figure_png(fig))

    def show_comparison(self, records: Sequence[RunRecord]) -> None:
        """The compare tab: the runs' table and, once one has finished, their curves."""
        self.compare_table.value = comparison_html(list(records))
        png = comparison_png(records)
        if png:
            self.compare_plot.show(png)

    def pngs(self, records: Sequence[RunRecord]) -> dict[str, bytes]:
        """The figures worth a file, by name: the comparison and what the tabs show."""
        shown = {"comparison": comparison_png(records, dpi=110)}
        names = ("curves", "lr_finder", "confusion", "embedding")
        shown.update({n: getattr(self, n).png for n in names})
        return {name: png for name, png in shown.items() if png}


def comparison_png(records: Sequence[RunRecord], dpi: int = 80) -> bytes:
    """Finished runs' curves side by side (train loss and each held-out metric); empty before."""
    done = [r for r in records if r.run is not None]
    if not done:
        return b""
    metrics: list[str] = []
    for r in done:
        metrics += [k for k in live.held_out_keys(r.run.history) if k not in metrics]
    runs = [(r.label, r.run.history) for r in done]
    keys = ["train_loss", *metrics]
    fig = live.draw_comparison(live.new_figure(3.0 * len(keys) + 1, 3.0), runs, keys)
    return live.figure_png(fig, dpi=dpi)


class Figure:
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
