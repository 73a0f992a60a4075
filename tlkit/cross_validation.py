r"""Out-of-fold probabilities, and confident learning on them: the strong label-issue detector.

Confident learning (Northcutt et al., JAIR 2021; :mod:`tlkit.label_issues`) needs predicted
probabilities that did not see the label they judge. :func:`cross_validated_probabilities` gets
them by :math:`k`-fold cross-validation: the labelled samples are split into ``folds`` stratified
folds; for each fold a model is trained with :func:`tlkit.fit` on the other folds for only
``epochs`` epochs -- stopped early, before it memorises wrong labels (networks fit clean labels
first: Arpit et al., ICML 2017) -- and predicts the held-out fold. ``repeats > 1`` averages the
probabilities of several different fold splits.

Shapes: ``N`` labelled samples, ``K`` classes; probabilities ``(N, K)``, positions ``(N,)``.
Cost: ``folds * repeats`` fits on ``(folds - 1) / folds`` of the data each.

This module trains models, so it imports :mod:`tlkit.api`; :mod:`tlkit.label_issues` does not
(``tlkit.run`` imports it, and the layers must not form a cycle).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm

from tlkit.api import fit
from tlkit.backbone_choice import check_backbone, default_backbone
from tlkit.confident_learning import check_rank_by
from tlkit.datasets.domain import DataError, Domain, DomainPair
from tlkit.domain_outputs import domain_outputs, worker_count
from tlkit.label_issues import (
    SuspiciousLabels,
    _labelled,
    _resolve_prune,
    stratified_folds,
)


def _check_counts(folds: int, repeats: int) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}.")


def cross_validated_probabilities(
    domain: Domain | DomainPair,
    *,
    backbone: str | None = None,
    folds: int = 4,
    epochs: int = 5,
    repeats: int = 1,
    seed: int = 0,
    progress: bool = True,
    **fit_options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Out-of-fold class probabilities ``(N, K)`` of the labelled samples of ``domain`` (a
    task: its source), and their positions ``(N,)`` in it.

    Any backing works: in-memory images, feature rows and token ids, and image files or shards,
    which each fold reads as training does (decoded in ``num_workers`` DataLoader workers, the
    held-out fold with the run's evaluation transform). ``backbone`` defaults to one that reads
    the data (``small_cnn``, ``mlp`` or ``text_bag``); one that cannot is refused before any fold
    trains. A file that cannot be read is left out of the result (so ``N`` may be smaller).

    ``fit_options`` go to :func:`tlkit.fit` (default here ``mode="full"``; the fits are silent,
    ``progress`` shows one bar over the folds). Fold ``f`` of repeat ``r`` is trained with seed
    ``seed + r * folds + f``; the split of repeat ``r`` is drawn with seed ``seed + r``.
    """
    _check_counts(folds, repeats)
    domain, idx = _labelled(domain)
    backbone = _backbone_for(domain, backbone)
    labels = domain.labels[idx]
    classes = domain.classes or tuple(str(c) for c in range(domain.num_classes))
    options = {"mode": "full", **fit_options, "progress": False}
    workers = worker_count(options.get("num_workers", "auto")) if not domain.in_memory else 0
    probs = torch.zeros(len(idx), domain.num_classes, dtype=torch.float64)
    seen = torch.zeros(len(idx), dtype=torch.long)
    bar = tqdm(total=folds * repeats, desc="cross-validation folds", disable=not progress)
    try:
        for r in range(repeats):
            fold_of = stratified_folds(labels, folds, seed + r)
            if torch.bincount(fold_of, minlength=folds).min() == 0:
                raise DataError(
                    f"{len(idx)} labelled samples are too few for {folds} folds; use fewer folds."
                )
            for f in range(folds):
                train = replace(
                    domain.subset(idx[fold_of != f], f"{domain.name}-fold{f}"), classes=classes
                )
                rows = (fold_of == f).nonzero().flatten()
                run = fit(train, backbone, epochs=epochs, seed=seed + r * folds + f, **options)
                p = domain_outputs(run, domain, idx[rows], num_workers=workers)
                read = rows[torch.searchsorted(idx[rows], p.indices)]
                probs[read] += p.outputs.softmax(dim=1).double()
                seen[read] += 1
                bar.update()
    finally:
        bar.close()
    kept = seen > 0
    return probs[kept] / seen[kept].view(-1, 1), idx[kept]


def _backbone_for(domain: Domain, backbone: str | None) -> str:
    """The caller's backbone if it reads ``domain`` (refused now, before any fold trains),
    else the default for the data's kind."""
    if backbone is None:
        return default_backbone(domain)
    check_backbone(domain, backbone, "cross-validation")
    return backbone


def cross_validated_suspicious_labels(
    domain: Domain | DomainPair,
    *,
    backbone: str | None = None,
    folds: int = 4,
    epochs: int = 5,
    repeats: int = 1,
    seed: int = 0,
    prune: str | None = None,
    rank_by: str = "normalized_margin",
    progress: bool = True,
    **fit_options: Any,
) -> SuspiciousLabels:
    """Confident learning on out-of-fold probabilities: the stronger detector.

    The probabilities come from :func:`cross_validated_probabilities` (same arguments);
    ``prune`` (default ``"by_class"``; ``"by_pair"`` is the paper's prune-by-noise-rate) and
    ``rank_by`` are confident learning's, see :class:`tlkit.label_issues.SuspiciousLabels`. The
    result's ``noise_matrix`` is the estimated label-noise transition matrix; ``remove(data)``
    and ``relabel(data)`` give the cleaned data::

        issues = cross_validated_suspicious_labels(task, folds=4, epochs=4)
        cleaned = issues.remove(task)            # or issues.relabel(task)
        run = tlkit.fit(cleaned, ...)
    """
    _check_counts(folds, repeats)
    _resolve_prune(prune)  # a typo fails now, not after the training
    check_rank_by(rank_by)
    labelled, idx = _labelled(domain)
    backbone = _backbone_for(labelled, backbone)
    probs, idx = cross_validated_probabilities(
        labelled,
        backbone=backbone,
        folds=folds,
        epochs=epochs,
        repeats=repeats,
        seed=seed,
        progress=progress,
        **fit_options,
    )
    return SuspiciousLabels.from_probabilities(
        probs,
        labelled.labels[idx],
        method="confident_learning",
        prune=prune,
        rank_by=rank_by,
        indices=idx,
        classes=labelled.classes,
    )


__all__ = ["cross_validated_probabilities", "cross_validated_suspicious_labels"]
