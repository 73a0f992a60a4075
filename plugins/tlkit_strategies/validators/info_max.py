r"""Information-maximisation validator: mutual information between target inputs and predictions.

The criterion of Gomes, Krause & Perona, "Discriminative Clustering by Regularized Information
Maximization", NIPS 2010, used to select adapted models in Musgrave, Belongie & Lim, "Benchmarking
Validation Methods for Unsupervised Domain Adaptation", arXiv 2022 (and as a loss by SHOT,
Liang et al., ICML 2020):

.. math::
    \mathrm{score\_info\_max} = H(\bar p) - \frac{1}{N_t}\sum_{i=1}^{N_t} H(p_i), \qquad
    \bar p = \frac{1}{N_t}\sum_i p_i, \quad H(p) = -\sum_k p_k \log p_k

Higher is better: each prediction confident (small :math:`H(p_i)`) *and* the classes used evenly
(large :math:`H(\bar p)`), which, unlike plain entropy, penalises collapsing onto one class.

Shapes: target logits ``(N_t, K)`` -> float in ``[-log K, log K]``.
"""

from __future__ import annotations

import torch

import tlkit
from tlkit.strategy_tools import prediction_entropy


def info_max_score(logits: torch.Tensor) -> float:
    """``H(mean p) - mean H(p)`` (nats) for ``p = softmax(logits)``, ``logits`` ``(N, K)``."""
    p = logits.float().softmax(1)
    return float(prediction_entropy(probs=p.mean(0)) - prediction_entropy(probs=p).mean())


class InfoMaxScore:
    """Validator: H(mean p) - mean H(p) on target predictions (information maximisation)."""

    name = "info_max"
    family = "validator"
    scores = ("score_info_max",)  # what it reports: monitor="score_info_max" is checked before training

    @tlkit.hookimpl
    def tlkit_target_scores(self, trainer, logits: torch.Tensor) -> dict[str, float] | None:
        if trainer.task != "classification":
            return None
        return {"score_info_max": info_max_score(logits)}
