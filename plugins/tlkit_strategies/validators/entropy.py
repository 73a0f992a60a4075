r"""Entropy validator: negative mean prediction entropy on the unlabelled target set.

Morerio, Cavazza & Murino, "Minimal-Entropy Correlation Alignment for Unsupervised Deep Domain
Adaptation", ICLR 2018 (entropy of the target predictions as an unsupervised criterion to pick
hyper-parameters and checkpoints).

.. math::
    \mathrm{score\_entropy} = -\frac{1}{N_t}\sum_{i=1}^{N_t} H(p_i)
      = \frac{1}{N_t}\sum_{i}\sum_{k} p_{ik}\log p_{ik}, \qquad p_i = \mathrm{softmax}(z_i)

Higher (closer to 0) is better: confident target predictions. Its known failure: a model that
collapses the target onto one class with confidence scores best.

Shapes: target logits ``(N_t, K)`` -> float in ``[-log K, 0]``.
"""

from __future__ import annotations

import torch

import tlkit
from tlkit.strategy_tools import prediction_entropy


def entropy_score(logits: torch.Tensor) -> float:
    """Negative mean entropy (nats) of ``softmax(logits)`` over the rows of ``(N, K)``."""
    return float(-prediction_entropy(logits).mean())


class EntropyScore:
    """Validator: -mean entropy of target predictions (Morerio et al. 2018); higher is better."""

    name = "entropy"
    family = "validator"
    scores = ("score_entropy",)  # what it reports: monitor="score_entropy" is checked before training

    @tlkit.hookimpl
    def tlkit_target_scores(self, trainer, logits: torch.Tensor) -> dict[str, float] | None:
        if trainer.task != "classification":
            return None
        return {"score_entropy": entropy_score(logits)}
