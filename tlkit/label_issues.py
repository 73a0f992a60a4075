r"""Find training samples whose labels look wrong, and estimate the label noise behind them.

**Confident learning** -- Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty
in Dataset Labels", JAIR 70, 2021 (arXiv:1911.00068). Written from the paper (the widely used
library implementing it is AGPL-licensed; no code of it is used here).

Inputs: out-of-sample predicted probabilities :math:`p` ``(N, K)`` and the given, possibly noisy,
labels :math:`\tilde y` ``(N,)``; :math:`n_i` is the number of samples given label :math:`i`.

1. Per-class thresholds ``(K,)``, the mean self-confidence of each class:
   :math:`t_j = \operatorname{mean}_{x: \tilde y = j}\, p_j(x)`.
2. Each sample's *confident class* :math:`\hat y(x) = \arg\max_{j:\, p_j(x) \ge t_j} p_j(x)`
   (none when no class reaches its threshold).
3. The *confident joint* ``(K, K)``, rows given label, columns confident class:
   :math:`C[i, j] = |\{x : \tilde y = i,\ \hat y(x) = j\}|`.
4. Calibration (the paper's eq. 3): each row rescaled to its label count,
   :math:`\tilde C[i, j] = n_i\, C[i, j] / \sum_{j'} C[i, j']`, and the *noise joint*
   :math:`\hat Q[i, j] = \tilde C[i, j] / \sum \tilde C \approx P(\tilde y = i, y^* = j)`. From it
   (:class:`NoiseEstimate`): the true-class prior :math:`P(y^*=j) = \sum_i \hat Q[i, j]`; the
   *noise matrix* :math:`T[j, i] = P(\tilde y = i \mid y^* = j)` -- the layout of
   :func:`tlkit.datasets.transition_matrix`, rows true class (note: the paper and cleanlab write
   it transposed); the inverse noise matrix :math:`P(y^* = j \mid \tilde y = i) = \tilde C[i, j]
   / n_i`; the noise rate :math:`1 - \operatorname{tr} \hat Q`.
5. Pruning (the paper's section 3.2), ``prune=``:

   * ``"by_class"`` (*prune by class*, the default): in each given class :math:`i` flag the
     estimated number of its errors, :math:`\operatorname{round}(n_i - \tilde C[i, i]) =
     \operatorname{round}(N \sum_{j \ne i} \hat Q[i, j])`, that look least like :math:`i`:
     lowest normalised margin :math:`p_i(x) - \max_{j \ne i} p_j(x)` (``rank_by=
     "normalized_margin"``) or self-confidence :math:`p_i(x)` (``"self_confidence"``).
   * ``"by_pair"`` (*prune by noise rate*, the paper's and cleanlab's default): for every pair
     :math:`i \ne j`, flag among the samples given :math:`i` the
     :math:`\operatorname{round}(\tilde C[i, j]) = \operatorname{round}(N \hat Q[i, j])` with
     the largest margin :math:`p_j(x) - p_i(x)`.
   * ``"both"``: flagged by both rules.
   * ``"off_diagonal"``: the confident joint's off-diagonal, :math:`\hat y(x) \ne \tilde y`
     (tlkit's only rule before; flags fewer).
   * ``"argmax"``: the most probable class differs from the given label.

   With the three counting rules a sample whose given label is its most probable class is never
   flagged, and every class keeps at least one sample. Why ``"by_class"`` is the default:
   measured on bundled ``digits`` with 40% noise and 4-fold out-of-fold probabilities (3 seeds,
   ``benchmarks/results/noisy_labels.md``), detection F1 under symmetric noise is 0.966
   ("by_class") vs 0.953 ("by_pair") and 0.914 ("off_diagonal"), better on every seed, while
   under pair-flip noise it is 0.673 vs 0.681 and 0.668 (within the seeds' spread), and CE
   retrained on the cleaned data is as accurate either way. Both rules aim at the same number
   of errors per class, but ``"by_pair"``'s per-pair picks overlap (one sample can have the
   largest margins for two pairs) and are rounded pair by pair, so it flags fewer (37.4% of the
   samples against an estimated noise rate of 39.8% there; ``"by_class"`` 39.7%).

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

from tlkit.datasets.domain import UNLABELLED, DataError, Domain, DomainPair
from tlkit.engine.evaluate import predict_outputs

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from matplotlib.figure import Figure

METHODS = ("confident_learning", "small_loss")
PRUNE = ("by_pair", "by_class", "both", "off_diagonal", "argmax")
RANK_BY = ("normalized_margin", "self_confidence")
DEFAULT_PRUNE = "by_class"
# the paper's names for the same rules
_PRUNE_ALIASES = {"prune_by_noise_rate": "by_pair", "prune_by_class": "by_class"}


# -- the noise estimate ------------------------------------------------------------------------
@dataclass(frozen=True, repr=False, eq=False)
class NoiseEstimate:
    """What confident learning estimates about the label noise (see the module docstring).

    Attributes:
        thresholds: per-class thresholds :math:`t_j` ``(K,)`` (``inf`` for a class no sample
            is given).
        confident_class: each sample's confident class ``(N,)``; ``-1`` when none.
        confident_joint: counts ``(K, K)`` int64, rows given label, columns confident class.
        calibrated_joint: :math:`\\tilde C` ``(K, K)`` float64; row ``i`` sums to ``n_i``.
        noise_joint: :math:`\\hat Q \\approx P(\\tilde y = i, y^* = j)` ``(K, K)``; sums to 1.
        noise_matrix: :math:`P(\\tilde y = i \\mid y^* = j)` at ``[j, i]`` ``(K, K)``; rows
            true class, columns given label, rows sum to 1 -- comparable with
            ``tlkit.datasets.transition_matrix(kind, rate, K)``.
        inverse_noise_matrix: :math:`P(y^* = j \\mid \\tilde y = i)` at ``[i, j]``.
        true_prior: :math:`P(y^* = j)` ``(K,)``.
        label_counts: :math:`n_i` ``(K,)``.
    """

    thresholds: torch.Tensor
    confident_class: torch.Tensor
    confident_joint: torch.Tensor
    calibrated_joint: torch.Tensor
    noise_joint: torch.Tensor
    noise_matrix: torch.Tensor
    inverse_noise_matrix: torch.Tensor
    true_prior: torch.Tensor
    label_counts: torch.Tensor

    @property
    def noise_rate(self) -> float:
        """Estimated share of wrong labels, :math:`1 - \\operatorname{tr} \\hat Q`."""
        return float(1.0 - self.noise_joint.diagonal().sum())

    @property
    def num_errors(self) -> torch.Tensor:
        """Estimated number of wrong labels per given class ``(K,)``: :math:`n_i - \\tilde
        C[i, i]`."""
        return self.label_counts.double() - self.calibrated_joint.diagonal()

    def __repr__(self) -> str:
        k = len(self.thresholds)
        head = f"NoiseEstimate(K={k}, estimated noise rate {self.noise_rate:.1%})"
        if k > 12:
            return head
        rows = "\n".join(
            "  " + " ".join(f"{float(v):5.2f}" for v in row) for row in self.noise_matrix
        )
        return f"{head}\nnoise matrix P(given = column | true = row):\n{rows}"


def _check_probabilities(probabilities: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probabilities).detach().cpu().double()
    labels = torch.as_tensor(labels).detach().cpu().long()
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise DataError(
            f"probabilities must be (N, K) and labels (N,); got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}."
        )
    n, k = probs.shape
    if n and (labels.min() < 0 or labels.max() >= k):
        raise DataError(f"labels must be class ids in [0, {k}); leave unlabelled samples (-1) out.")
    if n and (not torch.isfinite(probs).all() or probs.min() < 0):
        raise DataError(
            "probabilities must be finite and non-negative; pass softmax outputs "
            "(logits.softmax(dim=1)), not logits."
        )
    if n and ((probs.sum(dim=1) - 1).abs().max() > 1e-3):
        worst = float((probs.sum(dim=1) - 1).abs().max())
        raise DataError(
            f"each row of probabilities must sum to 1 (off by up to {worst:.3g}); pass softmax "
            "outputs (logits.softmax(dim=1)), not logits or scores."
        )
    return probs, labels


def confident_joint(
    probabilities: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The confident joint ``(K, K)`` int64 and each sample's confident class ``(N,)`` (-1: none).

    Rows are given labels, columns confident classes (steps 1-3 of the module docstring).
    """
    probs = torch.as_tensor(probabilities).double().cpu()
    labels = torch.as_tensor(labels).long().cpu()
    joint, confident_class, _ = _confident_joint(probs, labels)
    return joint, confident_class


def _confident_joint(
    probs: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k = probs.shape
    counts = torch.bincount(labels, minlength=k).double()
    self_conf = probs.gather(1, labels.view(-1, 1)).squeeze(1)
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, self_conf)
    thresholds = torch.where(counts > 0, sums / counts.clamp_min(1), torch.tensor(math.inf))
    above = probs >= thresholds
    confident_class = probs.masked_fill(~above, -1.0).argmax(dim=1)
    confident_class[~above.any(dim=1)] = -1
    has = confident_class >= 0
    joint = torch.bincount(labels[has] * k + confident_class[has], minlength=k * k).view(k, k)
    return joint, confident_class, thresholds


def estimate_noise(probabilities: torch.Tensor, labels: torch.Tensor) -> NoiseEstimate:
    """Confident learning's estimate of the label noise from probabilities ``(N, K)`` and given
    labels ``(N,)``: thresholds, confident joint, calibrated joint, noise joint, noise matrix,
    inverse noise matrix, true-class prior (see the module docstring for the formulas)."""
    probs, labels = _check_probabilities(probabilities, labels)
    n, k = probs.shape
    joint, confident_class, thresholds = _confident_joint(probs, labels)
    counts = torch.bincount(labels, minlength=k)
    c = joint.double()
    row = c.sum(dim=1, keepdim=True)
    calibrated = torch.where(row > 0, c / row.clamp_min(1) * counts.double().view(-1, 1), 0.0)
    # a class given to samples none of which is confidently anything: assume its labels right
    lost = (row.view(-1) == 0) & (counts > 0)
    calibrated[lost, lost] = counts[lost].double()
    total = calibrated.sum()
    noise_joint = calibrated / total if total > 0 else calibrated
    prior = noise_joint.sum(dim=0)
    eye = torch.eye(k, dtype=torch.float64)
    noise_matrix = torch.where(
        prior.view(-1, 1) > 0, noise_joint.T / prior.clamp_min(1e-300).view(-1, 1), eye
    )
    given = calibrated.sum(dim=1, keepdim=True)
    inverse = torch.where(given > 0, calibrated / given.clamp_min(1e-300), eye)
    return NoiseEstimate(
        thresholds=thresholds,
        confident_class=confident_class,
        confident_joint=joint,
        calibrated_joint=calibrated,
        noise_joint=noise_joint,
        noise_matrix=noise_matrix,
        inverse_noise_matrix=inverse,
        true_prior=prior,
        label_counts=counts,
    )


def _round(x: float) -> int:
    """Round half up (``round`` rounds half to even)."""
    return int(math.floor(x + 0.5))


def _resolve_prune(prune: str | None) -> str:
    if prune is None:
        return DEFAULT_PRUNE
    key = _PRUNE_ALIASES.get(prune, prune)
    if key not in PRUNE:
        raise ValueError(
            f"unknown prune rule {prune!r}; use one of {list(PRUNE)} (or the paper's names "
            f"{list(_PRUNE_ALIASES)})."
        )
    return key


def find_label_issues(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    *,
    prune: str | None = None,
    rank_by: str = "normalized_margin",
    noise: NoiseEstimate | None = None,
) -> torch.Tensor:
    """Which samples confident learning flags: a bool mask ``(N,)``.

    ``prune`` is one of :data:`PRUNE` (default ``"by_class"``); ``rank_by`` orders the samples of
    a class for ``"by_class"``. ``noise`` reuses an :func:`estimate_noise` of the same inputs.
    """
    prune = _resolve_prune(prune)
    if rank_by not in RANK_BY:
        raise ValueError(f"unknown rank_by {rank_by!r}; use one of {list(RANK_BY)}.")
    probs, labels = _check_probabilities(probabilities, labels)
    n, k = probs.shape
    noise = estimate_noise(probs, labels) if noise is None else noise
    top = probs.argmax(dim=1)
    if prune == "off_diagonal":
        cc = noise.confident_class
        return (cc >= 0) & (cc != labels)
    if prune == "argmax":
        return top != labels
    by_class = torch.zeros(n, dtype=torch.bool)
    by_pair = torch.zeros(n, dtype=torch.bool)
    calibrated = noise.calibrated_joint
    self_conf = probs.gather(1, labels.view(-1, 1)).squeeze(1)
    for i in range(k):
        members = (labels == i).nonzero().flatten()
        if len(members) == 0:
            continue
        p = probs[members]
        if prune in ("by_class", "both"):
            count = _round(float(len(members) - calibrated[i, i]))
            if count > 0:
                like_i = p[:, i].clone()
                if rank_by == "normalized_margin":
                    others = p.clone()
                    others[:, i] = -1.0
                    like_i = like_i - others.max(dim=1).values
                order = torch.argsort(like_i, stable=True)
                by_class[members[order[:count]]] = True
        if prune in ("by_pair", "both"):
            for j in calibrated[i].nonzero().flatten().tolist():
                count = _round(float(calibrated[i, j]))
                if j == i or count == 0:
                    continue
                margin = p[:, j] - p[:, i]
                order = torch.argsort(margin, descending=True, stable=True)
                by_pair[members[order[:count]]] = True
    flagged = {"by_class": by_class, "by_pair": by_pair, "both": by_class & by_pair}[prune]
    flagged &= top != labels  # the given label is the model's own first choice: keep it
    for i in range(k):  # every class keeps at least its most confident sample
        members = (labels == i).nonzero().flatten()
        if len(members) and flagged[members].all():
            flagged[members[self_conf[members].argmax()]] = False
    return flagged


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
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {list(METHODS)}.")
        if rank_by not in RANK_BY:
            raise ValueError(f"unknown rank_by {rank_by!r}; use one of {list(RANK_BY)}.")
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
) -> SuspiciousLabels:
    """Rank the labelled samples of ``domain`` (a task: its source) by how wrong their labels look.

    ``model`` is a trained classifier (a :class:`tlkit.Run` or its ``model``); it is moved to
    ``device`` when one is given. ``method``: ``"confident_learning"`` (``prune`` and
    ``rank_by`` as in :meth:`SuspiciousLabels.from_probabilities`) or ``"small_loss"``
    (``expected_noise_rate`` sets how many it flags). A model trained to the end on these very
    labels has partly memorised them: prefer
    :func:`tlkit.cross_validation.cross_validated_suspicious_labels` when the result matters.
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


def __getattr__(name: str) -> Any:
    if name == "cross_validated_suspicious_labels":
        raise ImportError(  # not AttributeError: its message would be lost in 'from x import'
            "cross_validated_suspicious_labels moved to tlkit.cross_validation (it trains models, "
            "which tlkit.label_issues must not import): use "
            "'from tlkit.cross_validation import cross_validated_suspicious_labels'."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
