r"""Mean squared error: the default supervised loss for regression.

.. math::
    \ell(x, y) = \frac{1}{D} \lVert f(x) - y \rVert_2^2

Shapes: predictions ``(B, D)``, targets ``(B,)`` or ``(B, D)`` -> per-sample losses ``(B,)``.
"""

from __future__ import annotations

import torch

import tlkit


class MeanSquaredError:
    """Squared error averaged over output dimensions; the regression baseline."""

    name = "mse"
    family = "loss"
    requires_task = "regression"

    @tlkit.hookimpl(trylast=True)
    def tlkit_supervised_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        preds = logits.float()
        targets = targets.float().view(preds.shape[0], -1)
        return (preds - targets).pow(2).mean(dim=1)
