"""BatchNorm running statistics kept per domain, for ``domain_bn="separate"``.

With a forward pass per domain, BatchNorm normalises each domain's training batch by that
batch's own statistics; but its *running* averages, which evaluation uses, would average the
two domains' passes together, so the evaluated network normalises neither domain as it was
trained. Here each BatchNorm layer keeps two sets: its own buffers follow the target passes,
and a copy follows the source passes. A forward pass under ``domain_context("source")`` (the
source half of a training step, ``Step.forward(x, domain="source")``, the evaluation of
``source_test``) swaps the source copy in and back out around the layer.

What the run's model keeps is the **target's** statistics: after adaptation you predict on the
target domain, and a checkpoint's ``source_bn_stats`` holds the source copy (so resuming and the
engine's source evaluation see it; with ``ema`` the source copy is applied to the EMA model for
the source evaluation). After training, :class:`tlkit.Run` has the target's statistics only:
``run.evaluate(source_test)`` normalises source images as target ones. A strategy that keeps
per-domain statistics itself (``keeps_domain_statistics = True``: DSBN) turns this off.
On synth-digits->digits (benchmarks/results/domain_adaptation.md, seeds 0-2, 1x / 4x) separate
passes with these statistics give DANN 61.9 / 83.3% target accuracy against 59.1 / 58.0% with
both domains normalised together, CDAN 73.4 / 83.5% against 61.8 / 68.7%.

The swap is :class:`tlkit.strategy_tools.DomainSwap` (DSBN's source branch uses the same): it
exchanges the buffer *objects* (no copies), only inside a layer's forward call, so DDP, EMA and checkpoints always see the target's. A layer in
evaluation mode while gradients are on (``freeze_bn``) is left alone: its statistics are frozen,
the same for both domains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from tlkit.errors import CheckpointError
from tlkit.strategy_tools import BATCHNORM_STATISTICS, DomainSwap, batchnorm_layers, tensors_in


class DomainStatistics:
    """The source copy of every tracking BatchNorm layer's running statistics in ``model``,
    swapped in for forward passes over the source domain (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = batchnorm_layers(model, tracking_only=True)
        self.source = [
            {
                k: getattr(m, k).detach().clone()
                for k in BATCHNORM_STATISTICS
                if getattr(m, k) is not None
            }
            for m in self.layers
        ]  # on the model's device: the trainer builds this after moving the model
        self.swaps = [
            DomainSwap(layer, self._held(i), skip_frozen=True) for i, layer in enumerate(self.layers)
        ]

    def _held(self, i: int):
        return lambda: self.source[i]

    @property
    def handles(self) -> list:
        """The hooks on the model (empty once :meth:`remove` ran)."""
        return [h for swap in self.swaps for h in swap.handles]

    def state_dict(self) -> list[dict[str, torch.Tensor]]:
        return [{k: v.detach().cpu().clone() for k, v in s.items()} for s in self.source]

    def load_state_dict(self, state: list[dict[str, torch.Tensor]]) -> None:
        if len(state) != len(self.source):
            raise CheckpointError(
                f"the checkpoint's source BatchNorm statistics cover {len(state)} layers, the "
                f"model has {len(self.source)}: it was saved from another backbone. Resume "
                "with the backbone that wrote it."
            )
        for saved, loaded in zip(self.source, state):
            for name, value in loaded.items():
                saved[name] = value.to(saved[name].device).clone()

    def evaluating(self, model: nn.Module, domain: str) -> contextlib.AbstractContextManager:
        """Around the evaluation of ``model`` on ``domain``: the hooked model needs nothing; a
        copy without the hooks (the EMA model) gets the source copy for the source."""
        if domain != "source" or model is self.model:
            return contextlib.nullcontext()
        return self.applied_to(model)

    @contextlib.contextmanager
    def applied_to(self, copy: nn.Module) -> Iterator[None]:
        """Within the block, ``copy`` (a module shaped like the model, e.g. the EMA model)
        holds the source statistics; its own come back after."""
        layers = batchnorm_layers(copy, tracking_only=True)
        if len(layers) != len(self.layers):
            raise ValueError("applied_to needs a copy of the model the statistics belong to")
        with contextlib.ExitStack() as stack:
            for layer, held in zip(layers, self.source):
                stack.enter_context(tensors_in(layer, held))
            yield

    def remove(self) -> None:
        """Detach the hooks (the model then keeps the target's statistics alone)."""
        for swap in self.swaps:  # a pass that raised: its layer gets the target's back
            swap.remove()


def attach(
    model: nn.Module,
    *,
    separate_domains: bool,
    strategies: Iterable[Any],
    previous: DomainStatistics | None,
) -> DomainStatistics | None:
    """The run's source copy, hooked into ``model``: with separate passes
    (``separate_domains``), unless one of ``strategies`` keeps per-domain statistics itself
    (DSBN); a second ``train()`` passes the copy the first had as ``previous`` and keeps it.
    Called after the strategies' setup (whose hooks may touch BatchNorm) and the EMA copy (which
    must not carry the hooks)."""
    if not separate_domains or any(
        getattr(p, "keeps_domain_statistics", False) for p in strategies
    ):
        return None
    stats = DomainStatistics(model)
    if previous is not None:
        stats.load_state_dict(previous.state_dict())
    return stats
