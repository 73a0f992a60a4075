"""Building blocks strategies share: the public helpers a plugin (first-party or not) may use.

The engine and the first-party strategies use these same functions, so a third-party strategy
can do what a built-in does without importing :mod:`tlkit.engine` or a private module:

* :func:`prediction_entropy` -- Shannon entropy of class predictions (entropy minimisation,
  validators, CDAN+E and MCC weights, SHOT, uncertainty sampling);
* :func:`batchnorm_layers` -- the BatchNorm layers of a model (AdaBN, DSBN, FixMatch);
* :class:`DomainSwap` -- a BatchNorm layer that runs with other tensors during the forward
  passes over one domain (DSBN's source branch, the engine's per-domain running statistics);
* :class:`EMA` -- an exponential moving average of a model's weights (Mean Teacher's teacher,
  ``fit(ema=...)``).

This module sits below the engine: it imports only :mod:`tlkit.step` and torch.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from tlkit.step import forward_domain

#: The running statistics of a BatchNorm layer, by attribute name.
BATCHNORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def prediction_entropy(
    logits: torch.Tensor | None = None,
    *,
    probs: torch.Tensor | None = None,
    log_probs: torch.Tensor | None = None,
    eps: float | None = None,
) -> torch.Tensor:
    """Shannon entropy (nats) of each row's class distribution: ``(..., K) -> (...)``.

    Give ``logits`` (float32; the distribution is their softmax, computed stably through
    ``log_softmax``), ``log_probs`` when the caller has ``log_softmax(logits)`` already, or
    ``probs`` (probabilities; ``log`` is taken of ``probs`` clamped at 1e-12, or of ``probs +
    eps`` when ``eps`` is given, as SHOT's authors do for the mean prediction). With ``logits``
    (or ``log_probs``) and ``probs`` both, ``probs`` is taken as their softmax, already
    computed: ``-sum(probs * log_softmax(logits))``. Differentiable; detach it for weights.
    """
    if logits is None and probs is None and log_probs is None:
        raise ValueError("prediction_entropy() needs logits=, log_probs= or probs=")
    if logits is not None:
        log_probs = logits.float().log_softmax(-1)
    if log_probs is not None:
        p = log_probs.exp() if probs is None else probs
        return -(p * log_probs).sum(-1)
    floor = probs.clamp_min(1e-12) if eps is None else probs + eps
    return -(probs * floor.log()).sum(-1)


def batchnorm_layers(
    model: nn.Module, *, tracking_only: bool = False
) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model``, in module order (``tracking_only``: those that keep
    running statistics)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and (m.track_running_stats or not tracking_only)
    ]


@contextlib.contextmanager
def tensors_in(layer: nn.Module, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, ``layer``'s attributes named in ``tensors`` (parameters or buffers) are
    those tensors; the layer's own come back after. Updates made in place meanwhile (BatchNorm's
    running statistics) land in ``tensors``."""
    own = _put(layer, tensors)
    try:
        yield
    finally:
        _put(layer, own)


def _put(layer: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Set ``layer``'s tensors by name; return the ones they replaced."""
    own = {name: getattr(layer, name) for name in tensors}
    for name, value in tensors.items():
        setattr(layer, name, value)
    return own


class DomainSwap:
    """Forward pre-hook and hook on one layer: during a forward pass over ``domain`` (see
    :func:`tlkit.forward_domain`) the layer runs with the tensors ``tensors()`` returns, by
    attribute name, in place of its own, which come back right after the pass.

    BatchNorm's own code then normalises with those tensors and updates their running statistics
    in place, so a per-domain copy trains as the layer would. The swap exchanges tensor objects
    (no copies) and only inside the layer's forward call, so DDP, EMA and checkpoints always see
    the layer's own. ``tensors`` is called at each pass, so it may read a module whose buffers
    the engine moves to the device later. ``skip_frozen``: leave a layer in evaluation mode while
    gradients are on (``freeze_bn``) alone, since its statistics are then the same for both
    domains.
    """

    def __init__(
        self,
        layer: nn.Module,
        tensors: Callable[[], dict[str, torch.Tensor]],
        *,
        domain: str = "source",
        skip_frozen: bool = False,
    ) -> None:
        self.layer, self.tensors, self.domain = layer, tensors, domain
        self.skip_frozen = skip_frozen
        self._own: dict[str, torch.Tensor] | None = None
        self.handles = [
            layer.register_forward_pre_hook(self._before),
            layer.register_forward_hook(self._after),
        ]

    def _before(self, module: nn.Module, args: Any) -> None:
        if self._own is not None:  # a pass that raised never reached the forward hook
            _put(module, self._own)
            self._own = None
        if forward_domain() != self.domain:
            return
        if self.skip_frozen and not module.training and torch.is_grad_enabled():
            return
        self._own = _put(module, self.tensors())

    def _after(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._own is not None:
            _put(module, self._own)
            self._own = None

    def restore(self) -> None:
        """Put the layer's own tensors back (after a pass that raised inside the layer)."""
        if self._own is not None:
            _put(self.layer, self._own)
            self._own = None

    def remove(self) -> None:
        """Restore the layer and detach the hooks."""
        self.restore()
        for handle in self.handles:
            handle.remove()
        self.handles = []


class EMA:
    """An averaged copy of ``model`` (Polyak averaging; Mean Teacher's teacher): after each
    optimiser step, ``update(model)`` sets ``theta_ema <- d * theta_ema + (1 - d) * theta``.
    Buffers (BatchNorm statistics) are copied, not averaged. ``module`` is the copy, in eval
    mode, without gradients."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


__all__ = [
    "BATCHNORM_STATISTICS",
    "DomainSwap",
    "EMA",
    "batchnorm_layers",
    "prediction_entropy",
    "tensors_in",
]
