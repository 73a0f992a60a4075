r"""SND validator: soft neighbourhood density of the target predictions.

Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, "Tune it the Right Way: Unsupervised Validation
of Domain Adaptation via Soft Neighborhood Density", ICCV 2021.

A good adapted model maps target samples into dense clusters. With :math:`f_i` the L2-normalised
softmax output of target sample :math:`i`, the similarity to every *other* sample is turned into a
neighbour distribution at temperature :math:`\tau` (0.05 in the paper), whose entropy is high when
a sample has many close neighbours:

.. math::
    P_{ij} = \frac{\exp(f_i^\top f_j / \tau)}{\sum_{j' \ne i} \exp(f_i^\top f_{j'} / \tau)}
    \ (j \ne i), \qquad
    \mathrm{score\_snd} = -\frac{1}{N}\sum_{i=1}^{N}\sum_{j \ne i} P_{ij}\log P_{ij}

Higher is better. The :math:`N \times N` similarity matrix is computed on at most ``max_samples``
target samples (a fixed random subset, the same every epoch).

Known failure: collapse scores highest. When every prediction points to the same class, all
similarities are 1, every neighbour distribution is uniform and the score reaches its maximum
:math:`\log(N - 1)`. The paper ranks *trained* candidates (hyper-parameter settings); used across
the epochs of one run (``monitor="score_snd"``) it picked the first epoch in every run of
``benchmarks/domain_adaptation.py`` and was anti-correlated with target accuracy.

Shapes: target logits ``(N_t, K)`` -> float in ``[0, log(N - 1)]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import tlkit
from tlkit import options
from tlkit.strategy_tools import prediction_entropy


def snd_score(probs: torch.Tensor, temperature: float = 0.05) -> float:
    """Soft neighbourhood density of the rows of ``probs`` ``(N, K)`` (N >= 3), as defined above."""
    f = F.normalize(probs.float(), dim=1)
    n = len(f)
    sim = f @ f.T / temperature
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=f.device)
    sim = sim[off_diagonal].view(n, n - 1)
    return float(prediction_entropy(sim).mean())


class SNDScore:
    """Validator: soft neighbourhood density of target predictions (Saito et al. 2021)."""

    name = "snd"
    family = "validator"
    scores = ("score_snd",)  # what it reports: monitor="score_snd" is checked before training

    def __init__(self, temperature: float = 0.05, max_samples: int = 4096) -> None:
        self.temperature = options.positive("temperature", temperature)
        self.max_samples = options.integer("max_samples", max_samples, minimum=3)

    @tlkit.hookimpl
    def tlkit_target_scores(self, trainer, logits: torch.Tensor) -> dict[str, float] | None:
        if trainer.task != "classification" or len(logits) < 3:
            return None
        if len(logits) > self.max_samples:
            g = torch.Generator().manual_seed(0)
            logits = logits[torch.randperm(len(logits), generator=g)[: self.max_samples]]
        return {"score_snd": snd_score(logits.float().softmax(1), self.temperature)}
