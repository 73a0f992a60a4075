r"""Find training samples whose labels look wrong, from a model's predicted probabilities.

Two detectors score every labelled sample of a :class:`~tlkit.datasets.Domain`:

* ``"confident_learning"`` -- Northcutt, Jiang & Chuang, "Confident Learning: Estimating
  Uncertainty in Dataset Labels", JAIR 2021. With predicted probabilities :math:`p_i` and given
  labels :math:`\tilde y_i`, each class gets a threshold, the mean self-confidence of the samples
  labelled with it, :math:`t_j = \operatorname{mean}_{i: \tilde y_i = j}\, p_{ij}`. Sample
  :math:`i` is *confidently* of class :math:`\hat y_i = \arg\max_{j: p_{ij} \ge t_j} p_{ij}`
  (when some class passes its threshold); the counts :math:`C_{\tilde y \hat y}` form the
  *confident joint* ``(K, K)``. A sample is flagged when it sits off its diagonal,
  :math:`\hat y_i \ne \tilde y_i` (cleanlab's ``filter_by="confident_learning"``). Rows are ranked
  by the normalised margin :math:`\max_{j \ne \tilde y_i} p_{ij} - p_{i\tilde y_i}` in [-1, 1].
* ``"small_loss"`` -- rank by the cross-entropy of the given label, :math:`-\log p_{i\tilde y_i}`
  (networks fit clean labels before noisy ones: Arpit et al., ICML 2017; Han et al.,
  "Co-teaching", NeurIPS 2018). Flagged: the ``expected_noise_rate`` fraction with the largest
  loss when that rate is given, else every sample whose loss exceeds :math:`\log K`, i.e. whose
  given label gets less probability than a uniform guess :math:`1/K`.

The probabilities should be *out-of-sample*: a model that has memorised the noisy labels agrees
with them. :func:`cross_validated_suspicious_labels` gets them from models trained on the other
folds and stopped after a few epochs, before they memorise; :func:`suspicious_labels` scores a
trained model (e.g. ``run.suspicious_labels()``), which is cheaper and weaker.

Shapes: probabilities ``(N, K)``, labels ``(N,)`` -> one row per labelled sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.engine.evaluate import predict_outputs

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from matplotlib.figure import Figure

    from tlkit.run import Run

METHODS = ("confident_learning", "small_loss")


@dataclass(repr=False, eq=False)
class SuspiciousLabels:
    """Labelled samples ranked by how suspicious their labels are, flagged ones first.

    Every array has one row per scored sample, in the same order: the flagged samples first
    (most suspicious first), then the others by decreasing score. ``len(s)`` is the number of
    flagged samples, so ``s.indices[: len(s)]`` are exactly the flagged positions.

    Attributes:
        indices: positions ``(N,)`` in the scored domain.
        given: the training labels ``(N,)`` as given.
        suggested: the model's prediction ``(N,)`` (argmax of the probabilities).
        scores: ``(N,)``; higher is more suspicious (margin or loss, see :attr:`method`).
        flagged: ``(N,)`` bool; which samples the detector calls mislabelled.
        method: ``"confident_learning"`` or ``"small_loss"``.
        confidence: the probability of the suggested label ``(N,)``.
        classes: class names, for display.
        confident_joint: ``(K, K)`` counts, rows given labels, columns confident classes
            (confident learning only).
    """

    indices: torch.Tensor
    given: torch.Tensor
    suggested: torch.Tensor
    scores: torch.Tensor
    flagged: torch.Tensor
    method: str
    confidence: torch.Tensor
    classes: tuple[str, ...] = ()
    confident_joint: torch.Tensor | None = field(default=None)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_probabilities(
        cls,
        probabilities: torch.Tensor,
        labels: torch.Tensor,
        *,
        method: str = "confident_learning",
        indices: torch.Tensor | None = None,
        classes: tuple[str, ...] | list[str] = (),
        expected_noise_rate: float | None = None,
    ) -> SuspiciousLabels:
        """Score samples from probabilities ``(N, K)`` and given labels ``(N,)`` (ids 0..K-1).

        ``indices`` ``(N,)`` are the samples' positions in their domain (default ``0..N-1``).
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {list(METHODS)}.")
        if expected_noise_rate is not None and not 0.0 <= expected_noise_rate < 1.0:
            raise ValueError(f"expected_noise_rate must be in [0, 1), got {expected_noise_rate}.")
        if expected_noise_rate is not None and method != "small_loss":
            raise ValueError(
                "expected_noise_rate sets how many samples method='small_loss' flags; confident "
                "learning estimates the noise itself. Leave it out, or use method='small_loss'."
            )
        probs = torch.as_tensor(probabilities).detach().float().cpu()
        labels = torch.as_tensor(labels).long().cpu()
        if probs.ndim != 2 or labels.shape != probs.shape[:1]:
            raise DataError(
                f"probabilities must be (N, K) and labels (N,); got {tuple(probs.shape)} and "
                f"{tuple(labels.shape)}."
            )
        n, k = probs.shape
        if n and (labels.min() < 0 or labels.max() >= k):
            raise DataError(
                f"labels must be class ids in [0, {k}); leave unlabelled samples (-1) out."
            )
        indices = torch.arange(n) if indices is None else torch.as_tensor(indices).long().cpu()
        p_given = probs.gather(1, labels.view(-1, 1)).squeeze(1)
        joint = None
        if method == "confident_learning":
            joint, confident_class = confident_joint(probs, labels)
            flagged = (confident_class >= 0) & (confident_class != labels)
            others = probs.scatter(1, labels.view(-1, 1), -1.0)
            scores = others.max(dim=1).values - p_given  # normalised margin, in [-1, 1]
        else:
            scores = -p_given.clamp_min(1e-12).log()
            if expected_noise_rate is not None:
                top = scores.argsort(descending=True, stable=True)[: round(expected_noise_rate * n)]
                flagged = torch.zeros(n, dtype=torch.bool)
                flagged[top] = True
            else:
                flagged = scores > math.log(k)
        order = torch.from_numpy(np.lexsort((-scores.numpy(), ~flagged.numpy())).copy())
        confidence, suggested = probs.max(dim=1)
        return cls(
            indices=indices[order],
            given=labels[order],
            suggested=suggested[order],
            scores=scores[order],
            flagged=flagged[order],
            method=method,
            confidence=confidence[order],
            classes=tuple(str(c) for c in classes),
            confident_joint=joint,
        )

    # -- facts -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.flagged.sum())

    @property
    def flagged_indices(self) -> torch.Tensor:
        """Positions of the flagged samples in the scored domain, most suspicious first."""
        return self.indices[self.flagged]

    def _name(self, c: int) -> str:
        return self.classes[c] if c < len(self.classes) else str(c)

    def precision_recall(self, domain: Domain | DomainPair, k: int | None = None) -> dict[str, Any]:
        """Compare the flags with the truth ``domain.labels != domain.clean_labels``.

        Needs the domain that was scored, with its clean labels known (as for the bundled data
        after :func:`tlkit.datasets.add_label_noise`). ``k`` compares the top ``k`` rows of the
        ranking instead of the flags. Returns ``precision`` (fraction of the flagged that are
        truly mislabelled), ``recall`` (fraction of the mislabelled that are flagged), ``f1``,
        ``flagged``, ``mislabelled``, ``scored`` (counts) and ``noise_rate`` (the chance
        precision).
        """
        domain = self._check_domain(domain)
        truly = domain.labels != domain.clean_labels
        if k is None:
            picked = self.indices[self.flagged]
        else:
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}.")
            picked = self.indices[:k]
        hits = int(truly[picked].sum())
        noisy = int(truly[self.indices].sum())
        precision = hits / len(picked) if len(picked) else float("nan")
        recall = hits / noisy if noisy else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "flagged": len(picked),
            "mislabelled": noisy,
            "scored": len(self.indices),
            "noise_rate": noisy / max(1, len(self.indices)),
        }

    def remove(self, data: Domain | DomainPair) -> Domain | DomainPair:
        """The same data without the flagged samples (from the source, for a task)."""
        domain = self._check_domain(data)
        keep = torch.ones(len(domain), dtype=torch.bool)
        keep[self.flagged_indices] = False
        kept = domain.subset(keep.nonzero().flatten())
        return replace(data, source=kept) if isinstance(data, DomainPair) else kept

    def _check_domain(self, data: Domain | DomainPair) -> Domain:
        domain = data.source if isinstance(data, DomainPair) else data
        if not isinstance(domain, Domain):
            raise DataError(f"expected a Domain or DomainPair, got {type(data).__name__}.")
        if len(self.indices) and (
            int(self.indices.max()) >= len(domain)
            or not torch.equal(domain.labels[self.indices], self.given)
        ):
            raise DataError(
                f"'{domain.name}' is not the domain these labels were scored on (its labels "
                "differ); pass the same Domain (or task) given to suspicious_labels()."
            )
        return domain

    # -- display ---------------------------------------------------------------------------
    def _rows(self, n: int) -> list[tuple[str, ...]]:
        return [
            (
                str(r + 1),
                str(int(self.indices[r])),
                self._name(int(self.given[r])),
                self._name(int(self.suggested[r])),
                f"{float(self.confidence[r]):.2f}",
                f"{float(self.scores[r]):.3f}",
                "yes" if self.flagged[r] else "",
            )
            for r in range(min(n, len(self.indices)))
        ]

    _columns = ("rank", "index", "given", "suggested", "confidence", "score", "flagged")

    def _summary(self) -> str:
        total = len(self.indices)
        share = len(self) / total if total else 0.0
        return (
            f"SuspiciousLabels(method={self.method!r}, flagged {len(self)} of {total} "
            f"labelled samples ({share:.1%}))"
        )

    def __repr__(self, n: int = 10) -> str:
        rows = [self._columns, *self._rows(n)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._columns))]
        lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
        more = len(self.indices) - n
        tail = [f"... {more} more rows"] if more > 0 else []
        return "\n".join([self._summary(), *lines, *tail])

    def _repr_html_(self, n: int = 10) -> str:
        head = "".join(f"<th>{c}</th>" for c in self._columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
            for row in self._rows(n)
        )
        return (
            f"<table><caption>{escape(self._summary())}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )

    def plot(self, domain: Domain | DomainPair, n: int = 16, *, columns: int = 8) -> Figure:
        """A grid of the ``n`` most suspicious images titled ``given -> suggested``.

        When the domain knows a different clean label, the title adds it and turns red if the
        label is truly wrong (green if the flag is a false alarm).
        """
        import matplotlib.pyplot as plt

        domain = self._check_domain(domain)
        n = max(1, min(n, len(self.indices)))
        cols = min(columns, n)
        rows = math.ceil(n / cols)
        shown = [int(i) for i in self.indices[:n]]
        two_lines = any(  # "(true c)" below the title: leave room for it above each row
            int(domain.clean_labels[i]) != int(self.given[r]) for r, i in enumerate(shown)
        )
        height = 1.95 if two_lines else 1.6
        fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, height * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for r, ax in zip(range(n), axes.flat):
            i = int(self.indices[r])
            img = domain.images[i].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray")
            given, clean = int(self.given[r]), int(domain.clean_labels[i])
            title = f"{self._name(given)} -> {self._name(int(self.suggested[r]))}"
            color = "black"
            if clean != given:
                title += f"\n(true {self._name(clean)})"
                color = "tab:red"
            elif domain.noise_rate > 0:
                color = "tab:green"
            ax.set_title(title, fontsize=8, color=color)
        fig.suptitle(f"most suspicious labels ({self.method}): given -> suggested", fontsize=9)
        fig.tight_layout()
        return fig


def confident_joint(
    probabilities: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The confident joint ``(K, K)`` and each sample's confident class ``(N,)`` (-1: none).

    Per-class thresholds are the mean probability of class ``j`` over samples labelled ``j``;
    a class nobody is labelled with gets an infinite threshold (never confident).
    """
    probs = probabilities.float()
    n, k = probs.shape
    counts = torch.bincount(labels, minlength=k).float()
    sums = torch.zeros(k).index_add_(0, labels, probs.gather(1, labels.view(-1, 1)).squeeze(1))
    thresholds = torch.where(counts > 0, sums / counts.clamp_min(1), torch.tensor(math.inf))
    above = probs >= thresholds
    confident_class = probs.masked_fill(~above, -1.0).argmax(dim=1)
    confident_class[~above.any(dim=1)] = -1
    has = confident_class >= 0
    joint = torch.zeros(k, k, dtype=torch.long)
    joint.index_put_(
        (labels[has], confident_class[has]),
        torch.ones(int(has.sum()), dtype=torch.long),
        accumulate=True,
    )
    return joint, confident_class


def _labelled(data: Domain | DomainPair) -> tuple[Domain, torch.Tensor]:
    domain = data.source if isinstance(data, DomainPair) else data
    if not isinstance(domain, Domain):
        raise DataError(
            f"expected a labelled tlkit.datasets.Domain (or a task), got {type(data).__name__}."
        )
    if domain.task != "classification":
        raise DataError(f"'{domain.name}' is a regression domain; label issues need classes.")
    idx = (domain.labels != UNLABELLED).nonzero().flatten()
    if len(idx) == 0:
        raise DataError(f"'{domain.name}' has no labelled samples to check.")
    return domain, idx


def suspicious_labels(
    model: nn.Module | Run,
    domain: Domain | DomainPair,
    *,
    method: str = "confident_learning",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    expected_noise_rate: float | None = None,
) -> SuspiciousLabels:
    """Rank the labelled samples of ``domain`` (a task: its source) by how wrong their labels look.

    ``model`` is a trained classifier (a :class:`tlkit.Run` or its ``model``); it is moved to
    ``device`` when one is given. ``method``: ``"confident_learning"`` or ``"small_loss"``;
    ``expected_noise_rate`` sets how many ``small_loss`` flags (see the module docstring).
    A model trained to the end on these very labels has partly memorised them: prefer
    :func:`cross_validated_suspicious_labels` when the result matters.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {list(METHODS)}.")
    net = getattr(model, "model", model) if not isinstance(model, nn.Module) else model
    if not isinstance(net, nn.Module):
        raise TypeError(f"model must be a tlkit Run or an nn.Module, got {type(model).__name__}.")
    domain, idx = _labelled(domain)
    if device is not None:
        net.to(device)
    logits = predict_outputs(net, domain.images[idx], batch_size=batch_size, device=device)
    if logits.ndim != 2 or logits.shape[1] != domain.num_classes:
        raise DataError(
            f"the model gives outputs of shape {tuple(logits.shape[1:])} but '{domain.name}' has "
            f"{domain.num_classes} classes; use the classifier trained on this label set."
        )
    return SuspiciousLabels.from_probabilities(
        logits.softmax(dim=1),
        domain.labels[idx],
        method=method,
        indices=idx,
        classes=domain.classes,
        expected_noise_rate=expected_noise_rate,
    )


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> torch.Tensor:
    """A fold id ``(N,)`` in ``0..folds-1`` per sample, balanced within each label."""
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty(len(labels), dtype=torch.long)
    offset = 0
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        fold[members] = (torch.arange(len(members)) + offset) % folds
        offset += len(members)  # spread class remainders over different folds
    return fold


def cross_validated_suspicious_labels(
    domain: Domain | DomainPair,
    *,
    backbone: str = "small_cnn",
    folds: int = 4,
    epochs: int = 5,
    seed: int = 0,
    **fit_options: Any,
) -> SuspiciousLabels:
    """Confident learning on out-of-fold probabilities: the stronger detector.

    The labelled samples are split into ``folds`` stratified folds; for each, a model is trained
    with :func:`tlkit.fit` on the other folds for only ``epochs`` epochs (stopped early, before
    it memorises wrong labels) and predicts the held-out fold. ``fit_options`` go to
    :func:`tlkit.fit` (defaults here: ``mode="full"``, ``progress=False``). Cost: ``folds`` fits
    on ``(folds - 1) / folds`` of the data.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}.")
    from tlkit.api import fit

    domain, idx = _labelled(domain)
    labels = domain.labels[idx]
    fold_of = stratified_folds(labels, folds, seed)
    if torch.bincount(fold_of, minlength=folds).min() == 0:
        raise DataError(f"{len(idx)} labelled samples are too few for {folds} folds.")
    options = {"mode": "full", "progress": False, **fit_options}
    classes = domain.classes or tuple(str(c) for c in range(domain.num_classes))
    probs = torch.zeros(len(idx), domain.num_classes)
    for f in range(folds):
        train = replace(domain.subset(idx[fold_of != f], f"{domain.name}-fold{f}"), classes=classes)
        held_out = idx[fold_of == f]
        run = fit(train, backbone, epochs=epochs, seed=seed + f, **options)
        probs[fold_of == f] = run.predict_proba(domain.images[held_out]).float()
    return SuspiciousLabels.from_probabilities(
        probs, labels, method="confident_learning", indices=idx, classes=domain.classes
    )


__all__ = [
    "METHODS",
    "SuspiciousLabels",
    "confident_joint",
    "cross_validated_suspicious_labels",
    "stratified_folds",
    "suspicious_labels",
]
