r"""Find training samples whose labels look wrong, and estimate the label noise behind them.

**Confident learning** -- Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty
in Dataset Labels", JAIR 70, 2021 (arXiv:1911.00068): per-class thresholds, the confident joint,
the calibrated noise joint and its pruning rules, with their formulas, are in
:mod:`tlkit.confident_learning` (their names are importable from here too).

Flagged samples can be dropped (:meth:`SuspiciousLabels.remove`) or given the model's most
probable class (:meth:`SuspiciousLabels.relabel`).

**Small loss** (``method="small_loss"``): rank by the cross-entropy of the given label,
:math:`-\log p_{\tilde y}(x)` (networks fit clean labels before noisy ones: Arpit et al., ICML
2017; Han et al., "Co-teaching", NeurIPS 2018). Flagged: the ``expected_noise_rate`` fraction with
the largest loss when that rate is given, else every sample whose loss exceeds :math:`\log K`.

The probabilities should be *out-of-sample*: a model that has memorised the noisy labels agrees
with them. :func:`tlkit.cross_validation.cross_validated_suspicious_labels` gets them from models
trained on the other folds and stopped after a few epochs, before they memorise (it trains, so it
lives in its own module); :func:`suspicious_labels` scores one trained model (e.g.
``run.suspicious_labels()``), which is cheaper and weaker.

Shapes: probabilities ``(N, K)``, labels ``(N,)`` -> one row per labelled sample; every matrix
is ``(K, K)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tlkit.backbone_choice import input_kind
from tlkit.confident_learning import (
    _PRUNE_ALIASES,  # noqa: F401 (re-exported)
    DEFAULT_PRUNE,
    METHODS,
    PRUNE,
    RANK_BY,
    NoiseEstimate,
    _check_probabilities,
    _resolve_prune,
    check_method,
    check_rank_by,
    confident_joint,
    estimate_noise,
    find_label_issues,
)
from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.domain_outputs import domain_outputs

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from matplotlib.figure import Figure


# -- the ranked result -------------------------------------------------------------------------
@dataclass(repr=False, eq=False)
class SuspiciousLabels:
    """Labelled samples ranked by how suspicious their labels are, flagged ones first.

    Every array has one row per scored sample, in the same order: the flagged samples first
    (most suspicious first), then the others by decreasing score. ``len(s)`` is the number of
    flagged samples, so ``s.indices[: len(s)]`` are exactly the flagged positions.

    Attributes:
        indices: positions ``(N,)`` in the scored domain.
        given: the training labels ``(N,)`` as given.
        suggested: the model's most probable class ``(N,)`` (what :meth:`relabel` writes).
        scores: ``(N,)``; higher is more suspicious: the normalised margin
            :math:`\\max_{j \\ne \\tilde y} p_j - p_{\\tilde y}` in [-1, 1] (``rank_by=
            "normalized_margin"``), :math:`1 - p_{\\tilde y}` (``"self_confidence"``), or the
            loss :math:`-\\log p_{\\tilde y}` (small loss).
        flagged: ``(N,)`` bool; which samples the detector calls mislabelled.
        method: ``"confident_learning"`` or ``"small_loss"``.
        confidence: the probability of the suggested label ``(N,)``.
        classes: class names, for display.
        confident_joint: ``(K, K)`` counts, rows given labels, columns confident classes
            (confident learning only).
        prune: the pruning rule (confident learning only; see the module docstring).
        noise: the :class:`NoiseEstimate` (confident learning only).
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
    prune: str | None = None
    noise: NoiseEstimate | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_probabilities(
        cls,
        probabilities: torch.Tensor,
        labels: torch.Tensor,
        *,
        method: str = "confident_learning",
        prune: str | None = None,
        rank_by: str = "normalized_margin",
        indices: torch.Tensor | None = None,
        classes: tuple[str, ...] | list[str] = (),
        expected_noise_rate: float | None = None,
    ) -> SuspiciousLabels:
        """Score samples from probabilities ``(N, K)`` and given labels ``(N,)`` (ids 0..K-1).

        ``prune``: one of :data:`PRUNE` (default ``"by_class"``), confident learning only.
        ``rank_by``: ``"normalized_margin"`` or ``"self_confidence"``, how samples of a class
        are ordered (for ``prune="by_class"`` and in the ranking). ``indices`` ``(N,)`` are the
        samples' positions in their domain (default ``0..N-1``).
        """
        check_method(method)
        check_rank_by(rank_by)
        if expected_noise_rate is not None and not 0.0 <= expected_noise_rate < 1.0:
            raise ValueError(f"expected_noise_rate must be in [0, 1), got {expected_noise_rate}.")
        if expected_noise_rate is not None and method != "small_loss":
            raise ValueError(
                "expected_noise_rate sets how many samples method='small_loss' flags; confident "
                "learning estimates the noise itself. Leave it out, or use method='small_loss'."
            )
        if prune is not None and method != "confident_learning":
            raise ValueError(
                f"prune={prune!r} is a confident-learning rule; method='small_loss' flags by "
                "loss. Leave prune out, or use method='confident_learning'."
            )
        probs, labels = _check_probabilities(probabilities, labels)
        n, k = probs.shape
        indices = torch.arange(n) if indices is None else torch.as_tensor(indices).long().cpu()
        if indices.shape != labels.shape:
            raise DataError(
                f"indices must be (N,) = {tuple(labels.shape)}, got {tuple(indices.shape)}."
            )
        p_given = probs.gather(1, labels.view(-1, 1)).squeeze(1)
        noise = None
        if method == "confident_learning":
            prune = _resolve_prune(prune)
            noise = estimate_noise(probs, labels)
            flagged = find_label_issues(probs, labels, prune=prune, rank_by=rank_by, noise=noise)
            if rank_by == "normalized_margin":
                others = probs.scatter(1, labels.view(-1, 1), -1.0)
                scores = others.max(dim=1).values - p_given
            else:
                scores = 1.0 - p_given
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
            scores=scores[order].float(),
            flagged=flagged[order],
            method=method,
            confidence=confidence[order].float(),
            classes=tuple(str(c) for c in classes),
            confident_joint=noise.confident_joint if noise is not None else None,
            prune=prune if method == "confident_learning" else None,
            noise=noise,
        )

    # -- facts -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.flagged.sum())

    @property
    def flagged_indices(self) -> torch.Tensor:
        """Positions of the flagged samples in the scored domain, most suspicious first."""
        return self.indices[self.flagged]

    @property
    def noise_matrix(self) -> torch.Tensor:
        """Estimated :math:`P(\\text{given} = i \\mid \\text{true} = j)` at ``[j, i]`` ``(K, K)``
        (rows true class, as :func:`tlkit.datasets.transition_matrix`)."""
        return self._noise().noise_matrix

    @property
    def noise_joint(self) -> torch.Tensor:
        """Estimated :math:`P(\\text{given} = i, \\text{true} = j)` at ``[i, j]`` ``(K, K)``."""
        return self._noise().noise_joint

    @property
    def estimated_noise_rate(self) -> float:
        """Estimated share of wrong labels among the scored samples."""
        return self._noise().noise_rate

    def _noise(self) -> NoiseEstimate:
        if self.noise is None:
            raise ValueError(
                f"method={self.method!r} estimates no noise matrix; use "
                "method='confident_learning'."
            )
        return self.noise

    def _name(self, c: int) -> str:
        return self.classes[c] if c < len(self.classes) else str(c)

    def precision_recall(self, domain: Domain | DomainPair, k: int | None = None) -> dict[str, Any]:
        """Compare the flags with the truth ``domain.labels != domain.clean_labels``.

        Needs the domain that was scored, with its clean labels known (as for the bundled data
        after :func:`tlkit.datasets.add_label_noise`). ``k`` compares the top ``k`` rows of the
        ranking instead of the flags. Returns ``precision`` (fraction of the flagged that are
        truly mislabelled), ``recall`` (fraction of the mislabelled that are flagged), ``f1``,
        ``flagged``, ``mislabelled``, ``scored`` (counts), ``noise_rate`` (the chance
        precision) and ``suggestion_accuracy`` (fraction of the flagged whose suggested label is
        the true one: how right :meth:`relabel` is).
        """
        domain = self._check_domain(domain)
        truly = domain.labels != domain.clean_labels
        if k is None:
            rows = self.flagged.nonzero().flatten()
        else:
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}.")
            rows = torch.arange(min(k, len(self.indices)))
        picked = self.indices[rows]
        hits = int(truly[picked].sum())
        noisy = int(truly[self.indices].sum())
        precision = hits / len(picked) if len(picked) else float("nan")
        recall = hits / noisy if noisy else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        right = self.suggested[rows] == domain.clean_labels[picked]
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "flagged": len(picked),
            "mislabelled": noisy,
            "scored": len(self.indices),
            "noise_rate": noisy / max(1, len(self.indices)),
            "suggestion_accuracy": float(right.float().mean()) if len(rows) else float("nan"),
        }

    def remove(self, data: Domain | DomainPair) -> Domain | DomainPair:
        """The same data without the flagged samples (from the source, for a task)."""
        domain = self._check_domain(data)
        keep = torch.ones(len(domain), dtype=torch.bool)
        keep[self.flagged_indices] = False
        kept = domain.subset(keep.nonzero().flatten())
        return replace(data, source=kept) if isinstance(data, DomainPair) else kept

    def relabel(self, data: Domain | DomainPair) -> Domain | DomainPair:
        """The same data with each flagged sample's label replaced by its suggested label (the
        model's most probable class); nothing is removed and the clean labels are kept.

        Keeps every sample, so it pays when the suggestions are mostly right
        (``precision_recall(...)["suggestion_accuracy"]`` on data with known clean labels);
        :meth:`remove` is safer when they are not.
        """
        domain = self._check_domain(data)
        labels = domain.labels.clone()
        flagged = self.flagged
        labels[self.indices[flagged]] = self.suggested[flagged]
        new = domain.with_labels(labels)
        return replace(data, source=new) if isinstance(data, DomainPair) else new

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
        rule = f", prune={self.prune!r}" if self.prune else ""
        noise = (
            f"; estimated noise rate {self.noise.noise_rate:.1%}" if self.noise is not None else ""
        )
        return (
            f"SuspiciousLabels(method={self.method!r}{rule}, flagged {len(self)} of {total} "
            f"labelled samples ({share:.1%}){noise})"
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
        if domain.modality != "image":
            raise DataError(
                f"plot() shows images, but '{domain.name}' holds {input_kind(domain)}: print the "
                "result instead, a table of the suspicious samples' indices and labels."
            )
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
            img = _thumbnail(domain, i).permute(1, 2, 0).numpy()
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


def _thumbnail(domain: Domain, i: int, side: int = 128) -> torch.Tensor:
    """Sample ``i`` as ``uint8 (C, H, W)`` for a figure: in-memory images as they are, files
    decoded and shrunk so the longer side is at most ``side`` (a grid of camera photos stays
    light); an unreadable file is a grey square."""
    from tlkit.datasets.decode import DecodeError

    try:
        x = domain.backing.load(i)
    except DecodeError:
        return torch.full((3, side, side), 128, dtype=torch.uint8)
    h, w = x.shape[-2:]
    if max(h, w) > side:
        scale = side / max(h, w)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        x = torch.nn.functional.interpolate(
            x[None].float(), size=size, mode="area"
        )[0].round().clamp(0, 255).to(torch.uint8)
    return x


def _labelled(data: Domain | DomainPair) -> tuple[Domain, torch.Tensor]:
    """The labelled domain (a task's source) and the positions of its labelled samples."""
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
    model: nn.Module | Any,
    domain: Domain | DomainPair,
    *,
    method: str = "confident_learning",
    prune: str | None = None,
    rank_by: str = "normalized_margin",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    expected_noise_rate: float | None = None,
    num_workers: int = 0,
) -> SuspiciousLabels:
    """Rank the labelled samples of ``domain`` (a task: its source) by how wrong their labels look.

    ``model`` is a trained classifier (a :class:`tlkit.Run` or its ``model``); it is moved to
    ``device`` when one is given. ``method``: ``"confident_learning"`` (``prune`` and
    ``rank_by`` as in :meth:`SuspiciousLabels.from_probabilities`) or ``"small_loss"``
    (``expected_noise_rate`` sets how many it flags). A model trained to the end on these very
    labels has partly memorised them: prefer
    :func:`tlkit.cross_validation.cross_validated_suspicious_labels` when the result matters.

    Any backing works: image files and shards are decoded in ``num_workers`` DataLoader workers
    with the run's evaluation transform; a file that cannot be read is left out of the ranking.
    """
    check_method(method)
    net = getattr(model, "model", model) if not isinstance(model, nn.Module) else model
    if not isinstance(net, nn.Module):
        raise TypeError(f"model must be a tlkit Run or an nn.Module, got {type(model).__name__}.")
    domain, idx = _labelled(domain)
    p = domain_outputs(
        model, domain, idx, batch_size=batch_size, device=device, num_workers=num_workers
    )
    logits, idx = p.outputs, p.indices
    if logits.ndim != 2 or logits.shape[1] != domain.num_classes:
        raise DataError(
            f"the model gives outputs of shape {tuple(logits.shape[1:])} but '{domain.name}' has "
            f"{domain.num_classes} classes; use the classifier trained on this label set."
        )
    return SuspiciousLabels.from_probabilities(
        logits.double().softmax(dim=1),
        domain.labels[idx],
        method=method,
        prune=prune,
        rank_by=rank_by,
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


__all__ = [
    "DEFAULT_PRUNE",
    "METHODS",
    "PRUNE",
    "RANK_BY",
    "NoiseEstimate",
    "SuspiciousLabels",
    "confident_joint",
    "estimate_noise",
    "find_label_issues",
    "stratified_folds",
    "suspicious_labels",
]
