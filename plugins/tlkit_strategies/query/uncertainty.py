r"""Uncertainty sampling: ask about the samples the current model is least sure of.

With class probabilities :math:`p` sorted so that :math:`p_{(1)} \ge p_{(2)} \ge \dots`:

* margin: :math:`s = -(p_{(1)} - p_{(2)})` -- the two best classes are nearly tied
  (Scheffer et al., 2001);
* entropy: :math:`s = -\sum_k p_k \log p_k` (Settles, 2009);
* least confidence: :math:`s = 1 - p_{(1)}`.

Shapes: probs ``(N, K)`` -> scores ``(N,)``; higher means ask first. ``features`` is unused.
"""

from __future__ import annotations

import torch

import tlkit
from tlkit.strategy_tools import prediction_entropy


class MarginQuery:
    """Margin sampling: the smallest gap between the two most likely classes first."""

    name = "margin"
    family = "query"

    @tlkit.hookimpl
    def tlkit_query_scores(self, probs: torch.Tensor) -> torch.Tensor:
        if probs.shape[1] < 2:
            return torch.zeros(len(probs))
        top2 = probs.float().topk(2, dim=1).values
        return -(top2[:, 0] - top2[:, 1])


class EntropyQuery:
    """Entropy sampling: the flattest predicted distribution first."""

    name = "max_entropy"
    family = "query"

    @tlkit.hookimpl
    def tlkit_query_scores(self, probs: torch.Tensor) -> torch.Tensor:
        return prediction_entropy(probs=probs.float())


class LeastConfidenceQuery:
    """Least-confidence sampling: the lowest top-class probability first."""

    name = "least_confidence"
    family = "query"

    @tlkit.hookimpl
    def tlkit_query_scores(self, probs: torch.Tensor) -> torch.Tensor:
        return 1.0 - probs.float().max(dim=1).values
