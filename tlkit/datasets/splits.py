"""Few-label splits: k labelled samples per class, the rest as the unlabelled pool.

This turns any labelled task into the semi-supervised setting (FixMatch, Mean Teacher, pseudo-
labelling): the strategies see ``k`` labels per class plus many unlabelled images of the same
domain, while the clean labels stay behind for measuring pseudo-label accuracy.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .domain import DataError
from .pair import DomainPair


def few_labels(pair: DomainPair, k: int, seed: int = 0) -> DomainPair:
    """Keep ``k`` labelled source samples per class (chosen at random, deterministic for ``seed``).

    * Pair without a target (one domain): the other source samples become ``target`` with
      their labels hidden -- the unlabelled pool -- and ``target_test`` is the ``source_test``.
    * Pair with a target (domain adaptation): the other source samples are dropped, since the
      task already has its unlabelled data; target and test sets are unchanged.

    Classes are counted by training label (what a user would see after noise). Raises
    :class:`DataError` if some class has fewer than ``k`` labelled samples.
    """
    if not isinstance(pair, DomainPair):
        raise DataError(f"few_labels takes a DomainPair, got {type(pair).__name__}.")
    src = pair.source
    if src.task != "classification":
        raise DataError("few_labels applies to classification tasks only.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DataError(f"k must be a positive integer (labels per class), got {k!r}.")
    g = torch.Generator().manual_seed(seed)
    keep = []
    short = []
    for c in range(src.num_classes):
        idx = (src.labels == c).nonzero().flatten()
        if len(idx) < k:
            name = src.classes[c] if c < len(src.classes) else str(c)
            short.append(f"'{name}' has {len(idx)}")
            continue
        keep.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    if short:
        raise DataError(
            f"few_labels(k={k}): source '{src.name}' has fewer than {k} labelled samples in "
            f"{len(short)} class(es): {', '.join(short[:5])}{'...' if len(short) > 5 else ''}. "
            "Use a smaller k."
        )
    labelled = torch.cat(keep).sort().values
    source = src.subset(labelled)
    if pair.target is not None:
        return replace(pair, source=source)
    rest = torch.ones(len(src), dtype=torch.bool)
    rest[labelled] = False  # everything else, including samples that were already unlabelled
    pool_idx = rest.nonzero().flatten()
    if len(pool_idx) == 0:
        raise DataError(
            f"few_labels(k={k}): every source sample is kept as labelled, so the unlabelled pool "
            "would be empty; use a smaller k."
        )
    pool = src.subset(pool_idx).unlabelled(f"{src.name}-unlabelled")
    return replace(pair, source=source, target=pool, target_test=pair.source_test)
