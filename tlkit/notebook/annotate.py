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
from dataclasses import dataclass
from html import escape
from typing import Any

import torch

from tlkit import registry
from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.engine import hooks

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
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs, feats = [], []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255)
            f = model.features(x)
            probs.append(model.head(f).float().softmax(dim=1).cpu())
            feats.append(f.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(probs), torch.cat(feats)


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
        for i, y in zip(idx, labels):
            if not 0 <= i < len(self.pool):
                raise DataError(f"pool index {i} is outside [0, {len(self.pool)}).")
            self.pool_labels[i] = self._class_id(y)
            self.label_origin[i] = origin
        return len(idx)

    def accept_suggestions(self, min_confidence: float = 0.95, indices: Any = None) -> int:
        """Accept the model's label for unlabelled samples at least this confident.

        ``indices`` limits it to some pool samples (e.g. the ones on screen). Returns the number
        accepted; they count as ``accepted_labels``, not human labels.
        """
        probs, _ = self.pool_outputs()
        cand = self.unlabelled_indices()
        if indices is not None:
            wanted = torch.as_tensor(indices, dtype=torch.long).flatten()
            cand = cand[torch.isin(cand, wanted)]
        conf, pred = probs[cand].max(dim=1)
        keep = conf >= min_confidence
        return self.label(cand[keep], pred[keep], origin=ACCEPTED)

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

    def retrain(self) -> Any:
        """Train a fresh model on every label so far, evaluate it, extend the curve; the Run."""
        from tlkit.api import fit

        pair = self.labelled_task()
        options = {"progress": False, "seed": self.seed, **self.fit_options}
        self.run = fit(pair, self.backbone, epochs=self._epochs(len(pair.source)), **options)
        self._outputs = None
        accuracy = self.run.evaluate(self.test)["accuracy"] if self.test is not None else None
        self.curve.append(
            {
                "human_labels": self.human_labels,
                "accepted_labels": self.accepted_labels,
                "labelled": self.num_labelled,
                "accuracy": accuracy,
            }
        )
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
        ax.set(xlabel="human labels", ylabel="test accuracy", title="learning curve")
        ax.grid(alpha=0.3)
        return fig


# -- the widget -------------------------------------------------------------------------------
def sample_png(image: torch.Tensor, size: int = 72) -> bytes:
    """One ``uint8`` ``(C, H, W)`` image as an upscaled PNG for a card."""
    from PIL import Image

    arr = image.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    pil = pil.resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def button_width(classes) -> str:
    """A toggle width that fits the longest class name (about 0.65em per character plus the
    button's padding), so "airplane" is not cut to "airp…" and digits stay compact."""
    longest = max(len(str(c)) for c in classes)
    return f"{0.65 * longest + 1.6:.1f}em"


class _Card:
    """One sample: its image, the suggestion, an Accept button and one toggle per class."""

    def __init__(self, assistant: AnnotationAssistant, s: Suggestion) -> None:
        import ipywidgets as w

        self.assistant, self.suggestion = assistant, s
        classes = assistant.learner.classes
        self.image = w.Image(value=sample_png(assistant.learner.pool.images[s.index]))
        self.info = w.HTML(self._info_html(None))
        self.accept = w.Button(description=f"accept {classes[s.label]}", icon="check")
        self.accept.layout.width = "auto"
        self.choice = w.ToggleButtons(
            options=list(classes), value=None, style={"button_width": button_width(classes)}
        )
        self.accept.on_click(lambda _: self.set_label(s.label))
        self.choice.observe(self._chosen, names="value")
        self.widget = w.VBox([self.image, self.info, self.accept, self.choice])
        self.widget.layout.border = "1px solid #ddd"
        self.widget.layout.padding = "4px"

    def _info_html(self, given: int | None) -> str:
        s, classes = self.suggestion, self.assistant.learner.classes
        text = f"#{s.index}: model says <b>{escape(classes[s.label])}</b> ({s.confidence:.0%})"
        if given is not None:
            text += f"<br>labelled <b>{escape(classes[given])}</b> ✔"
        return text

    def _chosen(self, change: dict) -> None:
        if change["new"] is not None:
            self.set_label(self.assistant.learner.classes.index(change["new"]))

    def set_label(self, label: int) -> None:
        done = self.assistant._guard(self.assistant.learner.label, [self.suggestion.index], [label])
        if not done:
            return
        self.info.value = self._info_html(label)
        self.accept.disabled = True
        self.assistant._update_status()


class AnnotationAssistant:
    """The widget: ask, click the right label (or accept), bulk-accept, retrain, see the curve.

    Display it as the last expression of a cell. Every button is also a method (``ask``,
    ``retrain``, ``accept_confident``) so a script or a test can drive it.
    """

    def __init__(self, learner: ActiveLearner, *, batch: int = 8) -> None:
        import ipywidgets as w

        self.learner = learner
        self.batch = batch
        self.cards: list[_Card] = []
        self.status = w.HTML()
        self.error = w.HTML()
        self.ask_button = w.Button(description="Ask next", icon="question")
        self.retrain_button = w.Button(description="Retrain", icon="refresh")
        self.min_confidence = w.FloatSlider(
            value=0.95, min=0.5, max=1.0, step=0.01, description="min conf."
        )
        self.accept_button = w.Button(description="Accept confident", icon="check-double")
        self.curve = w.Image(format="png")
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns="repeat(4, auto)"))
        self.ask_button.on_click(lambda _: self._guard(self.ask))
        self.retrain_button.on_click(lambda _: self._guard(self.retrain))
        self.accept_button.on_click(lambda _: self._guard(self.accept_confident))
        controls = w.HBox(
            [self.ask_button, self.retrain_button, self.min_confidence, self.accept_button]
        )
        self.widget = w.VBox([controls, self.status, self.error, self.grid, self.curve])
        self._update_status()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run an action; show an error message in the widget instead of a traceback."""
        self.error.value = ""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the widget reports every failure
            self.error.value = (
                f"<div class='tlkit-error' style='color:#b00020'><b>{type(exc).__name__}:</b> "
                f"{escape(str(exc))}</div>"
            )
            return None

    def _update_status(self) -> None:
        lr = self.learner
        acc = lr.curve[-1]["accuracy"] if lr.curve else None
        acc_text = f"{acc:.1%}" if acc is not None else "not trained yet"
        self.status.value = (
            f"{lr.human_labels} human labels · {lr.accepted_labels} accepted · "
            f"{len(lr.unlabelled_indices())} unlabelled · test accuracy {acc_text} · "
            f"query: {escape(lr.query_name)}"
        )

    def ask(self) -> list[Suggestion]:
        """Show the next batch of samples the model is least sure of."""
        picks = self.learner.query(self.batch)
        self.cards = [_Card(self, s) for s in picks]
        self.grid.children = [c.widget for c in self.cards]
        self._update_status()
        return picks

    def retrain(self) -> Any:
        """Retrain on every label so far, redraw the curve, and ask about the next batch."""
        from tlkit.notebook.live import figure_png

        self.status.value = "retraining…"
        run = self.learner.retrain()
        self.curve.value = figure_png(self.learner.plot_curve())
        self.ask()
        return run

    def accept_confident(self) -> int:
        """Accept every unlabelled suggestion at least ``min_confidence`` sure."""
        n = self.learner.accept_suggestions(self.min_confidence.value)
        self._update_status()
        return n


def annotate(task: DomainPair | str, **options: Any) -> AnnotationAssistant:
    """Build an :class:`ActiveLearner` (``options`` go to it) and its assistant widget."""
    batch = options.pop("batch", 8)
    return AnnotationAssistant(ActiveLearner(task, **options), batch=batch)


__all__ = ["ActiveLearner", "AnnotationAssistant", "Suggestion", "annotate", "split_pool"]
