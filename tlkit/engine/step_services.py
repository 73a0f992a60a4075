"""The engine's side of a training :class:`~tlkit.step.Step`: what a step offers strategies.

:class:`NetworkServices` belongs to the run: the network being trained (as DDP / ``torch.compile``
wrap it), its precision and memory format, the target's true labels (which strategies never
see) and the target feed that makes augmented views. Each step gets a :class:`BatchServices`
bound to its batch, passed to the :class:`Step` when it is made.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tlkit.datasets.domain import UNLABELLED, Domain
from tlkit.engine.feeding import Batch
from tlkit.engine.network import Network
from tlkit.step import Step, domain_context


class NetworkServices:
    """The network of a run's training steps, and what a step offers strategies.

    It owns which parts train in the current phase (a frozen backbone, cached features) and the
    network one forward call runs (wrapped by DDP / ``torch.compile`` when asked).

    Args:
        net: the :class:`~tlkit.engine.network.Network` over the model being trained.
        autocast: the run's autocast context factory.
        channels_last: whether 4-d inputs are laid out channels-last.
        truth: the target's true class ids on the device, or ``None`` when unknown (or not a
            classification task): for ``pseudo_label_accuracy`` only.
        target_feed: the feed of the target domain (``Feeder.target``), or ``None``.
        generator: the run's step generator (augmented views draw from it).
    """

    def __init__(
        self,
        net: Network,
        *,
        autocast: Callable[[], contextlib.AbstractContextManager],
        channels_last: bool,
        truth: torch.Tensor | None,
        target_feed: Any,
        generator: torch.Generator,
    ) -> None:
        self.net, self.model = net, net.model
        self.autocast = autocast
        self.channels_last = channels_last
        self.truth = truth
        self.target_feed = target_feed
        self.generator = generator
        #: The network one forward call runs: ``net``, wrapped for the phase.
        self.network: Callable[..., tuple[torch.Tensor, torch.Tensor]] = net

    @property
    def cached(self) -> bool:
        """Whether the steps train on cached frozen-backbone features (no images to view)."""
        return self.net.cached

    def enter_phase(self, trainable: bool, cached: bool, dist: Any, *, compile: bool) -> None:
        """Freeze (or unfreeze) the backbone, train on cached features or on inputs, and wrap
        the network for the phase (DDP across processes, ``torch.compile`` when asked)."""
        for p in self.model.backbone.parameters():
            p.requires_grad_(trainable)
        self.net.backbone_trainable, self.net.cached = trainable, cached
        network: nn.Module = self.net
        if dist.enabled:
            device = next(self.model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.network = torch.compile(network) if compile else network

    def for_batch(self, batch: Batch) -> BatchServices:
        return BatchServices(self, batch)

    def inputs(self, step: Step, batch: Batch) -> tuple[torch.Tensor, int]:
        """The source (and target) inputs of a step's forward call, and the source batch size:
        cached features, or the step's images prepared for the model."""
        if self.cached:
            parts = [batch.cached] + (
                [batch.target_cached] if batch.target_cached is not None else []
            )
        else:
            parts = [self.model.prepare(step.x)]
            if step.x_target is not None:
                parts.append(self.model.prepare(step.x_target))
        inputs = torch.cat(parts) if len(parts) > 1 else parts[0]
        if not self.cached and self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, len(step.y)

    def forward(
        self, images: torch.Tensor, domain: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Extra views through the same network and precision, with gradients."""
        inputs = self.model.prepare(images)
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.autocast(), domain_context(domain):
            return self.network(inputs)

    def judge_targets(self, step: Step, predicted: torch.Tensor, mask: torch.Tensor) -> None:
        """Log the share of (masked-in) target predictions that are right, where the engine
        knows the truth; strategies never see it."""
        if self.truth is None or step.target_indices is None:
            return  # the truth of this target is unknown: nothing to measure
        truth = self.truth[step.target_indices.to(self.truth.device)]
        known = mask.bool() & (truth != UNLABELLED)
        n = known.sum()
        right = (predicted.to(truth.device) == truth) & known
        step.log("pseudo_label_accuracy", right.sum() / n.clamp(min=1), weight=n)


@dataclasses.dataclass
class BatchServices:
    """The :class:`~tlkit.step.StepServices` of one step: the run's, bound to its batch."""

    run: NetworkServices
    batch: Batch

    def forward(
        self, images: torch.Tensor, domain: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run.forward(images, domain)

    def target_view(self, kind: str) -> torch.Tensor:
        if self.run.cached or self.run.target_feed is None or self.batch.target_indices is None:
            raise ValueError("target_view() needs a target batch in this step (needs_target).")
        return self.run.target_feed.view(kind, self.batch, self.run.generator)

    def judge_targets(self, step: Step, predicted: torch.Tensor, mask: torch.Tensor) -> None:
        self.run.judge_targets(step, predicted, mask)


def without_labels(domain: Domain) -> Domain:
    """``domain`` with its true labels hidden: what strategies may see of the target.
    Classification labels become ``UNLABELLED``; regression has no such value, so NaN, set
    past the Domain's own checks."""
    if domain.task == "classification":
        hidden = torch.full_like(domain.labels, UNLABELLED)
        return dataclasses.replace(domain, labels=hidden, clean_labels=hidden)
    hidden = torch.full_like(domain.labels, float("nan"))
    out = copy.copy(domain)
    object.__setattr__(out, "labels", hidden)
    object.__setattr__(out, "clean_labels", hidden)
    return out
