r"""Deep CORAL: align the second-order statistics (covariances) of source and target features.

Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016
Workshops (TASK-CV).

With :math:`X_s \in \mathbb{R}^{n_s \times d}`, :math:`X_t \in \mathbb{R}^{n_t \times d}` the
feature batches and :math:`\mathbf{1}` a column of ones, the feature covariances are

.. math::
    C_s = \frac{1}{n_s - 1}\Big(X_s^\top X_s - \frac{1}{n_s}(\mathbf{1}^\top X_s)^\top
      (\mathbf{1}^\top X_s)\Big)

(likewise :math:`C_t`) and the CORAL loss is

.. math::
    \ell_{CORAL} = \frac{1}{4 d^2} \lVert C_s - C_t \rVert_F^2 .

Shapes: source ``(n_s, d)``, target ``(n_t, d)`` -> scalar (both batches need two or more rows).
Logged: ``coral`` (the weighted loss). The :math:`1/(4d^2)` factor makes the raw term tiny; the
paper picks the weight so that the classification and CORAL losses are about equal at the end of
training. The default ``trade_off=100`` does that for small_cnn's 128 features on the digit
benchmark (weighted CORAL ~0.10 vs supervised ~0.13 in the last epoch); for wider features
scale it up with :math:`d^2`.
"""

from __future__ import annotations

import torch

import tlkit
from tlkit import options


def covariance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased covariance ``(d, d)`` of the rows of ``x`` ``(n, d)``, as in the paper."""
    n = x.shape[0]
    ones = torch.ones(1, n, dtype=x.dtype, device=x.device)
    s = ones @ x
    return (x.T @ x - s.T @ s / n) / (n - 1)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:math:`\\lVert C_s - C_t \\rVert_F^2 / (4 d^2)` for ``source`` ``(n_s, d)`` and
    ``target`` ``(n_t, d)``; 0 (with gradient) when a batch has one sample and no covariance."""
    source, target = source.float(), target.float()
    if len(source) < 2 or len(target) < 2:
        return source.sum() * 0.0
    d = source.shape[1]
    diff = covariance(source) - covariance(target)
    return diff.pow(2).sum() / (4 * d * d)


class DeepCORAL:
    """Deep CORAL (Sun & Saenko 2016): match source and target feature covariances.

    Args:
        trade_off: weight of the CORAL term (> 0).
    """

    name = "coral"
    family = "adapt"
    needs_target = True  # trains on the unlabelled target batch

    def __init__(self, trade_off: float = 100.0) -> None:
        self.trade_off = options.positive("trade_off", trade_off)

    @tlkit.hookimpl
    def tlkit_extra_losses(self, step) -> dict[str, torch.Tensor] | None:
        return {"coral": self.trade_off * coral_loss(step.features, step.target_features)}
