"""Label-noise injection that keeps the clean labels for evaluation.

Noise is described by a row-stochastic transition matrix ``T`` of shape ``(K, K)``:
``T[i, j] = P(noisy label = j | true label = i)``. Each labelled sample's new training label is
drawn from the row of its *clean* label, so the realised noise rate is close to the requested one
and applying noise twice replaces the first draw instead of compounding it.

* ``"symmetric"`` -- keep the label with probability ``1 - rate``, otherwise pick one of the
  other ``K - 1`` classes uniformly (Van Rooyen et al., 2015; the usual CIFAR noisy-label setup).
* ``"pairflip"`` -- class ``c`` becomes ``(c + 1) % K`` with probability ``rate`` (Han et al.,
  "Co-teaching", NeurIPS 2018): the harder, class-dependent kind of noise.
* an explicit ``(K, K)`` matrix -- any class-conditional noise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, overload

import numpy as np
import torch

from .domain import DataError, Domain
from .pair import DomainPair

KINDS = ("symmetric", "pairflip")


def transition_matrix(kind: str, rate: float, num_classes: int) -> torch.Tensor:
    """The ``(K, K)`` float64 noise transition matrix for a named kind of noise."""
    if not 0 <= rate <= 1:
        raise DataError(f"noise rate must be in [0, 1], got {rate}.")
    k = int(num_classes)
    if k < 2:
        raise DataError(f"label noise needs at least 2 classes, got {num_classes}.")
    if kind == "symmetric":
        t = torch.full((k, k), rate / (k - 1), dtype=torch.float64)
    elif kind == "pairflip":
        t = torch.zeros((k, k), dtype=torch.float64)
        idx = torch.arange(k)
        t[idx, (idx + 1) % k] = rate
    else:
        raise DataError(
            f"unknown noise kind {kind!r}; use one of {list(KINDS)} or pass a (K, K) "
            "row-stochastic transition matrix."
        )
    t.fill_diagonal_(1 - rate)
    return t


def _check_matrix(matrix: Any, k: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
    if t.shape != (k, k):
        raise DataError(
            f"noise transition matrix must have shape ({k}, {k}) for {k} classes, got "
            f"{tuple(t.shape)}."
        )
    if not torch.isfinite(t).all() or (t < 0).any():
        raise DataError("noise transition matrix must be finite and non-negative.")
    sums = t.sum(1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        bad = (sums - 1).abs().argmax().item()
        raise DataError(
            f"noise transition matrix rows must sum to 1 (row i = P(noisy label | true class i)); "
            f"row {bad} sums to {sums[bad].item():.6g}."
        )
    return t


def _noisy_domain(domain: Domain, kind: Any, rate: float, seed: int) -> Domain:
    if domain.task != "classification":
        raise DataError(f"Domain '{domain.name}': label noise applies to classification only.")
    k = domain.num_classes
    t = transition_matrix(kind, rate, k) if isinstance(kind, str) else _check_matrix(kind, k)
    mask = domain.labelled_mask
    clean = domain.clean_labels[mask]
    g = torch.Generator().manual_seed(seed)
    labels = domain.labels.clone()
    if len(clean):
        labels[mask] = torch.multinomial(t[clean], 1, generator=g).flatten()
    return domain.with_labels(labels)


@overload
def add_label_noise(
    data: Domain, kind_or_matrix: Any = ..., rate: float = ..., seed: int = ...
) -> Domain: ...


@overload
def add_label_noise(
    data: DomainPair, kind_or_matrix: Any = ..., rate: float = ..., seed: int = ...
) -> DomainPair: ...


def add_label_noise(
    data: Domain | DomainPair,
    kind_or_matrix: str | Any = "symmetric",
    rate: float = 0.4,
    seed: int = 0,
) -> Domain | DomainPair:
    """Corrupt the training labels of labelled samples; ``clean_labels`` keep the truth.

    ``kind_or_matrix`` is ``"symmetric"``, ``"pairflip"`` or a ``(K, K)`` row-stochastic matrix
    (``rate`` is ignored then). A :class:`DomainPair` gets noise on its ``source`` only: test
    sets stay clean so accuracy measures what was learnt, and the target has no labels.
    Unlabelled samples (``-1``) stay unlabelled. Deterministic for ``seed``.
    """
    if isinstance(data, DomainPair):
        return replace(data, source=_noisy_domain(data.source, kind_or_matrix, rate, seed))
    if isinstance(data, Domain):
        return _noisy_domain(data, kind_or_matrix, rate, seed)
    raise DataError(f"add_label_noise takes a Domain or a DomainPair, got {type(data).__name__}.")
