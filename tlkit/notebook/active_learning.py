"""Active learning without widgets: the pool, the queries and the labelling state.

:class:`ActiveLearner` keeps the pool bookkeeping (who labelled what, undo), asks the plugin
registry's ``"query"`` strategies (hook ``tlkit_query_scores``) which samples to label next,
retrains on the grown labelled set and keeps the learning curve. It lives apart from its
ipywidgets front end (:mod:`tlkit.notebook.annotate`, which imports it and re-exports these
names) so that the logic reads on its own and a script or a benchmark with a simulated annotator
needs nothing of the UI.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

from tlkit import registry
from tlkit.backbone_choice import check_backbone, default_backbone
from tlkit.datasets.concat import concat_domains
from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.domain_outputs import domain_outputs, worker_count
from tlkit.engine import hooks
from tlkit.engine.batch_plan import batch_sizes, resolve_batch_size

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
    run: Any, domain: Domain, batch_size: int, num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax probabilities ``(N, K)`` and backbone features ``(N, D)`` of every sample of
    ``domain``, in eval mode, on CPU, read as the run's evaluation reads them; and a mask
    ``(N,)`` of the samples that could not be read (uniform probabilities, zero features)."""
    p = domain_outputs(run, domain, batch_size=batch_size, num_workers=num_workers)
    n = len(domain)
    probs = torch.full((n, p.outputs.shape[1]), 1.0 / p.outputs.shape[1])
    feats = torch.zeros(n, p.features.shape[1])
    probs[p.indices] = p.outputs.softmax(dim=1)
    feats[p.indices] = p.features
    unread = torch.ones(n, dtype=torch.bool)
    unread[p.indices] = False
    return probs, feats, unread


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

    Any backing works: in-memory images, feature rows and token ids, image files and shards
    (decoded in DataLoader workers, the pool with the run's evaluation transform; a file that
    cannot be read is never asked about).

    Args:
        task: a :class:`DomainPair` (or a bundled dataset name); see :func:`split_pool`.
        backbone: any backbone name ``tlkit.fit`` accepts that reads the data (default: one
            for its kind: ``small_cnn``, ``mlp`` or ``text_bag``); a wrong one is refused here,
            before any training.
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
        backbone: str | None = None,
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
        if backbone is None:
            backbone = default_backbone(self.pool)
        check_backbone(self.pool, backbone, "the annotation assistant")
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
        self._unread = torch.zeros(len(self.pool), dtype=torch.bool)
        self._workers = 0 if self.pool.in_memory else worker_count(
            self.fit_options.get("num_workers", "auto")
        )

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
        """Pool samples without a label (files the model could not read are left out)."""
        return ((self.pool_labels == UNLABELLED) & ~self._unread).nonzero().flatten()

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
        parts, labels = [], []
        if self.seed_set is not None and self.seed_set.num_labelled:
            m = self.seed_set.labelled_mask.nonzero().flatten()
            parts.append(self.seed_set.subset(m))
            labels.append(self.seed_set.labels[m])
        if len(have):
            parts.append(self.pool.subset(have))
            labels.append(self.pool_labels[have])
        if not parts:
            raise DataError("nothing is labelled yet: label a few samples before retraining.")
        domain = concat_domains(
            parts, torch.cat(labels), name=f"{self.task.name}-labelled", classes=self.classes
        )
        return DomainPair(source=domain, name=domain.name)

    def _epochs(self, n: int) -> int:
        batch = resolve_batch_size(self.fit_options.get("batch_size", "auto"), n)
        per_epoch = len(batch_sizes(n, batch))  # every sample trains: the last batch may be short
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
            probs, feats, self._unread = _outputs(self.run, self.pool, batch_size, self._workers)
            self._outputs = probs, feats
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
            seeds = self.seed_set.labelled_mask.nonzero().flatten()
            p = domain_outputs(
                self.run, self.seed_set, seeds, outputs=False, num_workers=self._workers
            )
            labelled.append(p.features)
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
        if n <= 0 or not bool((self.pool_labels == UNLABELLED).any()):
            return []
        self.pool_outputs()  # first: it finds the files that cannot be read
        cand = self.unlabelled_indices()
        if len(cand) == 0:
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


__all__ = [
    "ACCEPTED",
    "DEFAULT_FIT_OPTIONS",
    "HUMAN",
    "ActiveLearner",
    "Suggestion",
    "split_pool",
]
