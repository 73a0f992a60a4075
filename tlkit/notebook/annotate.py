"""The annotation assistant: label the samples the model is least sure of, then retrain.

Why: labelling is the expensive part of transfer learning. Asking a person about the samples the
current model finds hardest (active learning) usually reaches a given accuracy with far fewer
labels than labelling at random; confident predictions can be accepted in bulk for the price of
a glance.

Two layers:

* :class:`ActiveLearner` -- no widgets: pool bookkeeping, query selection through the plugin
  registry (family ``"query"``, hook ``tlkit_query_scores``), retraining on the grown labelled
  set, and the learning curve (test accuracy against the number of human labels). Usable from a
  script or a benchmark with a simulated annotator::

      learner = ActiveLearner(few_labels(load("digits"), k=1), backbone="small_cnn")
      learner.retrain()
      for _ in range(10):
          picks = learner.query(10)
          learner.label([p.index for p in picks], annotator([p.index for p in picks]))
          learner.retrain()
      learner.curve  # [{"human_labels": 0, "accuracy": ...}, ...]

* :class:`AnnotationAssistant` -- the ipywidgets front end on top of a learner: image cards with
  the suggested label, one click to correct or accept, bulk-accept above a confidence, Retrain,
  and the live learning curve.
"""

from __future__ import annotations

import inspect
import io
import math
import threading
import time
from dataclasses import dataclass
from html import escape
from typing import Any

import torch

from tlkit import registry
from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.engine import hooks
from tlkit.engine.evaluate import predict
from tlkit.hookspecs import hookimpl

#: Where a pool label came from.
HUMAN, ACCEPTED = "human", "accepted"

#: fit() options the learner uses unless told otherwise (tuned for a small CNN on few labels).
DEFAULT_FIT_OPTIONS: dict[str, Any] = {"batch_size": 32, "lr": 3e-3, "mode": "full"}


@dataclass(frozen=True)
class Suggestion:
    """One pool sample the learner asks about, with the model's guess."""

    index: int
    label: int
    confidence: float
    score: float


def _load_task(task: DomainPair | str, seed: int) -> DomainPair:
    if isinstance(task, str):
        from tlkit.datasets import load

        return load(task, seed=seed)
    if not isinstance(task, DomainPair):
        raise DataError(f"ActiveLearner needs a DomainPair or a dataset name, got {type(task)}.")
    return task


def split_pool(task: DomainPair) -> tuple[Domain | None, Domain, Domain | None]:
    """``(labelled seed set, unlabelled pool, test set)`` of a task.

    The pool is the task's ``target`` when it has one (e.g. ``few_labels(load("digits"), k)``),
    else the source's unlabelled samples.
    """
    test = task.target_test if task.target_test is not None else task.source_test
    src = task.source
    if task.target is not None:
        return src, task.target, test
    unl = (~src.labelled_mask).nonzero().flatten()
    if len(unl) == 0:
        raise DataError(
            f"task '{task.name}' has no unlabelled samples to annotate; hide labels with "
            "tlkit.datasets.few_labels(task, k) first."
        )
    lab = src.labelled_mask.nonzero().flatten()
    seed_set = src.subset(lab) if len(lab) else None
    return seed_set, src.subset(unl, f"{src.name}-pool"), test


@torch.no_grad()
def _outputs(
    model: Any, images: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and backbone features of ``images``, in eval mode, on CPU."""
    p = predict(model, images, batch_size=batch_size)
    return p.outputs.softmax(dim=1), p.features


def _query_plugin_manager(query: Any, seed: int):
    (name, options), *rest = registry.normalize_selection(query) or [("margin", {})]
    if rest:
        raise registry.PluginError("query= takes one strategy at a time.")
    info = registry.get(name, "query")
    if inspect.isclass(info.obj) and "seed" in inspect.signature(info.obj).parameters:
        options = {"seed": seed, **options}
    return name, registry.make_plugin_manager([(info, options)])


class ActiveLearner:
    """Pool-based active learning on a tlkit task, independent of any widget.

    Args:
        task: a :class:`DomainPair` (or a bundled dataset name); see :func:`split_pool`.
        backbone: any backbone name ``tlkit.fit`` accepts.
        query: a ``"query"`` strategy name (``"margin"``, ``"max_entropy"``, ``"random"``...) or
            ``(name, {options})``; strategies taking a ``seed`` get this learner's ``seed``.
        steps: optimisation steps per retrain (epochs follow from the labelled-set size, so a
            retrain costs the same with 10 labels as with 500).
        seed: seeds training and seeded query strategies.
        **fit_options: more :func:`tlkit.fit` options (``lr``, ``batch_size``, ``image_size``...).
    """

    def __init__(
        self,
        task: DomainPair | str,
        backbone: str = "small_cnn",
        query: Any = "margin",
        *,
        steps: int = 200,
        seed: int = 0,
        **fit_options: Any,
    ) -> None:
        self.task = _load_task(task, seed)
        if self.task.task != "classification":
            raise DataError("the annotation assistant handles classification tasks only.")
        self.seed_set, self.pool, self.test = split_pool(self.task)
        self.backbone = backbone
        self.steps = int(steps)
        self.seed = seed
        self.fit_options = {**DEFAULT_FIT_OPTIONS, **fit_options}
        self.query_name, self._pm = _query_plugin_manager(query, seed)
        self.pool_labels = torch.full((len(self.pool),), UNLABELLED, dtype=torch.long)
        self.label_origin: dict[int, str] = {}
        #: one entry per labelling action: ``[(index, previous label, previous origin)]``
        self._undo: list[list[tuple[int, int, str | None]]] = []
        self.run: Any = None
        self.curve: list[dict[str, Any]] = []
        self._outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- facts ---------------------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        return self.task.classes or tuple(str(i) for i in range(self.task.num_classes))

    @property
    def human_labels(self) -> int:
        """Labels a person gave one by one (clicks, single accepts)."""
        return sum(1 for o in self.label_origin.values() if o == HUMAN)

    @property
    def accepted_labels(self) -> int:
        """Model suggestions accepted in bulk."""
        return sum(1 for o in self.label_origin.values() if o == ACCEPTED)

    @property
    def num_labelled(self) -> int:
        """Every training label: the seed set plus the labelled pool samples."""
        base = self.seed_set.num_labelled if self.seed_set is not None else 0
        return base + int((self.pool_labels != UNLABELLED).sum())

    def unlabelled_indices(self) -> torch.Tensor:
        return (self.pool_labels == UNLABELLED).nonzero().flatten()

    def label_accuracy(self) -> dict[str, float]:
        """Fraction of pool labels equal to the pool's clean labels, by origin (simulations)."""
        out = {}
        clean = self.pool.clean_labels
        for origin in (HUMAN, ACCEPTED):
            idx = [i for i, o in self.label_origin.items() if o == origin and clean[i] >= 0]
            if idx:
                t = torch.tensor(idx)
                out[origin] = float((self.pool_labels[t] == clean[t]).float().mean())
        return out

    # -- labels --------------------------------------------------------------------------------
    def _class_id(self, label: int | str) -> int:
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        try:
            k = int(label)
        except (TypeError, ValueError):
            raise DataError(f"unknown label {label!r}; classes are {list(self.classes)}.") from None
        if not 0 <= k < len(self.classes):
            raise DataError(f"label {k} is outside [0, {len(self.classes)}).")
        return k

    def label(self, indices: Any, labels: Any, *, origin: str = HUMAN) -> int:
        """Record labels for pool samples (class ids or names); returns how many were given."""
        idx = [int(i) for i in torch.as_tensor(indices).flatten().tolist()]
        labels = list(labels) if not isinstance(labels, torch.Tensor) else labels.tolist()
        if len(idx) != len(labels):
            raise DataError(f"{len(idx)} indices but {len(labels)} labels.")
        for i in idx:
            if not 0 <= i < len(self.pool):
                raise DataError(f"pool index {i} is outside [0, {len(self.pool)}).")
        ids = [self._class_id(y) for y in labels]  # every label is checked before any is kept
        if idx:
            self._undo.append(
                [(i, int(self.pool_labels[i]), self.label_origin.get(i)) for i in idx]
            )
        for i, k in zip(idx, ids):
            self.pool_labels[i] = k
            self.label_origin[i] = origin
        return len(idx)

    def undo(self) -> list[int]:
        """Take back the last labelling action (a click, an accept, or a whole bulk accept);
        returns the pool indices it touched (empty when there is nothing to undo)."""
        if not self._undo:
            return []
        action = self._undo.pop()
        for i, previous, origin in reversed(action):
            self.pool_labels[i] = previous
            if origin is None:
                self.label_origin.pop(i, None)
            else:
                self.label_origin[i] = origin
        return [i for i, _, _ in action]

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def accept_suggestions(self, min_confidence: float = 0.95, indices: Any = None) -> int:
        """Accept the model's label for unlabelled samples at least this confident.

        ``indices`` limits it to some pool samples (e.g. the ones on screen). Returns the number
        accepted; they count as ``accepted_labels``, not human labels.
        """
        picks = self.preview_accept(min_confidence, indices)
        return self.label([p.index for p in picks], [p.label for p in picks], origin=ACCEPTED)

    def preview_accept(self, min_confidence: float = 0.95, indices: Any = None) -> list[Suggestion]:
        """What :meth:`accept_suggestions` would accept, most confident first (nothing is
        labelled): look before accepting in bulk."""
        probs, _ = self.pool_outputs()
        cand = self.unlabelled_indices()
        if indices is not None:
            wanted = torch.as_tensor(indices, dtype=torch.long).flatten()
            cand = cand[torch.isin(cand, wanted)]
        conf, pred = probs[cand].max(dim=1)
        keep = (conf >= min_confidence).nonzero().flatten()
        order = keep[conf[keep].argsort(descending=True, stable=True)]
        return [Suggestion(int(cand[j]), int(pred[j]), float(conf[j]), 0.0) for j in order.tolist()]

    # -- model ---------------------------------------------------------------------------------
    def labelled_task(self) -> DomainPair:
        """The seed set plus every labelled pool sample, as a task without test sets."""
        have = (self.pool_labels != UNLABELLED).nonzero().flatten()
        parts_x, parts_y, parts_c = [], [], []
        if self.seed_set is not None and self.seed_set.num_labelled:
            m = self.seed_set.labelled_mask
            parts_x.append(self.seed_set.images[m])
            parts_y.append(self.seed_set.labels[m])
            parts_c.append(self.seed_set.clean_labels[m])
        if len(have):
            parts_x.append(self.pool.images[have])
            parts_y.append(self.pool_labels[have])
            parts_c.append(self.pool.clean_labels[have])
        if not parts_x:
            raise DataError("nothing is labelled yet: label a few samples before retraining.")
        domain = Domain(
            torch.cat(parts_x),
            torch.cat(parts_y),
            torch.cat(parts_c),
            classes=self.classes,
            name=f"{self.task.name}-labelled",
        )
        return DomainPair(source=domain, name=domain.name)

    def _epochs(self, n: int) -> int:
        per_epoch = max(1, n // int(self.fit_options.get("batch_size", 64)))
        return max(1, math.ceil(self.steps / per_epoch))

    def retrain(self, observers: Any = ()) -> Any:
        """Train a fresh model on every label so far, evaluate it, extend the curve; the Run.

        The labels are read once at the start, so labels given meanwhile (from a widget while
        this runs in a thread) count for the next retrain, and the curve stays truthful.
        ``observers`` go to :func:`tlkit.fit` (e.g. to show progress).
        """
        from tlkit.api import fit

        counts = {
            "human_labels": self.human_labels,
            "accepted_labels": self.accepted_labels,
            "labelled": self.num_labelled,
        }
        pair = self.labelled_task()
        options = {"progress": False, "seed": self.seed, **self.fit_options}
        run = fit(
            pair,
            self.backbone,
            epochs=self._epochs(len(pair.source)),
            observers=list(observers),
            **options,
        )
        accuracy = run.evaluate(self.test)["accuracy"] if self.test is not None else None
        self.run, self._outputs = run, None
        self.curve.append({**counts, "accuracy": accuracy})
        return self.run

    def pool_outputs(self, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probs (N, K), features (N, D))`` of the current model on the whole pool
        (trains the first model if there is none yet)."""
        if self.run is None:
            self.retrain()
        if self._outputs is None:
            self._outputs = _outputs(self.run.model, self.pool.images, batch_size)
        return self._outputs

    # -- queries -------------------------------------------------------------------------------
    def scores(self, indices: torch.Tensor, budget: int = 1) -> torch.Tensor:
        """The query strategy's scores for these pool samples (higher = ask first), when
        ``budget`` samples will be asked about next."""
        probs, feats = self.pool_outputs()
        indices = torch.as_tensor(indices, dtype=torch.long)
        have = (self.pool_labels != UNLABELLED).nonzero().flatten()
        labelled = [feats[have]]
        if self.seed_set is not None and self.seed_set.num_labelled:
            seed_images = self.seed_set.images[self.seed_set.labelled_mask]
            labelled.append(_outputs(self.run.model, seed_images, 256)[1])
        out = hooks.query_scores(
            self._pm,
            len(indices),
            probs=probs[indices],
            features=feats[indices],
            labelled_features=torch.cat(labelled),
            budget=int(budget),
            model=self.run.model.eval(),
            pool=self.pool.subset(indices),
        )
        if out is None:
            raise registry.PluginError(f"query strategy '{self.query_name}' returned no scores.")
        return out

    def suggest(self, indices: Any) -> list[Suggestion]:
        """The model's label and confidence for some pool samples (score 0: not a query)."""
        probs, _ = self.pool_outputs()
        idx = torch.as_tensor(indices, dtype=torch.long).flatten()
        conf, pred = probs[idx].max(dim=1)
        return [
            Suggestion(int(i), int(p), float(c), 0.0)
            for i, p, c in zip(idx.tolist(), pred.tolist(), conf.tolist())
        ]

    def query(self, n: int = 10) -> list[Suggestion]:
        """The ``n`` unlabelled samples to ask about next, most useful first."""
        cand = self.unlabelled_indices()
        if len(cand) == 0 or n <= 0:
            return []
        scores = self.scores(cand, budget=n)
        top = scores.topk(min(n, len(cand))).indices
        picks = self.suggest(cand[top])
        return [
            Suggestion(p.index, p.label, p.confidence, float(scores[t]))
            for p, t in zip(picks, top.tolist())
        ]

    # -- display -------------------------------------------------------------------------------
    def plot_curve(self, fig: Any = None) -> Any:
        """Test accuracy against the number of human labels (a pyplot-free Figure)."""
        from tlkit.notebook.live import new_figure

        fig = fig if fig is not None else new_figure(5, 3.2)
        fig.clear()
        ax = fig.subplots()
        pts = [(c["human_labels"], c["accuracy"]) for c in self.curve if c["accuracy"] is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=3, label=self.query_name)
            ax.legend(fontsize=8)
        from matplotlib.ticker import MaxNLocator

        ax.set(xlabel="human labels", ylabel="test accuracy", title="learning curve")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no "0.5 labels"
        ax.grid(alpha=0.3)
        return fig


# -- the widget -------------------------------------------------------------------------------
#: Card image size in pixels: eight cards fit one screen at 1100 px.
CARD_PX = 84


def sample_png(image: torch.Tensor, size: int = CARD_PX) -> bytes:
    """One ``uint8`` ``(C, H, W)`` image as an upscaled PNG for a card."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    pil = pil.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


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
        px = f"{CARD_PX}px"  # fixed, so the row's height does not stretch the image
        self.image = w.Image(
            value=sample_png(assistant.learner.pool.images[s.index]),
            layout=w.Layout(width=px, height=px, flex="0 0 auto", align_self="flex-start"),
        )
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
            [w.HBox([self.image, w.VBox([self.info, self.accept])]), self.choice],
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
                grid_template_columns="repeat(auto-fill, minmax(250px, 1fr))", grid_gap="6px"
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
                    w.Image(
                        value=sample_png(self.learner.pool.images[p.index], 48),
                        layout=w.Layout(width="48px", height="48px", flex="0 0 auto"),
                    ),
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
