"""The per-domain BatchNorm copy is attached from what it needs (the model, whether passes are
separate, the strategies' declarations, the copy of a previous train()), not from a trainer."""

from __future__ import annotations

import torch
from torch import nn

from tlkit.engine import domain_stats


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())


class KeepsItsOwn:
    keeps_domain_statistics = True


def test_attach_hooks_a_source_copy_only_for_separate_passes():
    net = model()
    stats = domain_stats.attach(net, separate_domains=True, strategies=[object()], previous=None)
    assert stats is not None and stats.model is net and stats.handles
    stats.remove()
    shared = domain_stats.attach(net, separate_domains=False, strategies=[], previous=None)
    assert shared is None


def test_a_strategy_keeping_its_own_statistics_turns_the_copy_off():
    stats = domain_stats.attach(
        model(), separate_domains=True, strategies=[object(), KeepsItsOwn()], previous=None
    )
    assert stats is None


def test_a_second_attach_keeps_the_previous_copy():
    net = model()
    first = domain_stats.attach(net, separate_domains=True, strategies=[], previous=None)
    first.source[0]["running_mean"] += 3.0
    first.remove()
    second = domain_stats.attach(net, separate_domains=True, strategies=[], previous=first)
    assert torch.equal(second.source[0]["running_mean"], first.source[0]["running_mean"])
    assert not torch.equal(second.source[0]["running_mean"], net[1].running_mean)
    second.remove()
