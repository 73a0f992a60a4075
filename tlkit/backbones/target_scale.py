"""Regression targets standardised for training, in the user's units everywhere else.

A regression head's last layer starts near zero, and a squared error on targets of size ~100
gives gradients ~10^4 times those of unit-sized targets: raw targets train slowly or not at all
with the default learning rates. So the head ends in a :class:`TargetScale` -- ``y = z * std +
mean`` with the training split's mean and standard deviation -- and the supervised loss compares
standardised values (:func:`standardised`). The network learns to predict ``z ~ N(0, 1)``, while
its outputs (predictions, metrics, exported programs, saved runs) are in the target's own units.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TargetScale(nn.Module):
    """``z -> z * std + mean`` per output; ``fitted`` says whether the statistics are set."""

    def __init__(self, out_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(out_features))
        self.register_buffer("std", torch.ones(out_features))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z.dtype) + self.mean.to(z.dtype)

    def standardise(self, y: torch.Tensor) -> torch.Tensor:
        """Values in the target's units -> standardised, in ``y``'s shape ``(B,)`` / ``(B, D)``."""
        flat = y.float().reshape(len(y), -1)
        return ((flat - self.mean) / self.std).reshape(y.shape)

    @torch.no_grad()
    def fit_(self, targets: torch.Tensor) -> TargetScale:
        """Set mean and std from training targets ``(N,)`` or ``(N, D)`` (rows with NaN are
        skipped; a constant or single target keeps std 1)."""
        y = targets.detach().float().reshape(len(targets), -1).cpu()
        y = y[torch.isfinite(y).all(dim=1)]
        if len(y) == 0 or y.shape[1] != len(self.mean):
            return self
        std = y.std(dim=0) if len(y) > 1 else torch.ones(y.shape[1])
        std = torch.where(torch.isfinite(std) & (std > 1e-12), std, torch.ones_like(std))
        self.mean.copy_(y.mean(dim=0))
        self.std.copy_(std)
        self.fitted.fill_(True)
        return self

    def extra_repr(self) -> str:
        if not bool(self.fitted):
            return "not fitted"
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def scale_of(model: Any) -> TargetScale | None:
    """The target scale of a model's head, if it has one."""
    head = getattr(model, "head", None)
    scale = getattr(head, "scale", None)
    return scale if isinstance(scale, TargetScale) else None


def fit_target_scale(model: Any, targets: torch.Tensor) -> None:
    """Fit a fresh head's scale to the training targets; a head fitted before (a trained run
    fine-tuned further) keeps its own, so its outputs mean what they meant."""
    scale = scale_of(model)
    if scale is not None and not bool(scale.fitted):
        scale.fit_(targets)


def standardised(
    model: Any, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(outputs, targets)`` in standardised units for a loss (unchanged without a scale)."""
    scale = scale_of(model)
    if scale is None:
        return outputs, targets
    outputs = scale.standardise(outputs)
    if targets.is_floating_point() and targets.ndim >= 1 and len(targets) == len(outputs):
        targets = scale.standardise(targets)
    return outputs, targets
