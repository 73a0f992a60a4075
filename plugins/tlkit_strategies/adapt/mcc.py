r"""MCC: minimum class confusion on the target predictions.

Jin, Wang, Long & Wang, "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020.

Temperature-scaled target predictions :math:`\hat Y = \mathrm{softmax}(Z / T) \in
\mathbb{R}^{B \times K}`; each sample is weighted by its certainty,

.. math::
    W_{ii} = \frac{B \, (1 + e^{-H(\hat y_i)})}{\sum_{i'} (1 + e^{-H(\hat y_{i'})})}

(detached); the class correlation matrix and its category normalisation are

.. math::
    C = \hat Y^\top W \hat Y \in \mathbb{R}^{K \times K}, \qquad
    \tilde C_{jj'} = \frac{C_{jj'}}{\sum_{j''} C_{j''j'}},

and the loss is the between-class confusion, the off-diagonal mass:

.. math::
    \mathcal{L}_{MCC} = \frac{1}{K} \sum_{j \ne j'} \tilde C_{jj'} .

Shapes: target logits ``(B, K)`` -> scalar in ``[0, (K - 1) / K]``. Logged: ``mcc``.
"""

from __future__ import annotations

import torch

import tlkit
from tlkit import options
from tlkit.strategy_tools import prediction_entropy


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum-class-confusion loss of target ``logits`` ``(B, K)``."""
    batch, classes = logits.shape
    probs = (logits.float() / temperature).softmax(1)
    h = prediction_entropy(probs=probs).detach()
    w = 1.0 + torch.exp(-h)
    w = batch * w / w.sum()
    confusion = (probs * w[:, None]).T @ probs  # (K, K), symmetric
    confusion = confusion / confusion.sum(0, keepdim=True)
    return (confusion.sum() - confusion.trace()) / classes


class MCC:
    """Minimum class confusion (Jin et al. 2020): penalise classes confused on target predictions.

    Args:
        trade_off: weight of the MCC term (> 0).
        temperature: softmax temperature ``T`` (> 0); the paper uses 2.5 to 3.

    MCC sharpens the model's own target predictions, so it needs them to group the target by
    class. Where they do not (digits -> digits-m, whose coloured, textured target a grey source
    never showed), longer training makes the mistakes confident: 43.5% at 296 steps, 34.9% at
    1184. ``temperature=10`` holds there (47.8 -> 48.9%) and gives up most of MCC's gain where
    the default pays (synth-digits -> digits at 1184 steps: 87.7% -> 60.4%; see
    ``benchmarks/results/domain_adaptation.md``). Watch ``validate="info_max"``, or remove the
    shift first (``augment="colour"``: 60.7 -> 91.2%).
    """

    name = "mcc"
    family = "adapt"
    needs_target = True  # trains on the unlabelled target batch
    requires_task = "classification"  # confusion between class predictions

    def __init__(self, trade_off: float = 1.0, temperature: float = 2.5) -> None:
        self.trade_off = options.positive("trade_off", trade_off)
        self.temperature = options.positive("temperature", temperature)

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor] | None:
        return {"mcc": self.trade_off * mcc_loss(step.target_logits, self.temperature)}
