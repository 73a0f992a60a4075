"""The annotation assistant: label the samples the model is least sure of, then retrain.

Why: labelling is the expensive part of transfer learning. Asking a person about the samples the
current model finds hardest (active learning) usually reaches a given accuracy with far fewer
labels than labelling at random; confident predictions can be accepted in bulk for the price of
a glance.

Two layers, in two modules:

* :class:`ActiveLearner` (:mod:`tlkit.notebook.active_learning`, importable from here too) -- no
  widgets: pool bookkeeping, query selection through the plugin registry (family ``"query"``,
  hook ``tlkit_query_scores``), retraining on the grown labelled set, and the learning curve
  (test accuracy against the number of human labels). Usable from a script or a benchmark with
  a simulated annotator::

      learner = ActiveLearner(few_labels(load("digits"), k=1), backbone="small_cnn")
      learner.retrain()
      for _ in range(10):
          picks = learner.query(10)
          learner.label([p.index for p in picks], annotator([p.index for p in picks]))
          learner.retrain()
      learner.curve  # [{"human_labels": 0, "accuracy": ...}, ...]

* :class:`AnnotationAssistant` (this module) -- the ipywidgets front end on top of a learner:
  image cards with the suggested label, one click to correct or accept, bulk-accept above a
  confidence, Retrain, and the live learning curve.
"""

from __future__ import annotations

import io
import threading
import time
from html import escape
from typing import Any

import torch

from tlkit.datasets.domain import UNLABELLED, Domain, DomainPair
from tlkit.hookspecs import hookimpl
from tlkit.notebook.active_learning import (  # noqa: F401 (re-exported: their historical home)
    ACCEPTED,
    DEFAULT_FIT_OPTIONS,
    HUMAN,
    ActiveLearner,
    Suggestion,
    split_pool,
)

#: Card image size in pixels: with the cards' grid (four columns of at least 150 px), eight cards
#: and the buttons above them fit one 1100 x 800 screen with JupyterLab's file browser open.
CARD_PX = 56


def sample_png(image: torch.Tensor, size: int = CARD_PX) -> bytes:
    """One ``uint8`` ``(C, H, W)`` image as a square PNG for a card: small images (digits) are
    enlarged pixel by pixel, photos cut to their centre square and shrunk smoothly."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    w, h = pil.size
    if w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        pil = pil.crop((left, top, left + side, top + side))
    shrink = min(w, h) > size
    pil = pil.resize((size, size), Image.LANCZOS if shrink else Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def sample_text(domain: Domain, index: int, limit: int = 8) -> str:
    """A short HTML line for one non-image sample: its first feature values (named when the
    domain's ``info`` has ``feature_names``) or its first token ids."""
    x = domain.backing.load(index).flatten()
    if x.is_floating_point():
        names = list(domain.info.get("feature_names") or [f"x{i}" for i in range(len(x))])
        items = [f"{escape(str(n))}={float(v):.3g}" for n, v in zip(names, x.tolist())]
    else:
        pad = int(domain.info.get("padding_id", 0))
        items = [str(t) for t in x.tolist() if t != pad]
        items = [f"{len(items)} tokens:", *items]
    more = " …" if len(items) > limit else ""
    return f"<code style='font-size:11px'>{' '.join(items[:limit])}{more}</code>"


def sample_widget(domain: Domain, index: int, size: int = CARD_PX) -> Any:
    """The card's view of one pool sample: the image (decoded from its file when the domain is
    file-backed), or a line of text for feature rows and token ids."""
    import ipywidgets as w

    px = f"{size}px"
    if domain.modality == "image":
        from tlkit.datasets.decode import DecodeError

        try:
            image = domain.backing.load(index)
        except DecodeError:
            image = torch.full((3, size, size), 128, dtype=torch.uint8)
        return w.Image(
            value=sample_png(image, size),
            layout=w.Layout(width=px, height=px, flex="0 0 auto", align_self="flex-start"),
        )
    return w.HTML(sample_text(domain, index), layout=w.Layout(width=f"{2 * size}px"))


def button_width(classes) -> str:
    """A toggle width that fits the longest class name with the button's padding (about
    0.65em per character plus 2.4em: the book's widget style pads more than JupyterLab's), so
    "airplane" is not cut to "airp…" and a digit is not cut to "0…"."""
    longest = max(len(str(c)) for c in classes)
    return f"{0.65 * longest + 2.4:.1f}em"


class _TrainingProgress:
    """An observer putting "training on N labels: step s/S" into the assistant's status."""

    def __init__(self, assistant: AnnotationAssistant, what: str) -> None:
        self.assistant, self.what = assistant, what
        self.start = time.perf_counter()
        self._shown = 0.0

    def show(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.assistant.status.value = (
            f"<b>{escape(self.what)}</b> · {escape(text)} · {elapsed:.0f} s"
        )

    @hookimpl
    def tlkit_on_step_end(self, trainer: Any) -> None:
        now = time.perf_counter()
        if now - self._shown >= 0.25:
            self._shown = now
            s = trainer.state
            self.show(f"step {s.step}/{s.total_steps}")


class _Card:
    """One sample: its image, the suggestion, an Accept button and one toggle per class."""

    def __init__(self, assistant: AnnotationAssistant, s: Suggestion) -> None:
        import ipywidgets as w

        self.assistant, self.suggestion = assistant, s
        classes = assistant.learner.classes
        # fixed size, so the row's height does not stretch the image
        self.image = sample_widget(assistant.learner.pool, s.index)
        self.info = w.HTML(self._info_html(None))
        self.accept = w.Button(
            description=f"accept {classes[s.label]}", icon="check", layout=w.Layout(width="auto")
        )
        self.choice = w.ToggleButtons(
            options=list(classes), value=None, style={"button_width": button_width(classes)}
        )
        self._quiet = False
        self.accept.on_click(lambda _: self.set_label(s.label))
        self.choice.observe(self._chosen, names="value")
        self.widget = w.VBox(
            [w.HBox([self.image, self.info]), self.accept, self.choice],
            layout=w.Layout(border="1px solid #ddd", padding="4px", width="auto"),
        )
        self.widget.add_class("tlkit-card")

    def _info_html(self, given: int | None) -> str:
        s, classes = self.suggestion, self.assistant.learner.classes
        text = f"#{s.index}<br>model: <b>{escape(classes[s.label])}</b> ({s.confidence:.0%})"
        if given is not None:
            # the chosen label must be obvious at a glance (a selected toggle is faint grey)
            text += (
                "<br><span class='tlkit-given' style='background:#1b7f3b;color:white;"
                f"padding:1px 8px;border-radius:3px;font-weight:bold'>✔ {escape(classes[given])}"
                "</span>"
            )
        return text

    def _chosen(self, change: dict) -> None:
        if change["new"] is not None and not self._quiet:
            self.set_label(self.assistant.learner.classes.index(change["new"]))

    def set_label(self, label: int) -> None:
        done = self.assistant._guard(self.assistant.learner.label, [self.suggestion.index], [label])
        if not done:
            return
        self.show(label)
        self.assistant._update_status()

    def show(self, label: int | None) -> None:
        """Show the pool label (``None``: unlabelled, e.g. after an undo)."""
        self.info.value = self._info_html(label)
        self.accept.disabled = label is not None
        self.widget.layout.border = "2px solid #1b7f3b" if label is not None else "1px solid #ddd"
        self._quiet = True  # reflect the label without labelling again
        try:
            self.choice.value = None if label is None else self.assistant.learner.classes[label]
        finally:
            self._quiet = False


class AnnotationAssistant:
    """The widget: ask, click the right label (or accept), bulk-accept after a preview, undo,
    retrain in the background, see the curve.

    Display it as the last expression of a cell. Every button is also a method (``ask``,
    ``retrain``, ``accept_confident``, ``undo``) so a script or a test can drive it; training
    runs in a thread (the kernel stays free) and :meth:`wait` joins it.
    """

    def __init__(self, learner: ActiveLearner, *, batch: int = 8) -> None:
        import ipywidgets as w

        self.learner = learner
        self.batch = batch
        self.cards: list[_Card] = []
        self.last_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._busy = False
        self.status = w.HTML()
        self.error = w.HTML()
        auto = w.Layout(width="auto")
        self.ask_button = w.Button(description="Ask next", icon="question", layout=auto)
        self.retrain_button = w.Button(description="Retrain", icon="refresh", layout=auto)
        self.undo_button = w.Button(description="Undo", icon="undo", layout=auto, disabled=True)
        self.min_confidence = w.FloatSlider(
            value=0.95,
            min=0.5,
            max=1.0,
            step=0.01,
            description="min confidence",
            style={"description_width": "auto"},
            layout=w.Layout(width="22em"),
        )
        self.accept_button = w.Button(description="Accept confident", icon="check", layout=auto)
        self.preview = w.HTML()
        self.preview_images = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.curve = w.Image(  # natural size: a flex column would stretch it to its width
            format="png",
            layout=w.Layout(
                display="none", width="auto", max_width="100%", align_self="flex-start", margin="0"
            ),
        )
        self.grid = w.GridBox(
            layout=w.Layout(
                grid_template_columns="repeat(auto-fill, minmax(150px, 1fr))", grid_gap="4px"
            )
        )
        self.ask_button.on_click(lambda _: self._guard(self.ask))
        self.retrain_button.on_click(lambda _: self._guard(self.retrain))
        self.accept_button.on_click(lambda _: self._guard(self.accept_confident))
        self.undo_button.on_click(lambda _: self._guard(self.undo))
        self.min_confidence.observe(lambda _: self._guard(self.update_preview), names="value")
        controls = w.HBox(
            [self.ask_button, self.retrain_button, self.undo_button],
            layout=w.Layout(flex_flow="row wrap"),
        )
        bulk = w.VBox(
            [
                w.HBox(
                    [self.min_confidence, self.accept_button],
                    layout=w.Layout(flex_flow="row wrap", align_items="center"),
                ),
                self.preview,
                self.preview_images,
            ]
        )
        self.widget = w.VBox([controls, self.status, self.error, self.grid, bulk, self.curve])
        for name in ("widget", "status", "error", "grid", "preview"):
            getattr(self, name).add_class(f"tlkit-annotate-{name}")
        self._update_status()
        self.update_preview()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run an action; show an error message in the widget instead of a traceback."""
        self.error.value = ""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the widget reports every failure
            self.last_error = exc
            self.error.value = (
                f"<div class='tlkit-error' style='color:#b00020'><b>{type(exc).__name__}:</b> "
                f"{escape(str(exc))}</div>"
            )
            return None

    @property
    def training(self) -> bool:
        """Whether a model is being trained in the background."""
        return self._busy

    def _update_status(self) -> None:
        lr = self.learner
        acc = lr.curve[-1]["accuracy"] if lr.curve else None
        acc_text = f"{acc:.1%}" if acc is not None else "no model yet (Ask next trains one)"
        self.status.value = (
            f"{lr.human_labels} human labels · {lr.accepted_labels} accepted · "
            f"{len(lr.unlabelled_indices())} unlabelled · test accuracy {acc_text} · "
            f"query: {escape(lr.query_name)}"
        )
        self.undo_button.disabled = not lr.can_undo

    def _set_busy(self, busy: bool) -> None:
        for button in (self.ask_button, self.retrain_button, self.accept_button):
            button.disabled = busy

    def _in_background(self, what: str, then: Any = None) -> threading.Thread:
        """Train (``learner.retrain``) in a thread with a truthful status, then run ``then``."""
        if self.training:
            raise RuntimeError("a model is already training; wait for it to finish.")
        progress = _TrainingProgress(self, what)
        progress.show("starting")
        self._busy = True
        self._set_busy(True)

        def work() -> None:
            try:
                self.learner.retrain(observers=[progress])
                self.learner.pool_outputs()  # score the pool here, not on the next click
                self._draw_curve()
                if then is not None:
                    then()
            except Exception as exc:  # noqa: BLE001 - reported in the widget
                self._guard(_raise, exc)
            finally:
                self._busy = False
                self._set_busy(False)
                self._update_status()
                self.update_preview()

        self._thread = threading.Thread(target=work, name="tlkit-annotate", daemon=True)
        self._thread.start()
        return self._thread

    def wait(self, timeout: float | None = None) -> None:
        """Block until background training (and the next batch of cards) is done."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _draw_curve(self) -> None:
        from tlkit.notebook.live import figure_png

        self.curve.value = figure_png(self.learner.plot_curve())
        self.curve.layout.display = None

    def _show_batch(self) -> list[Suggestion]:
        picks = self.learner.query(self.batch)
        self.cards = [_Card(self, s) for s in picks]
        self.grid.children = [c.widget for c in self.cards]
        self._update_status()
        return picks

    def ask(self) -> list[Suggestion] | threading.Thread:
        """Show the next batch of samples the model is least sure of. Without a model yet, it
        trains the first one in the background (and says so) and shows the batch after."""
        if self.learner.run is None:
            n = self.learner.num_labelled
            return self._in_background(f"training the first model on {n} labels", self._show_batch)
        return self._show_batch()

    def retrain(self) -> threading.Thread:
        """Retrain on every label so far in the background; then redraw the curve and ask
        about the next batch. Labels given meanwhile count for the next retrain."""
        n = self.learner.num_labelled
        return self._in_background(f"retraining on {n} labels", self._show_batch)

    def accept_confident(self) -> int:
        """Accept every unlabelled suggestion at least ``min_confidence`` sure (the preview
        shows which); :meth:`undo` takes the whole batch back."""
        if self.learner.run is None:
            raise RuntimeError("no model yet: press Ask next (it trains one) before accepting.")
        n = self.learner.accept_suggestions(self.min_confidence.value)
        self._sync_cards()
        self._update_status()
        self.update_preview()
        return n

    def undo(self) -> list[int]:
        """Take back the last labelling action (a click, an accept, or a bulk accept)."""
        touched = self.learner.undo()
        self._sync_cards()
        self._update_status()
        self.update_preview()
        return touched

    def _sync_cards(self) -> None:
        labels = self.learner.pool_labels
        for card in self.cards:
            k = int(labels[card.suggestion.index])
            card.show(None if k == UNLABELLED else k)

    def update_preview(self) -> None:
        """Say how many suggestions *Accept confident* would take, by class, with examples."""
        import ipywidgets as w

        if self.learner.run is None or self.training:
            self.preview.value = (
                "<i style='color:#777'>bulk accept: a preview appears once a model is trained</i>"
            )
            self.preview_images.children = []
            self.accept_button.description = "Accept confident"
            return
        picks = self.learner.preview_accept(self.min_confidence.value)
        classes = self.learner.classes
        per_class: dict[str, int] = {}
        for p in picks:
            per_class[classes[p.label]] = per_class.get(classes[p.label], 0) + 1
        spread = ", ".join(f"{escape(c)}: {n}" for c, n in sorted(per_class.items()))
        self.accept_button.description = f"Accept {len(picks)}"
        self.accept_button.disabled = not picks
        self.preview.value = (
            f"Accept confident would label <b>{len(picks)}</b> images at ≥ "
            f"{self.min_confidence.value:.0%} confidence ({spread or 'none'}); the least sure "
            "of them below. Undo takes a bulk accept back."
        )
        shown = picks[-8:][::-1]  # the least confident ones: where mistakes would be
        self.preview_images.children = [
            w.VBox(
                [
                    sample_widget(self.learner.pool, p.index, 48),
                    w.HTML(f"<small>{escape(classes[p.label])} {p.confidence:.0%}</small>"),
                ]
            )
            for p in shown
        ]


def _raise(exc: BaseException) -> None:
    raise exc


def annotate(task: DomainPair | str, **options: Any) -> AnnotationAssistant:
    """Build an :class:`ActiveLearner` (``options`` go to it) and its assistant widget."""
    batch = options.pop("batch", 8)
    return AnnotationAssistant(ActiveLearner(task, **options), batch=batch)


__all__ = ["ActiveLearner", "AnnotationAssistant", "Suggestion", "annotate", "split_pool"]
