"""Random sampling: the baseline every query strategy must beat.

Scores are i.i.d. uniform, so the top ``n`` are a uniform random subset of the pool. A seeded
generator makes a sequence of queries reproducible; the generator lives in the instance, so each
query in a session draws fresh samples.
"""

from __future__ import annotations

import torch

import tlkit
from tlkit import options


class RandomQuery:
    """Random sampling (the passive-learning baseline)."""

    name = "random"
    family = "query"

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(options.integer("seed", seed, minimum=0))

    @tlkit.hookimpl
    def tlkit_query_scores(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.rand(len(probs), generator=self.generator)
